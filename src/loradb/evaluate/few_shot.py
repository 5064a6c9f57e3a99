"""Few-shot rows of a fold: each registered few-shot method, and a LoRA trained from scratch,
on shots drawn from the held-out domain's training split."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from loradb.lora.adapter import read_adapter
from loradb.lora.compose import compose_exact, factors_of
from loradb.models.train import TrainConfig, train_lora
from loradb.weighting.registry import FEW_SHOT, get_method
from loradb.evaluate.domains import Domain
from loradb.evaluate.config import EvalConfig
from loradb.evaluate.fold import evaluate_on
from loradb.evaluate.tasks import ClassificationTask

TASK = ClassificationTask()  # few-shot rows are classification only (scores and per-example scores, as every row)


def few_shot_sample(domain: Domain, per_label: int, seed: int) -> tuple[list[str], list[str]]:
    """`per_label` labeled examples of each label from the domain's training split (seeded)."""
    rng = random.Random(f"{seed}-{per_label}")
    texts, labels = [], []
    for label in sorted(set(domain.train_labels)):
        idx = [i for i, y in enumerate(domain.train_labels) if y == label]
        for i in sorted(rng.sample(idx, min(per_label, len(idx)))):
            texts.append(domain.train_texts[i])
            labels.append(label)
    return texts, labels


def scratch_config(config: EvalConfig, shots: int) -> TrainConfig:
    """The LoRA from scratch on the shots: the pool's settings, many passes, every shot trained
    on (a few shots leave nothing to hold out for early stopping, so none is)."""
    assert config.train is not None  # resolved by the harness
    return replace(config.train, epochs=config.scratch_epochs, batch_size=min(8, shots), max_examples=None, validation=0.0)


def few_shot_rows(held: Domain, row: dict, db, model, base_path: Path, config: EvalConfig, work: Path, log) -> dict:
    """A row per few-shot method of the registry (and scratch) for each shot count, on the
    held-out test set.

    Each learner starts from the weights of its `starts_from` row (the retrieved adapters
    and their zero-shot weights); the shots come from the held-out domain's training
    split, never its test set.
    """
    assert config.train is not None and held.prompts is not None  # resolved by the harness; a classification domain
    adapters = {n: factors_of(db.load_adapter(db.get(n)))
                for n in {n for method in FEW_SHOT for n in row[get_method(method).starts_from]["weights"]}}
    out = {}
    for n in config.shots:
        texts, labels = few_shot_sample(held, n, config.seed)
        model.set_delta(None)
        entry = {}
        for method in FEW_SHOT:
            m = get_method(method)
            assert m.learner is not None  # a few-shot method
            budget = {m.budget[0]: config.learner_budgets.get(method, m.budget[1])} if m.budget else {}
            start = row[m.starts_from]["weights"]
            names = list(start)
            factors = [adapters[n] for n in names]
            init = np.array([start[n] for n in names])
            t0 = time.perf_counter()
            learned = m.learner(model.classifier(held), factors, texts, labels, init=init, **budget)
            composed = compose_exact(factors, list(learned.weights))
            seconds = time.perf_counter() - t0
            model.set_delta(composed)
            entry[method] = {**evaluate_on(TASK, model, held, False), "seconds": seconds,
                             "weights": dict(zip(names, map(float, learned.weights)))}
            model.set_delta(None)
        scratch_cfg = scratch_config(config, len(texts))
        t0 = time.perf_counter()
        scratch_dir = work / f"scratch-{n}"
        if scratch_dir.exists():
            shutil.rmtree(scratch_dir)
        train_lora(base_path, texts, labels, held.prompts, scratch_dir, scratch_cfg, progress=False)
        seconds = time.perf_counter() - t0
        model.set_delta(compose_exact([factors_of(read_adapter(scratch_dir))], [1.0]))
        entry["scratch"] = {**evaluate_on(TASK, model, held, False), "seconds": seconds}
        model.set_delta(None)
        out[str(n)] = entry
        log(f"  {n} shots per label: " + "  ".join(f"{m} {e['accuracy']:.3f}" for m, e in entry.items()))
    return out

