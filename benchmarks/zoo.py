"""The adapter zoo, the library case at full size: 30 adapters of 10 task families, four of
them sibling families (one label set, text from different places), the rest orphans.

Every domain of the `zoo` collection gets one LoRA on the packaged all-MiniLM-L6-v2, trained
with early stopping (evaluate/demo.py's ZOO_TRAIN); each domain is held out in turn with the
other 29 in the database. Rows: pre-trained, merge-all (plain, and task arithmetic with
lambda tuned on the references), random-k, arrow (weight-space routing, dataset level), PEFT's
own Arrow (per-token routing over the k retrieved and over all 29), nearest / uniform /
similarity / linear / sparse / convex with each fold's key (chosen on its references only),
the default pipeline (adapt or abstain, at the scale chosen on the references), the best
single reference (oracle) and SFT; groups with siblings / orphans with 95% paired bootstrap
intervals. Also every retrieval key on every fold, accuracy against k, and (with --shots)
few-shot weights against scratch and the best zero-shot row, per group.

Run: python benchmarks/zoo.py [--out benchmarks/reports/zoo] [--shots 4,16] [--transfer]
(fetches the sources with pip once; trained LoRAs are cached, so a second run only re-evaluates;
the 16 that ship as the demo's library are placed in the cache, not trained).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from runinfo import write_run_info

from loradb.evaluate.demo import ZOO_EVAL
from loradb.evaluate.datasets import collection_dir
from loradb.evaluate.demo_library import seed_cache
from loradb.io.files import cache_dir
from loradb.evaluate.harness import run_eval
from loradb.evaluate.report import summary_lines
from loradb.models.packaged import packaged_minilm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="zoo-report", help="report directory (default zoo-report)")
    parser.add_argument("--shots", help="few-shot rows at these examples per label, e.g. 4,16")
    parser.add_argument("--folds", help="hold out only these domains (comma-separated; default every domain)")
    parser.add_argument("--transfer", action="store_true", help="every single adapter on every domain (961 evaluations)")
    parser.add_argument("-k", type=int, default=5, help="adapters retrieved (default 5)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from what an earlier run into --out finished (the same settings, data and adapters)")
    parser.add_argument("--no-k-sweep", action="store_true", help="skip the accuracy-against-k rows (faster)")
    args = parser.parse_args()
    started = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    domains = collection_dir("zoo")
    seed_cache(cache_dir())  # the demo's 16 shipped adapters are the zoo's (same data and settings): not trained again
    config = replace(ZOO_EVAL, k=args.k, k_sweep=() if args.no_k_sweep else (1, 3, 5, 10),
                     k_sweep_methods=("uniform", "similarity", "linear", "sparse"),
                     transfer=args.transfer, peft_arrow=True,
                     tune_examples=100,  # per leave-one-out player in the scale's choice: 8 players x 11 candidates a fold
                     shots=tuple(int(x) for x in args.shots.split(",")) if args.shots else (),
                     folds=tuple(args.folds.split(",")) if args.folds else None)
    results = run_eval(packaged_minilm(), domains, Path(args.out), config, progress=False, resume=args.resume, log=log)
    print("\n".join(summary_lines(results)))
    write_run_info(Path(args.out), started)


if __name__ == "__main__":
    main()
