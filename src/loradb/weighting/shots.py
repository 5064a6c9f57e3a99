"""Few-shot composition: reading the shots, and running a few-shot method's learner (see
registry.py) on the retrieved adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loradb.lora.adapter import LoraAdapter
from loradb.lora.base import BaseModel
from loradb.errors import LoradbError
from loradb.weighting.registry import FEW_SHOT, METHODS


def read_few_shot(method: str | None, shots, labels) -> tuple[list[str], list[str], dict] | None:
    """The shots and label prompts of a few-shot compose (None for other methods), refusing
    a few-shot method without shots and shots without a few-shot method."""
    if method in FEW_SHOT:
        if shots is None:
            raise LoradbError(f"`method` {method} learns weights from labeled examples: pass `shots` FILE.jsonl")
        return _read_shots(shots, labels)
    if shots is not None:
        raise LoradbError(f"`shots` goes with `method` {' or '.join(FEW_SHOT)}")
    return None


def learn_weights_on(method: str, adapters: list[LoraAdapter], init, shots: tuple, base_model: BaseModel) -> tuple[np.ndarray, dict]:
    """A few-shot method's weights for these adapters, starting from `init` (their zero-shot
    weights): (weights, what to record: the shot count and the final loss).

    Args:
        shots: (texts, labels, prompts) from read_few_shot.
        base_model: the local base model the classifier runs on.
    """
    from loradb.lora.compose import factors_of
    from loradb.models.classify import PromptClassifier
    from loradb.models.loading import load_model

    learner = METHODS[method].learner
    assert learner is not None, f"{method} is not a few-shot method"  # callers pass one of FEW_SHOT
    texts, labels, prompts = shots
    model, tokenizer = load_model(base_model.path)
    model.eval()
    classifier = PromptClassifier(model, tokenizer, prompts)
    learned = learner(classifier, [factors_of(a) for a in adapters], texts, labels, init=np.asarray(init, dtype=float))
    return learned.weights, {"shots": len(texts), "final_loss": learned.losses[-1] if learned.losses else None}


def _read_shots(shots, labels) -> tuple[list[str], list[str], dict]:
    """A few-shot file and the label prompts, refused when labels are unknown or too few."""
    from loradb.models.classify import default_prompts
    from loradb.io.data import read_labeled
    from loradb.models.prompts import read_prompts
    from loradb.weighting.learned import check_shots

    texts, shot_labels = read_labeled(shots)
    if labels is not None:
        prompts = read_prompts(Path(labels))
    else:
        prompts = default_prompts(sorted(set(shot_labels)))
    check_shots(shot_labels, prompts, str(shots))
    if len(prompts) < 2:
        raise LoradbError(f"{shots}: holds a single label; few-shot composition needs at least two")
    return texts, shot_labels, prompts
