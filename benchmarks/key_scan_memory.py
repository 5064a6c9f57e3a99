"""Memory of the exact key scan, which answers a large space's default search until its key index is built.

At 1M records that scan once read every record as a whole Record and was OOM-killed at 19.9 GB
on PostgreSQL (benchmarks/reports/key-scale/first-attempt.txt). It now streams only what keys
read (the store's key_rows, a chunk at a time) and keeps no phi matrix larger than
keysearch.KEPT_PHI_BYTES. For each store the records of key_scale.py (dimension 384, a task
embedding each, the space's chosen key `task`) are loaded; then each measurement runs in a fresh
child process that opens the database, raises the index threshold past the space's size (so
the search scans exactly, as before a build), resets its peak resident size (Linux's
clear_refs) and reports how far one search raised it (VmHWM after minus VmRSS before). Measured: the key search the default search
runs for the space's chosen key (keysearch.nearest_by_key, as LoraDB.search calls it; the rest
of a search, weights and the fit decision, reads only the k hits), and as the baseline the former scan (every record of the space read as a
Record, stacked and mapped; off with --no-baseline where it would exhaust the machine). Both
answers' top 10 are checked equal to the exact ranking computed here.

Memory only: no timing here is a figure (benchmarks/key_scale.py measures latency).

Run: python benchmarks/key_scan_memory.py [--records 1000000] [--no-baseline] [--skip-postgres] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from key_scale import DIM, K, load_embedded, load_postgres, synthetic  # noqa: E402

KEY = "task"
RESULTS: dict = {"key": KEY, "dim": DIM, "embedded": {}, "postgres": {}}


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def child(location: str, space_json: str, target_file: str, mode: str) -> None:
    """One search in this fresh process; prints {"growth_mib", "top", "kept_phi"}."""
    from loradb.db import keysearch
    from loradb.db.database import LoraDB
    from loradb.db.store import postgres as pg_store
    from loradb.retrieval.keys import KeyInputs, References, get_key, key_map
    from loradb.retrieval.represent import Representation, Space

    db = LoraDB(location)
    db.index.ann_min_records = 10**12  # the embedded store: scanned exactly
    pg_store.EXACT_BELOW = 10**12  # PostgreSQL: the same
    space = Space.from_dict(json.loads(space_json))
    z, task_z = np.load(target_file)
    target = Representation(z=z, space=space, base_name="synthetic", task_z=task_z)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the present resident size
    before = _status_kib("VmRSS")
    if mode == "search":
        assert db.default_key(space.id) == KEY
        found = keysearch.nearest_by_key(db, KEY, target, K, fallback=True)  # what LoraDB.search runs for the chosen key
        assert found is not None
        top = [r.id for r in found.records]
        kept = any(s.phi is not None for s in keysearch._SCANS.values())  # past KEPT_PHI_BYTES: no
    else:  # the former scan: whole Records
        records = sorted(db.index.in_space(space.id), key=lambda r: r.name)
        stacked = KeyInputs.stacked(records)
        refs = References.of(stacked) if get_key(KEY).reads_references else None
        phi = key_map(KEY, stacked, refs)
        q = key_map(KEY, KeyInputs.stacked([target]), refs)[0]
        d2 = ((phi - q) ** 2).sum(axis=1)
        top = [records[i].id for i in np.lexsort((np.arange(len(records)), d2))[:K]]
        kept = True
    growth = _status_kib("VmHWM") - before
    print(json.dumps({"growth_mib": round(growth / 1024), "top": top, "kept_phi": kept}))


def measure(store: str, location: str, space, target, truth: list[str], baseline: bool, root: Path) -> None:
    target_file = root / "target.npy"
    np.save(target_file, np.stack([target[0], target[2]]))
    for mode in ("search", "records") if baseline else ("search",):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", location, json.dumps(space.to_dict()), str(target_file), mode],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{store} {mode}: the child failed (exit {out.returncode}): {out.stderr.strip()[-400:]}", flush=True)
            RESULTS[store][mode] = {"failed": out.returncode}
            continue
        found = json.loads(out.stdout.strip().splitlines()[-1])
        assert found["top"] == truth, (store, mode, found["top"], truth)
        RESULTS[store][mode] = {"peak_growth_mib": found["growth_mib"], "top10_exact": True, "kept_phi": found["kept_phi"]}
        label = "default search (streamed exact scan)" if mode == "search" else "former scan (whole Records, baseline)"
        print(f"{store}: {label}: peak resident memory +{found['growth_mib']} MiB, top 10 = the exact ranking "
              f"({time.perf_counter() - t:.0f} s, not a figure)", flush=True)
    if baseline and "peak_growth_mib" in RESULTS[store].get("records", {}):
        ratio = RESULTS[store]["records"]["peak_growth_mib"] / max(RESULTS[store]["search"]["peak_growth_mib"], 1)
        RESULTS[store]["ratio_records_over_streamed"] = round(ratio, 1)
        print(f"{store}: the former scan took {ratio:.1f}x the memory of the streamed one", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the former whole-Record scan (it needs ~20 GB at 1M)")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--out", type=Path, help="write results.json, RUN.md and run.json here")
    args = parser.parse_args()
    started = time.perf_counter()
    z, var, task_z, space, targets = synthetic(args.records, args.clusters, KEY, 1)
    from loradb.retrieval.keys import KeyInputs, key_map

    phi = np.concatenate([key_map(KEY, KeyInputs.of(z[s:s + 100_000], None, task_z[s:s + 100_000]), None)
                          for s in range(0, len(z), 100_000)])
    q = key_map(KEY, KeyInputs.of(targets[0][0], None, targets[0][2]), None)[0]
    d2 = ((phi - q) ** 2).sum(axis=1)
    names = np.array([f"r{i}" for i in range(len(z))])
    truth = [uuid.UUID(int=int(names[i][1:])).hex for i in np.lexsort((names, d2))[:K]]  # ties by name, as the scan
    del phi
    RESULTS["records"] = args.records
    with tempfile.TemporaryDirectory(prefix="loradb-scanmem-", dir=str(Path.home())) as tmp:
        root = Path(tmp)
        if not args.skip_embedded:
            db, _ = load_embedded(root, z, var, task_z, space, KEY)
            db.close()
            measure("embedded", str(root / "db"), space, targets[0], truth, not args.no_baseline, root)
        if not args.skip_postgres:
            from services import Postgres

            server = Postgres(root / "pg", shared_buffers="1GB")
            try:
                db, _ = load_postgres(server, z, var, task_z, space, KEY)
                location = db.location
                db.close()
                measure("postgres", location, space, targets[0], truth, not args.no_baseline, root)
            finally:
                server.stop()
    from runinfo import write_results

    write_results(args.out, RESULTS, started)


if __name__ == "__main__":
    main()
