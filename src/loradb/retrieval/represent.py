"""Dataset -> representation z(D): the mean of the frozen base model's features.

z(D) = (1/|D|) sum_x pool(hidden_states[layer](x)), pooled over non-padding tokens.
The recipe (base model fingerprint, tokenizer, layer, pooling, max length) is the
representation *space*; vectors from different spaces are never compared. Texts are
streamed in batches and summed in float64, so memory does not grow with the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from itertools import islice
from pathlib import Path

import numpy as np

from loradb.lora.base import BaseModel, load_base
from loradb.errors import LoradbError, parse_choice
from loradb.models.loading import load_model
from loradb.retrieval.privacy import DPConfig

DEFAULT_LAYER = -1
DEFAULT_MAX_LENGTH = 256
DEFAULT_BATCH_SIZE = 32
SIDECAR_SUFFIX = ".json"  # z.npy -> z.npy.json holds the space and sample count


class Pooling(str, Enum):
    """How token features become one vector per example."""

    MEAN = "mean"  # average over non-padding tokens (the paper's choice)
    CLS = "cls"  # first token
    LAST = "last"  # last non-padding token (natural for causal LMs)


def parse_pooling(name: str) -> Pooling:
    return parse_choice(Pooling, name, "pooling")

@dataclass(frozen=True)
class Space:
    """A representation space: vectors are comparable only within one."""

    base_fingerprint: str
    tokenizer: str
    layer: int
    pooling: str
    max_length: int
    dim: int

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"id": self.id, **asdict(self)}

    def check(self) -> None:
        """Refuse a description with wrong types or values (it may come from a file or a request)."""
        def whole(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for key in ("base_fingerprint", "tokenizer"):
            value = getattr(self, key)
            if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
                raise LoradbError(f"malformed representation space: {key} must be a sha256 hex digest")
        if not (whole(self.layer) and self.layer >= 0 and whole(self.max_length) and self.max_length >= 1
                and whole(self.dim) and self.dim >= 1):
            raise LoradbError("malformed representation space: layer, max_length and dim must be whole numbers (layer >= 0, others >= 1)")
        parse_pooling(str(self.pooling))

    @classmethod
    def from_dict(cls, d: dict) -> "Space":
        try:
            space = cls(**{k: d[k] for k in ("base_fingerprint", "tokenizer", "layer", "pooling", "max_length", "dim")})
        except (KeyError, TypeError) as e:
            raise LoradbError(f"malformed representation space description ({e})") from None
        space.check()
        if "id" in d and d["id"] != space.id:
            raise LoradbError(f"representation space id {d['id']} does not match its recipe; the file was edited or corrupted")
        return space


def default_space(base: BaseModel, *, layer: int = DEFAULT_LAYER, pooling: str = Pooling.MEAN.value,
                  max_length: int = DEFAULT_MAX_LENGTH) -> Space:
    """The space a bare vector for `base` is assumed to live in (needs the config's hidden size)."""
    if not base.hidden_size:
        raise LoradbError(f"cannot tell the feature size of base model {base.short}; make the vector with `loradb represent`")
    if not base.num_layers:
        raise LoradbError(f"cannot tell how many layers base model {base.short} has; make the vector with `loradb represent`")
    n_states = base.num_layers + 1
    if not -n_states <= layer < n_states:
        raise LoradbError(f"layer {layer} does not exist: {base.path} has hidden states 0..{n_states - 1} (or -1 for the last)")
    layer = layer if layer >= 0 else n_states + layer
    return Space(base.fingerprint, base.tokenizer_hash, layer, parse_pooling(pooling).value, max_length, int(base.hidden_size))


@dataclass
class Representation:
    """A dataset's mean feature vector, with the space it lives in."""

    z: np.ndarray  # (dim,), float32
    space: Space
    base_name: str
    n_samples: int | None = None
    privacy: dict | None = None  # set when z was released with differential privacy (privacy.py)
    var: np.ndarray | None = None  # (dim,) per-feature variance of the examples' features (keys.py); None under DP
    task: dict | None = None  # {"prompts": [...]} or {"instruction": ...}: the task the data is for (keys.py)
    task_z: np.ndarray | None = None  # (dim,) mean embedding of the task's prompts or instruction, same recipe

    def with_task(self, encoder: "Encoder", task: dict | None) -> "Representation":
        """This representation with the task key of `task` (see task_spec) computed by `encoder`."""
        if task is None:
            return self
        if encoder.space.id != self.space.id:
            raise LoradbError("the task key must be computed in the representation's own space")
        return replace(self, task=task, task_z=encoder.represent(task_texts(task), progress=False).z)


def task_spec(*, prompts: dict | list | None = None, instruction: str | None = None) -> dict | None:
    """The task a dataset is for, as stored with a record: its label prompts or its instruction."""
    if prompts is not None and instruction is not None:
        raise LoradbError("give the task's label prompts or its instruction, not both")
    if prompts is not None:
        if not isinstance(prompts, (dict, list, tuple)):
            raise LoradbError("the task's label prompts must be a list of strings or a {label: prompt} mapping")
        texts = list(prompts.values()) if isinstance(prompts, dict) else list(prompts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise LoradbError("the task's label prompts must be non-empty strings")
        return {"prompts": sorted(texts)}
    if instruction is not None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise LoradbError("the task's instruction must be a non-empty string")
        return {"instruction": instruction}
    return None


def as_task(task: dict | None) -> dict | None:
    """A task given as {"prompts": [...] or {label: prompt}} or {"instruction": ...}, in the
    one form records store (task_spec); None stays None."""
    if task is None:
        return None
    if not isinstance(task, dict) or len(task) != 1 or not set(task) <= {"prompts", "instruction"}:
        raise LoradbError('a task is {"prompts": [...]} or {"instruction": "..."}')
    return task_spec(**task)


def task_texts(task: dict) -> list[str]:
    """The texts whose mean embedding is the task key."""
    return list(task["prompts"]) if "prompts" in task else [task["instruction"]]


def _batches(texts: Iterable[str], size: int, buffer: int = 2048) -> Iterator[list[str]]:
    """Batches of similar length (sorted inside a bounded buffer) to waste less padding."""
    it = iter(texts)
    while chunk := list(islice(it, buffer)):
        chunk.sort(key=len)
        for i in range(0, len(chunk), size):
            yield chunk[i:i + size]


class Encoder:
    """The frozen base model as a feature extractor (loaded once, reused)."""

    def __init__(self, base_path: str | os.PathLike, *, layer: int = DEFAULT_LAYER, pooling: str = "mean",
                 max_length: int = DEFAULT_MAX_LENGTH):
        self.base = load_base(base_path)
        self.pooling = parse_pooling(pooling)
        if max_length < 1:
            raise LoradbError(f"max length must be at least 1, got {max_length}")
        self.max_length = max_length
        self.model, self.tokenizer = load_model(self.base.path)
        self.model.eval()
        self.tokenizer.padding_side = "right"
        n_states = self.model.config.num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise LoradbError(f"layer {layer} does not exist: {self.base.path} has hidden states 0..{n_states - 1} (or -1 for the last)")
        self.layer = layer if layer >= 0 else n_states + layer  # stored normalised so -1 and L name one space
        self.space = Space(self.base.fingerprint, self.base.tokenizer_hash, self.layer, self.pooling.value,
                           max_length, int(self.model.config.hidden_size))

    def features(self, texts: list[str]):
        """Pooled features of a batch of texts: a (batch, dim) float32 torch tensor."""
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**enc, output_hidden_states=True)
        h = out.hidden_states[self.layer]
        mask = enc["attention_mask"].to(h.dtype).unsqueeze(-1)
        if self.pooling is Pooling.MEAN:
            return (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.pooling is Pooling.CLS:
            return h[:, 0]
        last = enc["attention_mask"].sum(1) - 1
        return h[torch.arange(h.shape[0]), last]

    def represent(self, texts: Iterable[str], *, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                  desc: str = "represent", dp: DPConfig | None = None) -> Representation:
        """Mean pooled feature over all texts (streamed, float64 accumulation).

        With dp (a privacy.DPConfig) each example's feature is clipped to norm dp.clip and
        the mean is released with Gaussian noise; the guarantee is in the result's privacy.
        """
        import torch
        from tqdm.auto import tqdm

        total = torch.zeros(self.space.dim, dtype=torch.float64)
        squares = torch.zeros(self.space.dim, dtype=torch.float64)  # for the per-feature variance
        n = 0
        with tqdm(desc=desc, unit="ex", disable=None if progress else True, leave=False) as bar:  # None: off when not a terminal
            for batch in _batches(texts, batch_size):
                feats = self.features(batch).to(torch.float64)
                if dp is not None:
                    from loradb.retrieval.privacy import clip_rows

                    feats = torch.from_numpy(clip_rows(feats.numpy(), dp.clip))
                total += feats.sum(0)
                squares += (feats * feats).sum(0)
                n += len(batch)
                bar.update(len(batch))
        if n == 0:
            raise LoradbError("the dataset holds no examples")
        if dp is not None:
            from loradb.retrieval.privacy import privatize_mean

            z, privacy = privatize_mean(total.numpy(), n, dp)
            return Representation(z=z, space=self.space, base_name=self.base.name, n_samples=n, privacy=privacy)
        mean = total / n
        var = (squares / n - mean * mean).clamp(min=0.0)  # not released under DP: it is computed from raw features
        return Representation(z=mean.numpy().astype(np.float32), space=self.space, base_name=self.base.name, n_samples=n,
                              var=var.numpy().astype(np.float32))


def represent_texts(base_path: str | os.PathLike, texts: Iterable[str], *, layer: int = DEFAULT_LAYER, pooling: str = "mean",
              max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
              dp: DPConfig | None = None, task: dict | None = None) -> Representation:
    """z(D) for a stream of texts under the frozen base model at `base_path`.

    Args:
        base_path: local transformers model directory.
        texts: the dataset's examples (any iterable; consumed once).
        layer: hidden-state index (0 = embeddings, -1 = last layer).
        pooling: mean | cls | last.
        max_length: tokens kept per example.
        batch_size: examples per forward pass.
        dp: a privacy.DPConfig to release z with differential privacy (None: the exact mean).
        task: the task the data is for (task_spec); its key is computed with the same encoder.
    Returns:
        The representation and the space it lives in.
    """
    encoder = Encoder(base_path, layer=layer, pooling=pooling, max_length=max_length)
    rep = encoder.represent(texts, batch_size=batch_size, progress=progress, dp=dp)
    return rep.with_task(encoder, task)


REPRESENTATION_FORMAT = "loradb.representation.v1"
# every field a representation's description (.npy.json sidecar, or the wire document without z) may hold
REPRESENTATION_FIELDS = frozenset({"format", "base", "n_samples", "space", "privacy", "var", "task", "task_z"})
SPACE_FIELDS = frozenset({"id", *(f.name for f in fields(Space))})  # what Space.to_dict writes


def save_representation(rep: Representation, path: str | os.PathLike) -> Path:
    """Write z as a float32 .npy and its space to a .npy.json sidecar (both atomically)."""
    out = Path(path)
    if out.suffix != ".npy":
        raise LoradbError(f"{out}: a representation is saved as a .npy file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, rep.z.astype(np.float32))
    os.replace(tmp, out)
    tmp = out.with_name(out.name + SIDECAR_SUFFIX + ".tmp")
    tmp.write_text(json.dumps(description(rep), indent=2) + "\n")
    os.replace(tmp, out.with_name(out.name + SIDECAR_SUFFIX))
    return out


def description(rep: Representation) -> dict:
    """What describes z: the .npy.json sidecar, and the wire document without z."""
    return {"format": REPRESENTATION_FORMAT, "base": rep.base_name, "n_samples": rep.n_samples, "space": rep.space.to_dict(),
            **key_fields(rep)}


def key_fields(rep: Representation) -> dict:
    """The optional parts of a representation's description (sidecar, wire): privacy and key data."""
    doc: dict = {}
    if rep.privacy is not None:
        doc["privacy"] = rep.privacy
    if rep.var is not None:
        doc["var"] = [float(x) for x in rep.var]
    if rep.task is not None and rep.task_z is not None:  # they come together (with_task, targets.py)
        doc["task"] = rep.task
        doc["task_z"] = [float(x) for x in rep.task_z]
    return doc


def load_vector(path: str | os.PathLike) -> tuple[np.ndarray, dict | None]:
    """Read a representation vector (never unpickling) and its sidecar if there is one.

    Returns:
        (z as float32 (dim,), sidecar dict or None).
    """
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise LoradbError(f"{p}: no such file") from None
    except (OSError, ValueError) as e:
        raise LoradbError(f"{p}: not a numpy .npy vector ({e}); make one with `loradb represent`") from None
    if not np.issubdtype(z.dtype, np.floating):
        raise LoradbError(f"{p}: holds {z.dtype} values; a representation is a float vector")
    if z.ndim == 2 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 1 or z.size == 0:
        raise LoradbError(f"{p}: holds an array of shape {z.shape}; a representation is one vector")
    if not np.isfinite(z).all():
        raise LoradbError(f"{p}: contains NaN or infinite values")
    side_path = p.with_name(p.name + SIDECAR_SUFFIX)
    side = None
    if side_path.is_file():
        try:
            side = json.loads(side_path.read_text())
        except ValueError as e:
            raise LoradbError(f"{side_path}: not valid JSON ({e})") from None
    return z.astype(np.float32), side
