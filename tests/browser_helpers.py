"""Driving the catalogue in a real Chromium: shared by the browser tests, the catalogue
benchmark and the README's screenshots (tools/catalogue_screenshots.py)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

# as the machine's own probe starts it: root needs --no-sandbox, and a closed network needs
# Chromium's background connections off (each would be refused, many at a time)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """LORADB_CHROMIUM, else the system's Chromium (Debian's `chromium` package)."""
    for candidate in (os.environ.get("LORADB_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def launch(playwright):
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found: `apt-get install chromium` (make test does this) or set LORADB_CHROMIUM")
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


def wait_painted(page, timeout_ms: int = 120_000) -> None:
    """Until the catalogue's view is in the DOM and painted (app.js marks it)."""
    page.wait_for_function("() => performance.getEntriesByName('loradb-view-painted').length > 0", timeout=timeout_ms)


def drop_representation(page, npy: Path) -> None:
    """Drop a .npy and its .npy.json sidecar onto the map's drop zone, as a file manager would."""
    sidecar = npy.with_name(npy.name + ".json")
    page.evaluate("""([npy, sidecar, name]) => {
        const bytes = Uint8Array.from(atob(npy), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name));
        dt.items.add(new File([sidecar], name + '.json'));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", [base64.b64encode(npy.read_bytes()).decode(), sidecar.read_text(), npy.name])
