"""Training a LoRA on a labeled dataset: how users fill a database, and how the benchmark
makes its adapters and its SFT oracle.

The task is label-prompt classification (classify.py): the loss is cross-entropy of
scale * cos(text embedding, label-prompt embedding), both embedded by the adapted model,
so the adapter is the only thing that differs between domains. Training is seeded and
deterministic on CPU for a given machine; the adapter is saved in PEFT's format with the
base model's fingerprint in its safetensors metadata.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .adapter import FINGERPRINT_KEY, WEIGHTS_NAME
from .base import load_base
from .classify import DEFAULT_MAX_LENGTH, DEFAULT_SCALE, PromptClassifier
from .errors import LoradbError
from .represent import load_model

TRAINING_INFO = "loradb_training.json"


@dataclass(frozen=True)
class TrainConfig:
    """LoRA and optimiser settings; the defaults suit the packaged all-MiniLM-L6-v2."""

    r: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "key", "value")
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    max_length: int = DEFAULT_MAX_LENGTH
    scale: float = DEFAULT_SCALE
    max_examples: int | None = None  # use at most this many (a seeded sample) of the training set
    seed: int = 0

    def validate(self) -> "TrainConfig":
        for name in ("r", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise LoradbError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.alpha > 0:
            raise LoradbError("--lr and --alpha must be positive")
        if self.max_examples is not None and self.max_examples < 1:
            raise LoradbError(f"--max-examples must be at least 1, got {self.max_examples}")
        return self


@dataclass
class TrainResult:
    out: Path
    seconds: float
    examples: int
    losses: list[float] = field(default_factory=list)  # mean loss per epoch


def train_lora(base_path: str | os.PathLike, texts: list[str], labels: list[str], prompts: dict[str, str],
               out: str | os.PathLike, config: TrainConfig = TrainConfig(), *, progress: bool = True) -> TrainResult:
    """Train a LoRA for label-prompt classification and save it as a PEFT adapter.

    Args:
        base_path: local transformers model directory (the frozen base).
        texts, labels: the labeled training set (labels are keys of `prompts`).
        prompts: label -> prompt text.
        out: output directory (new or empty).
        config: LoRA and optimiser settings.
    Returns:
        TrainResult with the directory, wall-clock seconds and per-epoch losses.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LoradbError("training needs PEFT: `pip install 'loradb[eval]'`") from None

    from .export import atomic_output_dir

    config.validate()
    unknown = sorted(set(labels) - set(prompts))
    if unknown:
        raise LoradbError(f"labels {unknown} have no prompt; known labels: {sorted(prompts)}")
    if len(texts) != len(labels) or not texts:
        raise LoradbError("training needs at least one labeled example")
    started = time.perf_counter()
    base = load_base(base_path)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    order = list(range(len(texts)))
    if config.max_examples is not None and len(order) > config.max_examples:
        order = sorted(random.Random(config.seed).sample(order, config.max_examples))
    texts = [texts[i] for i in order]
    y_all = torch.tensor([list(prompts).index(labels[i]) for i in order])

    model, tokenizer = load_model(base.path)
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0,
                      bias="none", base_model_name_or_path=str(base.path))
    peft_model = get_peft_model(model, lora)
    clf = PromptClassifier(peft_model, tokenizer, prompts, scale=config.scale, max_length=config.max_length)
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = (len(texts) + config.batch_size - 1) // config.batch_size
    losses = []
    peft_model.train()
    with tqdm(total=config.epochs * steps_per_epoch, desc="train", unit="step", disable=None if progress else True,
              leave=False) as bar:
        for _ in range(config.epochs):
            perm = torch.randperm(len(texts), generator=generator).tolist()
            total = 0.0
            for i in range(0, len(perm), config.batch_size):
                idx = perm[i:i + config.batch_size]
                loss = torch.nn.functional.cross_entropy(clf.logits([texts[j] for j in idx]), y_all[idx])
                optim.zero_grad()
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            losses.append(total / len(texts))
    peft_model.eval()
    with atomic_output_dir(Path(out)) as tmp:
        peft_model.save_pretrained(tmp)
        _stamp_fingerprint(tmp / WEIGHTS_NAME, base.fingerprint)
        info = {"config": {**asdict(config), "targets": list(config.targets)}, "prompts": prompts,
                "examples": len(texts), "losses": losses, "seconds": time.perf_counter() - started,
                "base": base.name, "base_fingerprint": base.fingerprint}
        (tmp / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return TrainResult(out=Path(out), seconds=time.perf_counter() - started, examples=len(texts), losses=losses)


def _stamp_fingerprint(weights: Path, fingerprint: str) -> None:
    """Record the base model in the adapter's safetensors metadata (checked on `add`)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file(tensors, str(weights), metadata={"format": "pt", FINGERPRINT_KEY: fingerprint})
