"""The generation zoo, the library case: 15 SmolLM2-135M-Instruct adapters of 5 task families.

Every domain of the `zoo-generation` collection (headlines by outlet, docstring summaries,
UI strings into Spanish, French and Portuguese; one instruction per family) gets one LoRA,
trained until the teacher-forced loss of a held-out fifth of its training pairs stops
falling. Each domain is held out in turn. Every domain has a sibling in this collection, so
the orphan group is made by construction: in each family the first domain (alphabetically)
is held out with its whole family left out of the library (`orphan_folds`, fixed here
before any run); the others are held out with their siblings in the library.

Rows as in benchmarks/zoo.py (the default pipeline, merge-all plain and tuned, random-k,
arrow, PEFT's own Arrow, bounded and unbounded weights, the best single reference, SFT);
the update sizes are chosen by leave-one-out over the references on their teacher-forced
loss. Two metrics with 95% paired intervals per group: ROUGE-L of greedy outputs on a
seeded 40 of the scored pairs, and the loss of every scored pair's reference target (up to
100 a fold). z of a target comes from its test inputs that are not scored.

Run: python benchmarks/zoo_generation.py [--out benchmarks/reports/zoo-generation] [--train-only] [--resume]
(fetches the sources and the model from the package index once; trained LoRAs are cached, so `--train-only`
can fill the cache first and a later run only evaluates). The evaluation takes about 4 h on a 2-core
CPU (about 17 min a fold); every finished fold is kept, and `--resume` into the same --out goes on
from the last one.
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
from loradb.evaluate.harness import run_eval, train_pool
from loradb.evaluate.report import summary_lines
from loradb.models.packaged import packaged_smollm2
from loradb.models.train import GENERATION_TRAIN

# the adapters: 96 pairs a domain (a fifth held out for early stopping), a budget of 5 epochs
# at 2e-3, stopping at the first epoch whose held-out loss does not improve
ZOO_GENERATION_TRAIN = replace(GENERATION_TRAIN, max_examples=96, validation=0.2, epochs=5, patience=1, lr=2e-3)
# each family's first domain held out as an orphan (its family left out of the library)
ORPHAN_FOLDS = ("docstrings-arrays", "headlines-abcnews", "ui-es-sphinx", "ui-fr-sphinx", "ui-pt-sphinx")
# at this machine's speed (greedy decoding of 40 pairs: ~11 s a row) ROUGE is read on 40 scored pairs,
# the loss on up to 100; the keys are not each scored; the update sizes by 6 reference players on
# 48 of their training pairs each
ZOO_GENERATION_EVAL = EvalConfig(task="generation", train=ZOO_GENERATION_TRAIN, test_examples=100, target_split=True,
                                 rouge_examples=40, library_rows=True, peft_arrow=True, orphan_folds=ORPHAN_FOLDS,
                                 compare_keys=False, key_method="similarity", tune_examples=48, scale_references=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="zoo-generation-report", help="report directory (default zoo-generation-report)")
    parser.add_argument("--folds", help="hold out only these domains (comma-separated; default every domain)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from what an earlier run into --out finished (the same settings, data and adapters)")
    parser.add_argument("--train-only", action="store_true", help="train (and cache) the adapters, evaluate nothing")
    args = parser.parse_args()
    started = time.perf_counter()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    domains = collection_dir("zoo-generation")
    if args.train_only:
        train_pool(packaged_smollm2(), domains, ZOO_GENERATION_EVAL, log=log)
        return
    folds = tuple(args.folds.split(",")) if args.folds else None
    config = replace(ZOO_GENERATION_EVAL, folds=folds,
                     orphan_folds=tuple(f for f in ORPHAN_FOLDS if folds is None or f in folds))
    results = run_eval(packaged_smollm2(), domains, Path(args.out), config, progress=False, resume=args.resume, log=log)
    print("\n".join(summary_lines(results)))
    write_run_info(Path(args.out), started)


if __name__ == "__main__":
    main()
