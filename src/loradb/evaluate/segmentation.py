"""The paper's segmentation experiment: leave one site out, LiteMedSAM, Dice.

Every site's LoRA (on the mask decoder's attention projections) is trained once on its
training images (cached by content); its z is the mean encoder feature of those images.
For each site held out in turn, the other sites' adapters form a fresh database; the held-out
site's *unlabeled* test images give z_trg; each weighting method composes an adapter (exact
merge), set into the decoder in memory (theta0 + delta), and is scored by mean Dice on the
site's test images with box prompts from the ground-truth masks, as MedSAM evaluates. Rows:
the pre-trained model, merge-all (uniform over every reference), nearest, uniform over the k
nearest, similarity, linear, sparse, and the site's own LoRA (SFT, the oracle).

The encoder's outputs are cached on disk per image (float16) and its pooled features with
them, so a rerun encodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from loradb.errors import LoradbError
from loradb.io.files import cache_dir, sha256_file
from loradb.lora.adapter import read_adapter
from loradb.lora.base import load_base
from loradb.lora.compose import compose_exact, factors_of
from loradb.lora.inmemory import DeltaWeights
from loradb.models import litemedsam
from loradb.models.segment import DecoderLoraConfig, Segmentations, box_of, mean_dice, resized_mask, train_decoder_lora
from loradb.retrieval.images import ImageEncoder, image_files, image_input, load_cached, save_atomic
from loradb.retrieval.represent import Representation, default_space, save_representation

COMPOSED = ("nearest", "uniform", "similarity", "linear", "sparse")
EMBEDDING_SHAPE = (litemedsam.FEATURE_DIM, 64, 64)  # the image encoder's output for one image


@dataclass
class SegmentationConfig:
    k: int = 3
    methods: tuple[str, ...] = COMPOSED
    train: DecoderLoraConfig = field(default_factory=DecoderLoraConfig)
    max_test: int | None = None  # test images per site (None: all)


@dataclass
class Site:
    name: str
    family: str
    root: Path

    def split(self, split: str) -> list[Path]:
        return image_files(self.root / split)


def load_sites(domains_dir: Path) -> list[Site]:
    sites = []
    for folder in sorted(p for p in Path(domains_dir).iterdir() if p.is_dir()):
        info = json.loads((folder / "domain.json").read_text()) if (folder / "domain.json").is_file() else {}
        for split in ("train", "test"):
            if not (folder / split / "masks").is_dir():
                raise LoradbError(f"{folder / split} has no masks/ folder: a segmentation site needs images and masks")
        sites.append(Site(folder.name, str(info.get("family", folder.name)), folder))
    if len(sites) < 3:
        raise LoradbError(f"{domains_dir} holds {len(sites)} sites; leave-one-out needs at least 3")
    return sites


class SiteData:
    """Encoder outputs (cached on disk, float16), pooled features, boxes and masks of a split."""

    def __init__(self, encoder: ImageEncoder, cache: Path):
        self.encoder = encoder
        self.cache = cache / "embeddings" / f"litemedsam-{encoder.base.fingerprint[:16]}"

    def load(self, paths: list[Path]) -> tuple[Segmentations, np.ndarray]:
        import torch
        from PIL import Image

        embeddings = [self.embedding(p) for p in paths]
        masks, boxes = [], []
        for p in paths:
            with Image.open(p.parent / "masks" / p.name) as m:
                mask = np.asarray(m.convert("L")) > 127
            masks.append(resized_mask(mask))
            boxes.append(box_of(mask))
        emb = torch.from_numpy(np.stack(embeddings).astype(np.float32))
        pooled = emb.mean(dim=(2, 3)).double().numpy()
        return Segmentations(emb, torch.from_numpy(np.stack(boxes)), torch.from_numpy(np.stack(masks)).float()), pooled

    def embedding(self, path: Path) -> np.ndarray:
        """The encoder's output for one image, (256, 64, 64) float16, from the cache or the encoder."""
        file = self.cache / f"{sha256_file(path)}.npy"
        emb = load_cached(file, EMBEDDING_SHAPE)
        if emb is None:
            emb = self.encoder.embeddings(image_input(path)[None])[0].numpy().astype(np.float16)
            save_atomic(file, emb)
        return emb


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_segmentation_eval(base_path: str | Path, domains_dir: str | Path, out: str | Path,
                          config: SegmentationConfig = SegmentationConfig(), *, cache: Path | None = None,
                          log=_log) -> dict:
    """Leave-one-site-out Dice of every row; writes results.json and report.md to `out`."""
    cache = cache or cache_dir()
    base = load_base(base_path)
    if not litemedsam.is_litemedsam(base.path):
        raise LoradbError(f"--task segmentation runs on an image model (--base litemedsam), not {base.path}")
    sites = load_sites(Path(domains_dir))
    encoder = ImageEncoder(base.path, cache)
    data = SiteData(encoder, cache)
    model = encoder.model
    space = default_space(base)
    adapters, reps = {}, {}
    for site in sites:
        train, pooled = data.load(site.split("train"))
        key = hashlib.sha256(json.dumps({"base": base.fingerprint, "images": [sha256_file(p) for p in site.split("train")],
                                          "config": asdict(config.train)}, sort_keys=True).encode()).hexdigest()[:24]
        folder = cache / "adapters" / f"segmentation-{key}"
        if not (folder / "adapter_config.json").is_file():
            log(f"training {site.name}'s decoder LoRA on {len(pooled)} images")
            train_decoder_lora(model, train, folder, config.train)
        adapters[site.name] = folder
        reps[site.name] = Representation(z=pooled.mean(axis=0).astype(np.float32), space=space, base_name=base.name,
                                         n_samples=len(pooled))
    weights_model = DeltaWeights(model)
    factors = {name: factors_of(read_adapter(path)) for name, path in adapters.items()}
    results: dict = {"config": {"k": config.k, "methods": list(config.methods), "train": asdict(config.train)},
                     "adapters": {name: str(path) for name, path in adapters.items()}, "sites": {}}
    for held in sites:
        test_paths = held.split("test")[:config.max_test]
        test, pooled = data.load(test_paths)
        target = Representation(z=pooled.mean(axis=0).astype(np.float32), space=space, base_name=base.name,
                                n_samples=len(pooled))
        others = [s for s in sites if s.name != held.name]
        rows: dict[str, dict] = {}

        def score(label: str, weights: dict[str, float] | None) -> None:
            composed = compose_exact([factors[n] for n in weights], list(weights.values())) if weights else None
            weights_model.set(composed)
            rows[label] = {"dice": round(mean_dice(model, test)[0], 4), "weights": weights or {}}

        score("pretrained", None)
        score("merge-all", {s.name: 1.0 / len(others) for s in others})
        with tempfile.TemporaryDirectory() as tmp:
            from loradb.db.database import LoraDB

            db = LoraDB.init(Path(tmp) / "db")
            for s in others:
                z_file = save_representation(reps[s.name], Path(tmp) / f"{s.name}.npy")
                db.add(adapters[s.name], repr=z_file, name=s.name, base=base.path, meta={"family": s.family}, progress=False)
            for method in config.methods:
                k = 1 if method == "nearest" else config.k
                found = db.search(target=target, k=k, method="uniform" if method == "nearest" else method, progress=False)
                score(method, {h.record.name: float(h.weight) for h in found.hits})
            db.close()
        score("sft", {held.name: 1.0})
        weights_model.set(None)
        results["sites"][held.name] = {"family": held.family, "rows": rows}
        log(f"held out {held.name} ({held.family}): " + "  ".join(f"{r} {v['dice']:.3f}" for r, v in rows.items()))
    labels = list(next(iter(results["sites"].values()))["rows"])
    results["mean"] = {r: round(float(np.mean([s["rows"][r]["dice"] for s in results["sites"].values()])), 4) for r in labels}
    pre, sft = results["mean"]["pretrained"], results["mean"]["sft"]
    results["answers"] = {m: {"vs_zero_shot": round(results["mean"][m] - pre, 4),
                              "vs_merge_all": round(results["mean"][m] - results["mean"]["merge-all"], 4),
                              "sft_gain_recovered": round((results["mean"][m] - pre) / (sft - pre), 3) if sft != pre else None}
                          for m in config.methods}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # adapters by their cache folder's name: absolute paths would tie the report to this machine
    (out / "results.json").write_text(json.dumps({**results, "adapters": {n: Path(p).name for n, p in results["adapters"].items()}},
                                                 indent=2) + "\n")
    (out / "report.md").write_text(report_md(results))
    masks_panel(results, Path(domains_dir), data, out)
    return results


def report_md(results: dict) -> str:
    labels = list(results["mean"])
    head = "| site (family) | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels) + "\n"
    rows = "".join(f"| {name} ({s['family']}) | " + " | ".join(f"{s['rows'][r]['dice']:.3f}" for r in labels) + " |\n"
                   for name, s in results["sites"].items())
    mean = "| **mean** | " + " | ".join(f"**{results['mean'][r]:.3f}**" for r in labels) + " |\n"
    answers = "".join(f"| {m} | {a['vs_zero_shot']:+.3f} | {a['vs_merge_all']:+.3f} | "
                      f"{'n/a' if a['sft_gain_recovered'] is None else format(a['sft_gain_recovered'], '.2f')} |\n"
                      for m, a in results["answers"].items())
    return ("# Leave-one-site-out segmentation (LiteMedSAM, Dice)\n\nBox prompts from the ground-truth masks; "
            f"k = {results['config']['k']}; decoder LoRAs of rank {results['config']['train']['rank']}.\n\n"
            + head + rows + mean
            + "\n| composed row | mean Dice vs zero-shot | vs merge-all | share of SFT's gain |\n|---|---|---|---|\n"
            + answers)


def masks_panel(results: dict, sites_dir: Path, data: SiteData, out: Path, row: str = "sparse") -> None:
    """masks.png: one row per family (its first held-out site's first test image): the image,
    the ground truth, the zero-shot mask, `row`'s mixture and the site's own LoRA, Dice in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from loradb.models.segment import decode, dice

    model = data.encoder.model  # the eval's own model and embedding cache: nothing loaded or encoded twice
    weights = DeltaWeights(model)
    adapters = results["adapters"]
    if row not in next(iter(results["sites"].values()))["rows"]:
        row = "similarity" if "similarity" in next(iter(results["sites"].values()))["rows"] else "sft"
    picked: dict[str, str] = {}
    for name, site in results["sites"].items():
        picked.setdefault(site["family"], name)
    fig, axes = plt.subplots(len(picked), 5, figsize=(12, 2.6 * len(picked)), squeeze=False)
    for line, (family, name) in enumerate(sorted(picked.items())):
        image_path = sorted((sites_dir / name / "test").glob("*.png"))[0]
        with Image.open(image_path.parent / "masks" / image_path.name) as m:
            truth = np.asarray(m.convert("L")) > 127
        emb = torch.from_numpy(data.embedding(image_path)[None].astype(np.float32))
        box = torch.from_numpy(box_of(truth)[None])
        truth256 = resized_mask(truth)
        panels: list[tuple[str, dict | None]] = [("image", None), ("ground truth", None), ("zero-shot", {}),
                  (f"{row} mixture", results["sites"][name]["rows"][row]["weights"]), ("SFT (own LoRA)", {name: 1.0})]
        for col, (title, mix) in enumerate(panels):
            ax = axes[line][col]
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
