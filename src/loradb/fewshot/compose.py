"""Few-shot composition: weights learned from a handful of labeled target examples
(learned: softmax weights by gradient; lorahub: LoraHub-style Powell search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loradb.lora.adapter import LoraAdapter
from loradb.lora.base import BaseModel
from loradb.errors import LoradbError

FEW_SHOT_METHODS = ("learned", "lorahub")


def read_few_shot(method: str | None, shots, labels) -> tuple[list[str], list[str], dict] | None:
    """The shots and label prompts of a few-shot compose (None for other methods), refusing
    a few-shot method without shots and shots without a few-shot method."""
    if method in FEW_SHOT_METHODS:
        if shots is None:
            raise LoradbError(f"--method {method} learns weights from labeled examples: pass --shots FILE.jsonl")
        return _read_shots(shots, labels)
    if shots is not None:
        raise LoradbError("--shots goes with --method learned or lorahub")
    return None


def learn_hit_weights(result, adapters: list[LoraAdapter], method: str, shots: tuple, base_model: BaseModel) -> None:
    """Replace the retrieval weights of the hits (whose adapters are given, in order) by
    few-shot learned ones (learned: softmax by gradient; lorahub: Powell), in place.

    Args:
        shots: (texts, labels, prompts) from read_few_shot.
        base_model: the local base model the classifier runs on.
    """
    from loradb.models.classify import PromptClassifier
    from loradb.lora.compose import factors_of
    from loradb.fewshot.learn import learn_weights, lorahub_weights
    from loradb.models.loading import load_model

    texts, labels, prompts = shots
    model, tokenizer = load_model(base_model.path)
    model.eval()
    classifier = PromptClassifier(model, tokenizer, prompts)
    factors = [factors_of(a) for a in adapters]
    init = np.array([h.weight for h in result.hits])
    fn = learn_weights if method == "learned" else lorahub_weights
    learned = fn(classifier, factors, texts, labels, init=init)
    for h, w in zip(result.hits, learned.weights):
        h.weight = float(w)
    result.method = method
    result.params = {**result.params, "shots": len(texts), "final_loss": learned.losses[-1] if learned.losses else None}


def _read_shots(shots, labels) -> tuple[list[str], list[str], dict]:
    """A few-shot file and the label prompts, refused when labels are unknown or too few."""
    from loradb.models.classify import default_prompts
    from loradb.io.data import read_labeled
    from loradb.models.prompts import read_prompts
    from loradb.fewshot.learn import check_shots

    texts, shot_labels = read_labeled(shots)
    if labels is not None:
        prompts = read_prompts(Path(labels))
    else:
        prompts = default_prompts(sorted(set(shot_labels)))
    check_shots(shot_labels, prompts, str(shots))
    if len(prompts) < 2:
        raise LoradbError(f"{shots}: holds a single label; few-shot composition needs at least two")
    return texts, shot_labels, prompts
