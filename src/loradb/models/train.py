"""Training a LoRA: how users fill a database, and how the benchmark makes its adapters and
its SFT oracle. Two tasks:

- classification (encoders): label-prompt classification (classify.py), the loss is
  cross-entropy of scale * cos(text embedding, label-prompt embedding), both embedded by
  the adapted model, so the adapter is the only thing that differs between domains;
- generation (causal LMs): the next-token loss on the target text of (input -> target)
  pairs, prompted as generate.py prompts at inference.

Training is seeded and deterministic on CPU for a given machine; the adapter is saved in PEFT's format with the
base model's fingerprint in its safetensors metadata.
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loradb.lora.adapter import FINGERPRINT_KEY, WEIGHTS_NAME
from loradb.lora.base import load_base
from loradb.models.classify import DEFAULT_MAX_LENGTH, DEFAULT_SCALE, PromptClassifier
from loradb.errors import LoradbError
from loradb.models.prompts import DEFAULT_INSTRUCTION, TRAINING_INFO
from loradb.models.loading import load_model

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
    # early stopping: this share of the training examples (a seeded sample) is held out; after
    # every epoch the adapter is scored on it, training stops once `patience` epochs in a row
    # bring no improvement, and the best epoch's weights are kept (`epochs` is then the budget).
    # 0 trains for `epochs` on every example, as before.
    validation: float = 0.0
    patience: int = 2

    def validate(self) -> "TrainConfig":
        for name in ("r", "epochs", "batch_size", "max_length", "patience"):
            if getattr(self, name) < 1:
                raise LoradbError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.validation < 0.5:
            raise LoradbError(f"--validation is the share of the training examples held out, in [0, 0.5); got {self.validation}")
        if not self.lr > 0 or not self.alpha > 0:
            raise LoradbError("`lr` and `alpha` must be positive")
        if self.max_examples is not None and self.max_examples < 1:
            raise LoradbError(f"`max_examples` must be at least 1, got {self.max_examples}")
        return self


# the causal-LM defaults: attention projections of Llama-style decoders (SmolLM2), few
# passes, small batches; max_length bounds the input's tokens (the target is bounded apart)
GENERATION_TRAIN = TrainConfig(targets=("q_proj", "k_proj", "v_proj", "o_proj"), epochs=2, lr=1e-3, batch_size=8,
                               max_length=128)


@dataclass
class TrainResult:
    out: Path
    seconds: float
    examples: int
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    validation: dict | None = None  # early stopping's record (see _fit), when config.validation > 0


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
    import torch

    config.validate()
    unknown = sorted(set(labels) - set(prompts))
    if unknown:
        raise LoradbError(f"label(s) {', '.join(map(repr, unknown[:5]))}{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''} "
                          f"of the training data have no prompt (of {len(prompts)} given)")
    if len(texts) != len(labels) or not texts:
        raise LoradbError("training needs at least one labeled example")
    started = time.perf_counter()
    base = load_base(base_path)
    order, held = _split_validation(_seeded_order(len(texts), config), config)
    label_ids = list(prompts)
    val_texts, val_y = [texts[i] for i in held], np.array([label_ids.index(labels[i]) for i in held])
    texts = [texts[i] for i in order]
    y_all = torch.tensor([label_ids.index(labels[i]) for i in order])

    model, tokenizer = load_model(base.path)
    peft_model = _peft(model, base, config, task_type=None)
    clf = PromptClassifier(peft_model, tokenizer, prompts, scale=config.scale, max_length=config.max_length)
    score = (lambda: float(np.mean(clf.predict(val_texts) == val_y))) if held else None
    losses, validation = _fit(peft_model, len(texts), config, progress,
                              lambda idx: torch.nn.functional.cross_entropy(clf.logits([texts[j] for j in idx]), y_all[idx]),
                              score=score, metric="accuracy", held_out=len(held))
    _save(peft_model, out, base, {"task": "classification", "prompts": prompts}, config, len(texts), losses, started,
          validation)
    return TrainResult(out=Path(out), seconds=time.perf_counter() - started, examples=len(texts), losses=losses,
                       validation=validation)


def train_causal_lora(base_path: str | os.PathLike, inputs: list[str], targets: list[str], out: str | os.PathLike,
                      config: TrainConfig = GENERATION_TRAIN, *, instruction: str = DEFAULT_INSTRUCTION,
                      progress: bool = True) -> TrainResult:
    """Train a LoRA on (input -> target) pairs with the next-token loss of a causal LM.

    The loss covers only the target's tokens and the end token, so the adapter learns
    what to write, not to echo the prompt. The prompt is built as `generate.PromptFormat`
    builds it at generation time.

    Args:
        base_path: local transformers causal LM directory (the frozen base).
        inputs, targets: the training pairs.
        out: output directory (new or empty).
        config: LoRA and optimiser settings; max_length bounds the input's tokens.
        instruction: the task's instruction, put in front of every input.
    """
    import torch

    from loradb.models.generate import PromptFormat, load_causal_lm, padded_pairs

    config.validate()
    if len(inputs) != len(targets) or not inputs:
        raise LoradbError("training needs at least one (input, target) pair")
    started = time.perf_counter()
    base = load_base(base_path)
    order, held = _split_validation(_seeded_order(len(inputs), config), config)
    model, tokenizer = load_causal_lm(base.path)
    fmt = PromptFormat(tokenizer, instruction, max_input_tokens=config.max_length)
    encoded = [fmt.training_ids(inputs[i], targets[i]) for i in order]
    val_encoded = [fmt.training_ids(inputs[i], targets[i]) for i in held]
    peft_model = _peft(model, base, config, task_type="CAUSAL_LM")

    def batch_loss(idx, pairs=encoded):
        input_ids, mask, label_ids = padded_pairs([pairs[j] for j in idx], fmt.pad_id)
        return peft_model(input_ids=input_ids, attention_mask=mask, labels=label_ids).loss

    def score() -> float:  # minus the mean teacher-forced loss of the held-out targets: higher is better
        with torch.no_grad():
            batches = [list(range(i, min(i + config.batch_size, len(val_encoded))))
                       for i in range(0, len(val_encoded), config.batch_size)]
            return -sum(batch_loss(b, val_encoded).item() * len(b) for b in batches) / len(val_encoded)

    losses, validation = _fit(peft_model, len(encoded), config, progress, batch_loss, score=score if held else None,
                              metric="-loss", held_out=len(held))
    _save(peft_model, out, base, {"task": "generation", "instruction": instruction}, config, len(encoded), losses, started,
          validation)
    return TrainResult(out=Path(out), seconds=time.perf_counter() - started, examples=len(encoded), losses=losses,
                       validation=validation)


def _seeded_order(n: int, config: TrainConfig) -> list[int]:
    """Seed every generator training touches; the examples used (a seeded sample if capped)."""
    import numpy as np
    import torch

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    order = list(range(n))
    if config.max_examples is not None and n > config.max_examples:
        order = sorted(random.Random(config.seed).sample(order, config.max_examples))
    return order


MIN_VALIDATION = 10  # held-out examples below which a validation score means nothing


def _split_validation(order: list[int], config: TrainConfig) -> tuple[list[int], list[int]]:
    """(training, held-out) indices: a seeded sample of config.validation of the examples held out."""
    if config.validation == 0:
        return order, []
    n_held = round(config.validation * len(order))
    if n_held < MIN_VALIDATION or len(order) - n_held < 1:
        raise LoradbError(f"--validation {config.validation:g} of {len(order)} examples holds out {n_held}; "
                          f"early stopping needs at least {MIN_VALIDATION} (more data, or --validation 0)")
    held = set(random.Random(f"validation-{config.seed}").sample(order, n_held))
    return [i for i in order if i not in held], [i for i in order if i in held]


def _peft(model, base, config: TrainConfig, task_type: str | None):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise LoradbError("training needs PEFT: `pip install 'loradb[eval]'`") from None
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in config.targets if not any(n == t or n.endswith("." + t) for n in names)]  # PEFT's own rule
    if missing:
        raise LoradbError(f"`targets` {','.join(missing)}: no such module in {base.path}; "
                          f"linear layers there include {', '.join(sorted(_linear_names(model))[:12])}")
    # ignored: PEFT annotates lora_alpha as int but takes any number (its scaling is alpha / r)
    # PEFT takes the model's own path here whatever it is told (and warns when renaming); _save
    # writes the portable name into the saved config
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0,  # type: ignore[arg-type]
                      bias="none", base_model_name_or_path=str(base.path), task_type=task_type)
    return get_peft_model(model, lora)


def _linear_names(model) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def _fit(peft_model, n: int, config: TrainConfig, progress: bool, batch_loss, *, score=None, metric: str = "",
         held_out: int = 0) -> tuple[list[float], dict | None]:
    """AdamW over shuffled batches; (mean loss of each epoch, the early-stopping record or None).

    With `score` (the adapter's score on the held-out examples, higher is better) the base
    model is scored first (the LoRA starts as a no-op), then the adapter after every epoch;
    training stops after config.patience epochs without improvement and the best weights are
    restored, the base's own (all-zero update) when no epoch beats it, so the adapter is never
    worse than the base on held-out data.
    """
    import torch
    from tqdm.auto import tqdm

    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    losses: list[float] = []
    scores: list[float] = []
    if score is not None:
        peft_model.eval()
        scores.append(score())
        best, best_epoch, kept = scores[0], 0, [p.detach().clone() for p in trainable]
    with tqdm(total=config.epochs * steps_per_epoch, desc="train", unit="step", disable=None if progress else True,
              leave=False) as bar:
        for epoch in range(1, config.epochs + 1):
            peft_model.train()
            perm = torch.randperm(n, generator=generator).tolist()
            total = 0.0
            for i in range(0, n, config.batch_size):
                idx = perm[i:i + config.batch_size]
                loss = batch_loss(idx)
                optim.zero_grad()
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            losses.append(total / n)
            if score is None:
                continue
            peft_model.eval()
            scores.append(score())
            if scores[-1] > best:
                best, best_epoch, kept = scores[-1], epoch, [p.detach().clone() for p in trainable]
            elif epoch - best_epoch >= config.patience:
                break
    peft_model.eval()
    if score is None:
        return losses, None
    with torch.no_grad():
        for p, value in zip(trainable, kept):
            p.copy_(value)
    return losses, {"metric": metric, "examples": held_out, "base": scores[0], "best": best, "gain": best - scores[0],
                    "best_epoch": best_epoch, "epochs_run": len(losses), "scores": scores}


def _save(peft_model, out, base, task_info: dict, config: TrainConfig, examples: int, losses: list[float],
          started: float, validation: dict | None = None) -> None:
    """The PEFT adapter, stamped with the base's fingerprint, and what made it, written atomically."""
    from loradb.io.files import atomic_output_dir

    with atomic_output_dir(Path(out)) as tmp:
        peft_model.save_pretrained(tmp)
        _stamp_fingerprint(tmp / WEIGHTS_NAME, base.fingerprint)
        config_file = tmp / "adapter_config.json"  # PEFT writes the model's local path; the portable name travels
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": base.name},
                                          indent=2) + "\n")
        info = {**task_info, "config": {**asdict(config), "targets": list(config.targets)},
                "examples": examples, "losses": losses, "seconds": time.perf_counter() - started,
                "base": base.name, "base_fingerprint": base.fingerprint,
                **({"validation": validation} if validation is not None else {})}
        (tmp / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _stamp_fingerprint(weights: Path, fingerprint: str) -> None:
    """Record the base model in the adapter's safetensors metadata (checked on `add`)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file(tensors, str(weights), metadata={"format": "pt", FINGERPRINT_KEY: fingerprint})


