"""The paper's vision experiment on LiteMedSAM: leave one site out over the semi-synthetic
`loradb data sites` collection (9 sites, 3 scanner families; generated, not real scans),
Dice with box prompts from the ground truth, every row (pre-trained, merge-all, nearest,
uniform, similarity, linear, sparse, SFT).

Writes results.json and report.md (evaluate/segmentation.py), masks.png (for one test image of
each family: the image, the ground truth, the zero-shot mask, the sparse mixture's and the
site's own LoRA's), RUN.md and run.json to --out.

Run: python benchmarks/segmentation.py --out benchmarks/reports/segmentation [--k 3] [--test-examples N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def masks_panel(results: dict, sites_dir: Path, base: Path, out: Path) -> None:
    """One row per family: image, ground truth, zero-shot, sparse mixture, SFT (Dice in the titles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from loradb.lora.adapter import read_adapter
    from loradb.lora.compose import compose_exact, factors_of
    from loradb.lora.inmemory import DeltaWeights
    from loradb.models.segment import box_of, decode, dice, resized_mask
    from loradb.retrieval.images import ImageEncoder, image_input

    encoder = ImageEncoder(base)
    model = encoder.model
    weights = DeltaWeights(model)
    adapters = results["adapters"]
    picked = {}
    for name, site in results["sites"].items():
        picked.setdefault(site["family"], name)
    fig, axes = plt.subplots(len(picked), 5, figsize=(12, 2.6 * len(picked)), squeeze=False)
    for row, (family, name) in enumerate(sorted(picked.items())):
        image_path = sorted((sites_dir / name / "test").glob("*.png"))[0]
        with Image.open(image_path.parent / "masks" / image_path.name) as m:
            truth = np.asarray(m.convert("L")) > 127
        emb = encoder.embeddings(image_input(image_path)[None])
        box = torch.from_numpy(box_of(truth)[None])
        truth256 = resized_mask(truth)
        panels = [("image", None), ("ground truth", None), ("zero-shot", {}),
                  ("sparse mixture", results["sites"][name]["rows"]["sparse"]["weights"]), ("SFT (own LoRA)", {name: 1.0})]
        for col, (title, mix) in enumerate(panels):
            ax = axes[row][col]
            ax.axis("off")
            if col == 0:
                ax.imshow(image_input(image_path)[0], cmap="gray")
                ax.set_title(f"{name} ({family})", fontsize=9)
                continue
            if col == 1:
                ax.imshow(truth256, cmap="gray")
                ax.set_title(title, fontsize=9)
                continue
            composed = compose_exact([factors_of(read_adapter(adapters[n])) for n in mix], list(mix.values())) if mix else None
            weights.set(composed)
            with torch.no_grad():
                pred = (decode(model, emb, box)[0, 0] > 0).numpy()
            ax.imshow(pred, cmap="gray")
            ax.set_title(f"{title}: Dice {dice(pred, truth256):.2f}", fontsize=9)
    weights.set(None)
    fig.tight_layout()
    fig.savefig(out / "masks.png", dpi=80)


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
    masks_panel(results, sites, base, args.out)
    print("mean Dice: " + "  ".join(f"{row} {dice:.3f}" for row, dice in results["mean"].items()))
    write_run_info(args.out, started)


if __name__ == "__main__":
    main()
