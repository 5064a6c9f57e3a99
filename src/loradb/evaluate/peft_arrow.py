"""PEFT's own Arrow (`peft.ArrowConfig`, `create_arrow_model`): per-token routing among LoRA
experts (Ostapenko et al., 2024), as a row of the library case, over the k adapters the
fold's key retrieves and over the whole library.

Each module routes every token to its top-k experts by the absolute cosine between the
token and each expert's prototype (the top right singular vector of its B·A), softmax over
those, and sums their LoRA outputs. Nothing is composed into one adapter: it is the
mixture-of-experts alternative to loradb's dataset-level weights, run by PEFT's code on a
fresh copy of the base model (the harness's own model keeps theta0 + delta for the others).
For generation every decoded token is routed as it is written.
The `arrow` row of the harness is the dataset-level stand-in (retrieval/arrow.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from loradb.evaluate.domains import Domain
from loradb.models.train import TrainConfig

TOP_K = 3  # ArrowConfig's default: experts per token


def peft_arrow_row(task, base_path: Path, held: Domain, adapter_dirs: dict[str, Path], train: TrainConfig, *,
                   seed: int, top_k: int = TOP_K) -> dict:
    """The held-out test set scored by the base model with PEFT's Arrow router over the named
    adapters, as every row of the task is (label prompts; or greedy outputs and the loss)."""
    from peft import ArrowConfig, create_arrow_model

    from loradb.models.loading import load_model

    names = sorted(adapter_dirs)
    model, tokenizer = load_model(base_path, causal=task.name == "generation")
    model.eval()
    with warnings.catch_warnings():  # PEFT warns about loading many adapters into one model; that is the point here
        warnings.simplefilter("ignore")
        routed = create_arrow_model(model, [str(adapter_dirs[n]) for n in names],
                                    ArrowConfig(top_k=min(top_k, len(names)), rng_seed=seed))
    routed.eval()
    return {**task.evaluate(_runner(task, routed, tokenizer, train), held, False), "experts": names,
            "top_k": min(top_k, len(names))}


def _runner(task, routed, tokenizer, train: TrainConfig):
    """The routed model behind the predict (and nll) the task's evaluate calls."""
    from loradb.evaluate.tasks import ClassifierRunner, GenerationRunner
    from loradb.models.generate import Generator

    if task.name == "generation":
        return GenerationRunner(Generator(routed, tokenizer, "", max_input_tokens=train.max_length,
                                          max_new_tokens=task.max_new_tokens), train.max_length)
    return ClassifierRunner(routed, tokenizer, train)
