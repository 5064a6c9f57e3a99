"""The generation zoo: retrieval among 18 SmolLM2 adapters of 5 task families.

Every domain of the `zoo-generation` collection (headlines by outlet, docstring summaries,
data-to-text, string mappings, question answering; each with its own instruction) gets one
LoRA on SmolLM2-135M-Instruct; each domain is held out in turn with the other 17 in the
database and scored by ROUGE-L on a seeded sample of its test pairs. Rows as in
benchmarks/zoo.py: pre-trained, merge-all, arrow, the z-based methods with each fold's
retrieval key (chosen on its references only), every key scored, SFT.

Run: python benchmarks/zoo_generation.py [--out benchmarks/reports/zoo-generation]
(fetches the sources and the model with pip once; trained LoRAs are cached).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from runinfo import write_run_info

from loradb.evaluate.datasets import collection_dir
from loradb.evaluate.config import EvalConfig
from loradb.evaluate.harness import run_eval
from loradb.evaluate.report import summary_lines
from loradb.models.packaged import packaged_smollm2
from loradb.models.train import GENERATION_TRAIN

# at this machine's speed (one SmolLM2 LoRA on 96 pairs: ~200 s) the pool trains on 96
# pairs per domain and scores 40 test pairs; z comes from the same test inputs' sample
ZOO_GENERATION_EVAL = EvalConfig(task="generation", train=replace(GENERATION_TRAIN, max_examples=96), test_examples=40,
                                 key_method="similarity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="zoo-generation-report", help="report directory (default zoo-generation-report)")
    parser.add_argument("--folds", help="hold out only these domains (comma-separated; default every domain)")
    args = parser.parse_args()
    started = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    config = replace(ZOO_GENERATION_EVAL, folds=tuple(args.folds.split(",")) if args.folds else None)
    results = run_eval(packaged_smollm2(), collection_dir("zoo-generation"), Path(args.out), config, progress=False, log=log)
    print("\n".join(summary_lines(results)))
    write_run_info(Path(args.out), started)


if __name__ == "__main__":
    main()
