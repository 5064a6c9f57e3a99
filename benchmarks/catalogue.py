"""The browser catalogue at scale: first paint of the records table and the map's render, in a
real Chromium driven by Playwright, against `loradb serve` over an embedded database.

Two databases are built the same way, one of --small records (the baseline) and one of
--records (100,000 by default): synthetic 384-d prototypes in --clusters clusters, each
record with a name, an owner and metadata (family, site), pointing at a few placeholder
blobs (the catalogue never opens them here). Each database's approximate index is built
before anything is timed, so no background build competes with the measurement.

Timed, --repeats times each, in a fresh browser context (no cache) with the server warm:
- records: navigation start -> the table painted (a performance mark two animation frames
  after the view is in the DOM), for the first page, a deep page (offset --deep), and a
  text filter that scans every record;
- map: navigation start -> the map painted, with the server's default sample of
  prototypes and with every prototype drawn (sample = all), both after one warming visit
  (the PCA fit is cached per database generation); the cold fit is timed separately.
Printed: each p50, and the ratio of the large database's first paint to the small one's.

Run: python benchmarks/catalogue.py [--records 100000] [--out benchmarks/reports/catalogue]
Needs Chromium (Debian's `chromium`) and the `playwright` package (in the dev extra).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser_helpers import launch, wait_painted  # noqa: E402
from loradb.db.store.protocol import Record  # noqa: E402
from loradb.retrieval.represent import Space  # noqa: E402

DIM = 384
FAMILIES = ["radiology", "pathology", "dermatology", "cardiology", "oncology", "neurology", "triage", "billing"]
RESULTS: dict = {}


def build(root: Path, n: int, clusters: int) -> Path:
    from loradb.db.database import LoraDB

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(clusters, DIM)).astype(np.float32) * 2
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 6, "mean", 256, DIM)
    db = LoraDB.init(root)
    blobs = []
    for i in range(4):
        placeholder = root.parent / f"blob{i}-{n}"
        placeholder.write_bytes(secrets.token_bytes(1024))
        blobs.append(db.blobs.put(placeholder))
    t = time.perf_counter()
    for start in range(0, n, 50_000):
        count = min(50_000, n - start)
        picks = rng.integers(0, clusters, count)
        vectors = (centers[picks] + rng.normal(size=(count, DIM)).astype(np.float32)).astype(np.float32)
        db.index.insert_many([Record(
            id=uuid.uuid4().hex, name=f"{FAMILIES[c % len(FAMILIES)]}-site{i % 300:03d}-{i:06d}", base_name="all-MiniLM-L6-v2",
            base_fingerprint=space.base_fingerprint, space=space.to_dict(), z=z, n_samples=100 + i % 900, rank=8,
            target_modules=["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.value"],
            adapter_config={"r": 8, "lora_alpha": 16}, blob_sha256=blobs[i % len(blobs)],
            meta={"family": FAMILIES[c % len(FAMILIES)], "site": f"site{i % 300:03d}"}, owner=f"team{i % 7}",
            created=f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:{i:09d}")
            for i, (c, z) in enumerate(zip(picks, vectors), start=start)])
    print(f"{n} records loaded in {time.perf_counter() - t:.1f} s")
    db.close()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "loradb.cli", "index", "build", str(root)], check=True, stdout=subprocess.DEVNULL)
    print(f"approximate index built in {time.perf_counter() - t:.1f} s")
    return root


def painted_ms(browser, url: str) -> float:
    """Navigation start -> the view painted, in a fresh context (nothing cached)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    wait_painted(page)
    if page.evaluate("() => document.body.dataset.ready") == "error":
        raise RuntimeError(f"{url}: {page.text_content('#status')}")
    ms = page.evaluate("() => performance.getEntriesByName('loradb-view-painted')[0].startTime")
    context.close()
    return float(ms)


def timed(browser, url: str, repeats: int) -> dict:
    times = [painted_ms(browser, url) for _ in range(repeats)]
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "runs": len(times)}


def measure(browser, url: str, n: int, args, shots: Path | None) -> dict:
    import httpx

    space = httpx.get(f"{url}/v1/spaces").json()[0]["id"]
    out: dict = {"records": n}
    out["first_page"] = timed(browser, f"{url}/#/records", args.repeats)
    out["deep_page"] = timed(browser, f"{url}/#/records?offset={min(args.deep, max(0, n - 50))}", args.repeats)
    out["text_filter"] = timed(browser, f"{url}/#/records?q=site042", args.repeats)
    t = time.perf_counter()
    fit = httpx.get(f"{url}/v1/spaces/{space}/map", params={"colour": "family"}, timeout=600)
    fit.raise_for_status()
    out["map_fit_cold_s"] = round(time.perf_counter() - t, 2)
    doc = fit.json()
    out["map_default_shown"], out["map_total"] = doc["shown"], doc["total"]
    out["map_default"] = timed(browser, f"{url}/#/map?colour=family", args.repeats)
    everything = f"{url}/#/map?colour=family&sample={n}"
    t = time.perf_counter()
    painted_ms(browser, everything)  # fits the PCA on every prototype once
    out["map_all_first_visit_s"] = round(time.perf_counter() - t, 2)
    out["map_all"] = timed(browser, everything, args.repeats)
    if shots:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(everything)
        wait_painted(page)
        page.screenshot(path=str(shots / f"map-{n}.png"))
        context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=100, help="the baseline database's size")
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--deep", type=int, default=50_000, help="offset of the deep page")
    parser.add_argument("--out", type=Path, help="write results.json, RUN.md, run.json and a map screenshot here")
    args = parser.parse_args()
    started = time.perf_counter()
    from playwright.sync_api import sync_playwright

    from server_helpers import running_server
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loradb-catalogue-", dir=str(Path.home())) as tmp, sync_playwright() as p:
        browser = launch(p)
        for label, n in (("small", args.small), ("large", args.records)):
            db = build(Path(tmp) / f"db-{n}", n, args.clusters)
            with running_server(db, "--public-read", log=Path(tmp) / f"server-{n}.log") as url:
                painted_ms(browser, f"{url}/#/records")  # the server's first request opens the database
                RESULTS[label] = measure(browser, url, n, args, args.out if label == "large" else None)
            print(json.dumps({label: RESULTS[label]}, indent=2))
        browser.close()
    small, large = RESULTS["small"], RESULTS["large"]
    RESULTS["ratio_first_page_large_to_small"] = round(large["first_page"]["p50_ms"] / small["first_page"]["p50_ms"], 2)
    print(f"first paint of the table: {large['first_page']['p50_ms']} ms at {args.records} records, "
          f"{small['first_page']['p50_ms']} ms at {args.small} (ratio {RESULTS['ratio_first_page_large_to_small']})")
    print(f"map of all {args.records} prototypes painted in {large['map_all']['p50_ms']} ms (warm), "
          f"default sample of {large['map_default_shown']} in {large['map_default']['p50_ms']} ms")
    if args.out:
        from runinfo import write_run_info

        (args.out / "results.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
        write_run_info(args.out, started)


if __name__ == "__main__":
    main()
