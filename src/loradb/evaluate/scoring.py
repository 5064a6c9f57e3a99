"""Run a base model, alone and with adapters, on a dataset file: its predictions and their scores.

What `loradb predict` and `loradb score` do (and `loradb.predict` / `loradb.score` in Python).
The task follows the base model: an encoder is a label-prompt classifier (models/classify.py:
a text gets the label whose prompt embeds closest), scored by accuracy and macro-F1; a causal
LM generates greedily, scored by ROUGE (L, 1, 2); LiteMedSAM segments a folder of images
with masks/ beside them, scored by mean Dice (scored only: masks are not written yet). Every adapter is applied exactly
(theta0 + B A) to the one base model held in memory, as the benchmarks do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loradb.errors import DataError, LoradbError


@dataclass
class Scored:
    """One model's predictions on the file, and their scores (empty for unlabeled data)."""

    name: str  # "base", or the adapter as it was named
    predictions: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class ScoreReport:
    task: str  # "classification", "generation" or "segmentation"
    metrics: tuple[str, ...]
    examples: int
    rows: list[Scored]
    texts: list[str] = field(default_factory=list, repr=False)  # what the predictions are for, in order

    def to_dict(self) -> dict:
        return {"task": self.task, "metrics": list(self.metrics), "examples": self.examples,
                "rows": [{"name": r.name, "scores": r.scores, **({"note": r.note} if r.note else {})} for r in self.rows]}

    def table(self) -> str:
        """The rows side by side, each adapter's change over the base beside its score."""
        width = max(len(r.name) for r in self.rows)
        lines = [f"{self.task} on {self.examples} examples", " " * width + "".join(f"  {m:>16}" for m in self.metrics)]
        base = self.rows[0].scores
        for r in self.rows:
            cells = [f"{r.scores[m]:.4f}" + (f" ({r.scores[m] - base[m]:+.4f})" if r is not self.rows[0] else "")
                     for m in self.metrics]
            lines.append(f"{r.name:<{width}}" + "".join(f"  {c:>16}" for c in cells) + (f"  {r.note}" if r.note else ""))
        return "\n".join(lines)


@dataclass
class _Examples:
    texts: list[str]
    truth: list[str] | None  # None: unlabeled (predict only)


def _task_of(base) -> str:
    from loradb.models.generate import is_causal_lm
    from loradb.models.litemedsam import is_litemedsam

    if is_litemedsam(base.path):
        return "segmentation"
    return "generation" if is_causal_lm(base.config) else "classification"


def _read(data, task: str, labeled: bool, text_field: str | None, label_field: str | None) -> _Examples:
    from loradb.io.data import data_file, iter_texts, read_labeled, read_pairs

    text_default, label_default = ("input", "target") if task == "generation" else ("text", "label")
    if labeled:
        read = read_pairs if task == "generation" else read_labeled
        texts, truth = read(data, text_field or text_default, label_field or label_default)
        return _Examples(texts, truth)
    if label_field is not None:
        raise LoradbError("`label_field` names the labels of a file to score; predicting reads texts only")
    return _Examples(list(iter_texts(data_file(data, text_field))), None)  # default: "text", else a pairs file's "input"


def _prompts(labels_file, adapters: Sequence, truth: list[str] | None) -> dict[str, str]:
    """labels.json, else the label prompts an adapter was trained with, else "This text is LABEL."."""
    from loradb.models.classify import default_prompts
    from loradb.models.prompts import read_prompts, training_info

    needed = sorted(set(truth)) if truth is not None else None
    if labels_file is not None:
        return read_prompts(Path(labels_file), needed)
    for adapter in adapters:
        trained = (training_info(adapter) or {}).get("prompts")
        if isinstance(trained, dict) and trained and (needed is None or set(needed) <= set(trained)):
            return {str(k): str(v) for k, v in trained.items()}
    if needed is None:
        raise LoradbError("predicting labels needs their prompts: pass `labels` (labels.json), or an adapter "
                          "`loradb train` made, which records them")
    if len(needed) < 2:
        raise DataError(f"the file holds {len(needed)} label; a classifier needs at least two (or pass `labels`)")
    return default_prompts(needed)


def _instruction(instruction: str | None, adapters: Sequence) -> str:
    from loradb.models.prompts import DEFAULT_INSTRUCTION, adapter_instruction

    if instruction:
        return instruction
    for adapter in adapters:
        trained = adapter_instruction(adapter)
        if trained:
            return trained
    return DEFAULT_INSTRUCTION


def _runner(base, task: str, max_new_tokens: int):
    from loradb.evaluate.tasks import AdaptedClassifier, AdaptedGenerator
    from loradb.models.train import GENERATION_TRAIN, TrainConfig

    if task == "generation":
        return AdaptedGenerator(base.path, GENERATION_TRAIN, max_new_tokens)
    return AdaptedClassifier(base.path, TrainConfig())


def _delta(base, adapter) -> dict:
    from loradb.lora.adapter import read_adapter
    from loradb.lora.base import check_adapter_fits
    from loradb.lora.compose import compose_exact, factors_of

    lora = read_adapter(adapter)
    check_adapter_fits(base, lora, f"adapter {adapter}")
    return compose_exact([factors_of(lora)], [1.0])


def run_models(base: str | os.PathLike, data, *, adapters: Sequence[str | os.PathLike] = (), names: Sequence[str] | None = None,
               labeled: bool, labels: str | os.PathLike | None = None, instruction: str | None = None,
               text_field: str | None = None, label_field: str | None = None, max_new_tokens: int = 32,
               progress: bool = True, with_base: bool = True) -> ScoreReport:
    """The base model (unless with_base=False), then it with each adapter, on `data`:
    predictions, and scores when labeled."""
    from loradb.evaluate.domains import Domain
    from loradb.evaluate.tasks import ClassificationTask, GenerationTask
    from loradb.lora.base import load_base
    from loradb.models.packaged import resolve_base

    base_model = load_base(resolve_base(str(base)))
    task = _task_of(base_model)
    if task == "segmentation" and not labeled:
        raise LoradbError("predicting masks is not supported yet; `score` gives a segmentation model's Dice on a "
                          "folder of images with their masks/")
    if task != "segmentation":
        examples = _read(data, task, labeled, text_field, label_field)
    # (row name, delta) of every model to run; every adapter is checked before any model runs
    models = list(zip(["base", *(names or [str(a) for a in adapters])], [None, *(_delta(base_model, a) for a in adapters)]))
    models = models if with_base else models[1:]
    if task == "segmentation":
        return _score_segmentation(base_model, data, models)
    scorer = GenerationTask(max_new_tokens=max_new_tokens) if task == "generation" else ClassificationTask()
    domain = Domain(name=Path(data).stem, train_path=Path(data), train_texts=[], train_labels=[], test_texts=examples.texts,
                    test_labels=examples.truth or [],
                    prompts=_prompts(labels, adapters, examples.truth) if task == "classification" else None,
                    instruction=_instruction(instruction, adapters) if task == "generation" else None)
    model = _runner(base_model, task, max_new_tokens)
    rows = []
    for name, delta in models:
        model.set_delta(delta)
        predictions = model.predict(examples.texts, domain, progress=progress)
        metrics = scorer.score(examples.truth, predictions) if examples.truth is not None else {}
        rows.append(Scored(name, predictions, {m: metrics[m] for m in scorer.metrics if m in metrics}))
    metric_names = tuple(m for m in scorer.metrics if m in rows[0].scores)
    return ScoreReport(task, metric_names, len(examples.texts), rows, examples.texts)


def _score_segmentation(base_model, folder, models: list[tuple[str, dict | None]]) -> ScoreReport:
    """Mean Dice of the model's masks on a folder of images with masks/ beside them (box prompts
    from the true masks, as MedSAM evaluates), as `loradb eval --task segmentation` scores a site."""
    from loradb.evaluate.segmentation import SiteData
    from loradb.io.files import cache_dir
    from loradb.lora.inmemory import DeltaWeights
    from loradb.models.segment import mean_dice
    from loradb.retrieval.images import ImageEncoder, image_files

    paths = image_files(folder)
    missing = [p.name for p in paths if not (p.parent / "masks" / p.name).is_file()]
    if missing:
        raise DataError(f"{folder}: scoring needs each image's mask in masks/ beside it; {len(missing)} have none "
                        f"(e.g. masks/{missing[0]})")
    encoder = ImageEncoder(base_model.path, cache_dir())
    segmentations, _ = SiteData(encoder, cache_dir()).load(paths)
    weights = DeltaWeights(encoder.model)
    rows = []
    try:
        for name, delta in models:
            weights.set(delta)
            mean, per_image = mean_dice(encoder.model, segmentations)
            rows.append(Scored(name, [f"{d:.4f}" for d in per_image], {"dice": mean}))
    finally:
        weights.set(None)
    return ScoreReport("segmentation", ("dice",), len(paths), rows, [p.name for p in paths])


def score(base: str | os.PathLike, data, *, adapters: Sequence[str | os.PathLike] = (), **options) -> ScoreReport:
    """Score the base model and it with each adapter on a labeled file (.jsonl/.csv/.parquet:
    text and label for an encoder, input and target for a causal LM; other fields named with
    `text_field` / `label_field`). Options: labels (labels.json), instruction, max_new_tokens,
    names (one per adapter), progress. Returns a ScoreReport; its first row is the base model."""
    return run_models(base, data, adapters=adapters, labeled=True, **options)


def predict(base: str | os.PathLike, data, *, adapter: str | os.PathLike | None = None, **options) -> list[str]:
    """The base model's predictions (with `adapter`: the adapted model's) for each text of a
    file: a label (an encoder, with `labels` or the adapter's trained prompts) or a generated
    text (a causal LM)."""
    report = run_models(base, data, adapters=[adapter] if adapter is not None else [], labeled=False,
                        with_base=adapter is None, **options)
    return report.rows[0].predictions
