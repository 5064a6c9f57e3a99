"""Writing a composed adapter to disk: as a PEFT adapter directory, or merged into a copy
of the base model. Output goes to a temporary sibling directory that is renamed into
place at the end, so an interrupted compose never leaves a half-written --out.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .adapter import FINGERPRINT_KEY, LoraAdapter, LoraModule, write_adapter
from .base import BaseModel, resolve_module
from .errors import LoradbError

PROVENANCE_NAME = "loradb_compose.json"


@contextmanager
def atomic_output_dir(out: Path):
    """Yield a temp directory that becomes `out` only if the body finishes."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LoradbError(f"{out} already exists and is not empty; remove it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def replaced_dir(out: Path):
    """Yield a temp directory that replaces `out` (any earlier one) only if the body finishes:
    how caches are built, so a crash never leaves half an entry that later looks complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a file whole or not at all (a crash leaves the old file or none, never half)."""
    path = Path(path)
    if path.is_dir():
        raise LoradbError(f"{path} is a directory; --out takes a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_composed_adapter(out: Path, composed: dict, *, fan_in_fan_out: bool, base: BaseModel, task_type: str | None,
                           provenance: dict) -> Path:
    """Write unit-scale stacked factors (module -> (A, B) torch tensors) as a PEFT adapter."""
    modules = {name: LoraModule(A=A.numpy(), B=B.numpy(), scale=1.0) for name, (A, B) in composed.items()}
    adapter = LoraAdapter(modules=modules, fan_in_fan_out=fan_in_fan_out, base_model_name_or_path=base.name, task_type=task_type)
    with atomic_output_dir(out) as tmp:
        write_adapter(tmp, adapter, metadata={FINGERPRINT_KEY: base.fingerprint})
        (tmp / PROVENANCE_NAME).write_text(to_json(provenance) + "\n")
    return Path(out)


def write_merged_model(out: Path, composed: dict, *, fan_in_fan_out: bool, base: BaseModel, provenance: dict) -> Path:
    """Write a copy of the base model with W += B @ A added to each composed module.

    Each weight file is loaded, updated one module at a time (the only place a dense
    delta exists) and saved in the base's own dtype; other files are copied unchanged.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from .compose import dense_delta

    targets = {}
    for name in composed:
        key = resolve_module(base, name)
        if key is None:
            raise LoradbError(f"module {name!r} does not exist in base model {base.short}")
        targets[key] = name
    with atomic_output_dir(out) as tmp:
        for item in base.path.iterdir():
            if item.suffix == ".safetensors":
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        for wf in sorted(base.path.glob("*.safetensors")):
            tensors = load_file(wf)
            for key in set(tensors) & set(targets):
                A, B = composed[targets[key]]
                w = tensors[key]
                tensors[key] = (w.to(torch.float32) + dense_delta(A, B, fan_in_fan_out=fan_in_fan_out)).to(w.dtype)
            save_file(tensors, str(tmp / wf.name), metadata={"format": "pt"})
        (tmp / PROVENANCE_NAME).write_text(to_json(provenance) + "\n")
    return Path(out)


def finite_or_none(value):
    """JSON has no NaN or Infinity: non-finite numbers (e.g. the distance of a given weight)
    become null, so strict parsers read every document loradb writes or prints."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def to_json(doc, *, indent: int | None = 2) -> str:
    """`doc` as strict JSON (numpy values made plain, non-finite numbers as null)."""
    plain = json.loads(json.dumps(doc, default=json_ready))  # numpy -> Python first, so NaN inside arrays is caught too
    return json.dumps(finite_or_none(plain), indent=indent, allow_nan=False)


def json_ready(value):
    """numpy scalars/arrays -> plain Python for json.dumps."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
