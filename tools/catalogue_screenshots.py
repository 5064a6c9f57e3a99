"""The README's screenshots of the catalogue: the records table, one record, and the map with a
dropped representation and its retrieved weights.

Serves a copy of DB with `loradb serve --public-read`, computes the target's representation
with `loradb represent` on the packaged MiniLM, and drives the system's Chromium.

Run: python tools/catalogue_screenshots.py DB --data TARGET.jsonl --record NAME [--out docs/img]
(the README's were made on the demo's database of the banking77 fold,
loradb-demo/work/fold-banking77/db, with banking77's test texts as the target).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_helpers import drop_representation, launch, wait_painted  # noqa: E402
from server_helpers import running_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the target's unlabeled texts")
    parser.add_argument("--record", required=True, help="the record whose page is shown")
    parser.add_argument("--colour", default="family", help="metadata key the map is coloured by")
    parser.add_argument("--prompts", type=Path, help="the target's labels.json (for a space whose chosen key is a task key)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loradb-shots-") as tmp:
        db = Path(tmp) / "db"
        shutil.copytree(args.db, db)
        target = Path(tmp) / f"{args.data.parent.name or 'target'}.npy"
        shown = subprocess.run([sys.executable, "-m", "loradb.cli", "show", str(db), args.record, "--json"], check=True,
                               capture_output=True, text=True)
        recipe = json.loads(shown.stdout)["space_recipe"]  # the target is represented as the records were
        subprocess.run([sys.executable, "-m", "loradb.cli", "represent", str(args.data), "--base", "minilm", "-o", str(target),
                        "--layer", str(recipe["layer"]), "--pooling", recipe["pooling"], "--max-length", str(recipe["max_length"]),
                        *(["--prompts", str(args.prompts)] if args.prompts else [])],
                       check=True)
        with running_server(db, "--public-read", log=Path(tmp) / "server.log") as url, sync_playwright() as p:
            browser = launch(p)
            context = browser.new_context(viewport={"width": 1360, "height": 860})

            def show(view: str):  # a new page each time: the painted mark is per document
                page = context.new_page()
                page.goto(f"{url}/{view}")
                wait_painted(page)
                return page

            show("#/records").screenshot(path=str(args.out / "catalogue-records.png"))
            show(f"#/record/{args.record}").screenshot(path=str(args.out / "catalogue-record.png"))
            page = show(f"#/map?colour={args.colour}")
            drop_representation(page, target)
            page.wait_for_function("() => document.querySelector('#weights') || document.getElementById('status').textContent")
            if page.locator("#weights").count() == 0:
                raise SystemExit(f"the drop was refused: {page.text_content('#status')}")
            page.screenshot(path=str(args.out / "catalogue-map.png"))
            browser.close()
    print(f"wrote {', '.join(str(args.out / n) for n in ('catalogue-records.png', 'catalogue-record.png', 'catalogue-map.png'))}")


if __name__ == "__main__":
    main()
