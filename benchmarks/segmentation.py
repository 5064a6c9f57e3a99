"""The paper's vision experiment on LiteMedSAM: leave one site out over the semi-synthetic
`loradb data sites` collection (9 sites, 3 scanner families; generated, not real scans),
Dice with box prompts from the ground truth, every row (pre-trained, merge-all, nearest,
uniform, similarity, linear, sparse, SFT).

Writes what `loradb eval --task segmentation` writes (results.json, report.md, masks.png: for
one test image of each family the image, the ground truth, the zero-shot mask, the sparse
mixture's and the site's own LoRA's) and RUN.md, run.json to --out.

Run: python benchmarks/segmentation.py --out benchmarks/reports/segmentation [--k 3] [--test-examples N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--test-examples", type=int, help="test images per site (default all)")
    args = parser.parse_args()
    started = time.perf_counter()
    from loradb.evaluate.datasets import collection_dir
    from loradb.evaluate.segmentation import SegmentationConfig, run_segmentation_eval
    from loradb.models.packaged import resolve_base
    from runinfo import write_run_info

    sites = collection_dir("sites")
    base = Path(resolve_base("litemedsam"))
    results = run_segmentation_eval(base, sites, args.out, SegmentationConfig(k=args.k, max_test=args.test_examples))
    print("mean Dice: " + "  ".join(f"{row} {dice:.3f}" for row, dice in results["mean"].items()))
    write_run_info(args.out, started)


if __name__ == "__main__":
    main()
