"""The demo's shipped adapter library (src/loradb/evaluate/demo_library/): retrain it from its
recipe and compare with what ships, or replace it.

Every adapter is trained afresh in a temporary cache (nothing reused), with the settings the
demo runs under (demo.DEMO_EVAL.train), on the demo's domains built from their pinned sources.
The comparison prints, per domain, whether the retrained adapter has the shipped one's cache
key (same base, data, task and settings), both held-out scores, and the largest difference
between their weights.

Run: python benchmarks/demo_library.py [--domains a,b] [--out DIR]   (compare; ~20 min for all 16)
     python benchmarks/demo_library.py --write                       (replace the shipped library)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from runinfo import write_run_info
from safetensors.numpy import load_file

from loradb.evaluate.demo import DEMO_DOMAINS, DEMO_EVAL, demo_domains
from loradb.evaluate.demo_library import LIBRARY_DIR, read_manifest, write_library
from loradb.evaluate.domains import load_domains
from loradb.evaluate.harness import adapter_key, train_cached, train_settings
from loradb.evaluate.tasks import ClassificationTask
from loradb.models.packaged import packaged_minilm
from loradb.models.prompts import TRAINING_INFO

WEIGHTS = "adapter_model.safetensors"


def _validation(adapter_dir: Path) -> dict:
    return json.loads((adapter_dir / TRAINING_INFO).read_text()).get("validation", {})


def _largest_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two adapters' tensors (inf if they differ in layout)."""
    x, y = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    if x.keys() != y.keys() or any(x[k].shape != y[k].shape for k in x):
        return float("inf")
    return max(float(np.abs(x[k] - y[k]).max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the shipped library with the retrained adapters")
    parser.add_argument("--domains", help="only these domains (comma-separated; default all 16; not with --write)")
    parser.add_argument("--out", help="also write results.json and RUN.md of the comparison here")
    args = parser.parse_args()
    names = args.domains.split(",") if args.domains else list(DEMO_DOMAINS)
    if args.write and args.domains:
        parser.error("--write rebuilds the whole library; leave out --domains")
    unknown = sorted(set(names) - set(DEMO_DOMAINS))
    if unknown:
        parser.error(f"not demo domains: {', '.join(unknown)}")
    started = time.perf_counter()
    base = packaged_minilm()
    train = DEMO_EVAL.train.validate()
    domains = {d.name: d for d in load_domains(demo_domains())}
    task = ClassificationTask()
    shipped = None if args.write else read_manifest()
    rows, trained = {}, {}
    with tempfile.TemporaryDirectory(prefix="loradb-demo-library-") as cache:
        for name in names:
            key = adapter_key(base, domains[name], task, train)
            out, seconds, _ = train_cached(base, domains[name], task, train, cache=Path(cache), progress=False)
            trained[name] = (key, out)
            row = {"key": key, "train_seconds": round(seconds, 1), "retrained": _validation(out)}
            if shipped is not None:
                entry = shipped["adapters"][name]
                row.update(same_key=entry["key"] == key, shipped=_validation(LIBRARY_DIR / name),
                           largest_weight_difference=_largest_difference(LIBRARY_DIR / name, out))
            rows[name] = row
            print(f"{name:<22} trained in {seconds:5.0f} s, held-out {row['retrained'].get('best', float('nan')):.3f}"
                  + ("" if shipped is None else
                     f" (shipped {row['shipped'].get('best', float('nan')):.3f}); same key: {row['same_key']}; "
                     f"largest weight difference {row['largest_weight_difference']:.2e}"), file=sys.stderr, flush=True)
        if args.write:
            write_library(trained, train_settings(train))
            print(f"wrote {len(trained)} adapters to {LIBRARY_DIR}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"train": train_settings(train), "domains": rows}, indent=2) + "\n")
        write_run_info(out, started)


if __name__ == "__main__":
    main()
