"""LoRA adapters in PEFT's on-disk format: read, validate, write.

An adapter directory holds adapter_config.json and adapter_model.safetensors with keys
"base_model.model.<module>.lora_A.weight" (r x in) and "...lora_B.weight" (out x r).
Reading resolves each module's rank and scale exactly as PEFT does (rank_pattern,
alpha_pattern, rsLoRA) and refuses everything whose merge would not be exact.
This module is numpy-only so that commands which only file adapters never import torch.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from loradb.errors import AdapterError
from loradb.io import jsondoc
from loradb.io.files import with_umask_mode
from loradb.lora.tensorfile import read_tensors

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLED_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.ckpt")
KEY_PREFIX = "base_model.model."
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"
# safetensors metadata key under which loradb records the base model it wrote an adapter for
FINGERPRINT_KEY = "loradb.base_fingerprint"

# Config fields that do not change what the saved factors mean at inference time.
_NEUTRAL_FIELDS = {
    "r", "lora_alpha", "target_modules", "exclude_modules", "lora_dropout", "fan_in_fan_out",
    "bias", "use_rslora", "init_lora_weights", "layers_to_transform", "layers_pattern",
    "rank_pattern", "alpha_pattern", "base_model_name_or_path", "revision", "task_type",
    "peft_type", "inference_mode", "auto_mapping", "runtime_config", "peft_version",
    "loftq_config", "eva_config", "corda_config", "lora_ga_config", "qalora_group_size",
    "megatron_core", "ensure_weight_tying",
}
# init_lora_weights values after which the saved factors are an ordinary LoRA delta;
# PiSSA/OLoRA/CorDA-style strings mean the base weights were changed too.
_PLAIN_INITS = (True, False, "gaussian", None)

@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: delta W = scale * B @ A (transposed if fan_in_fan_out)."""

    A: np.ndarray  # (r, in_features), float32
    B: np.ndarray  # (out_features, r), float32
    scale: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def weight_shape(self) -> tuple[int, int]:
        """Shape of the (out, in) update this module adds, before any fan_in_fan_out transpose."""
        return int(self.B.shape[0]), int(self.A.shape[1])


@dataclass
class LoraAdapter:
    """A validated LoRA adapter: module name (as PEFT names it inside the model) -> factors."""

    modules: dict[str, LoraModule]
    fan_in_fan_out: bool = False
    base_model_name_or_path: str | None = None
    task_type: str | None = None
    config: dict = field(default_factory=dict)  # the original adapter_config.json
    metadata: dict = field(default_factory=dict)  # the safetensors metadata

    @property
    def max_rank(self) -> int:
        return max(m.rank for m in self.modules.values())

    @property
    def target_modules(self) -> list[str]:
        return sorted(self.modules)

    @property
    def n_bytes(self) -> int:
        return sum(m.A.nbytes + m.B.nbytes for m in self.modules.values())


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's get_pattern_key: the first pattern whose regex matches the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _check_patterns(config: dict, where: str | Path) -> None:
    """rank_pattern and alpha_pattern: module-name regexes to positive numbers, as PEFT reads them."""
    for option in ("rank_pattern", "alpha_pattern"):
        patterns = config.get(option) or {}
        if not isinstance(patterns, dict):
            raise AdapterError(f"{where}: {option} must map module-name patterns to numbers, got {type(patterns).__name__}")
        for key, value in patterns.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 2 ** 31:
                raise AdapterError(f"{where}: {option}[{key!r}] must be a positive number, got {value!r}")
            try:
                re.compile(key)
            except (re.error, RecursionError, OverflowError):
                raise AdapterError(f"{where}: {option} key {key!r} is not a valid regular expression") from None
            if len(key) > 300 or _QUANTIFIED_GROUP.search(key) or len(_UNBOUNDED.findall(key)) > 2:
                # each key is matched against every module name: a pattern that backtracks
                # exponentially ((a*)*b) or polynomially (.*.*.*x) would hold the server
                raise AdapterError(f"{where}: {option} key {key!r} is refused: at most 300 characters, no quantified "
                                   "group and at most two * or + (module-name patterns need no more)")


def _check_config(config: dict, where: str | Path) -> None:
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not 'LORA'; loradb stores LoRA adapters only")
    if config.get("use_dora"):
        raise AdapterError(f"{where}: DoRA adapters (use_dora=true) cannot be merged exactly as a weighted sum; retrain as plain LoRA")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{where}: bias={config['bias']!r} trains bias terms outside the LoRA factors; only bias='none' merges exactly")
    if config.get("modules_to_save"):
        raise AdapterError(f"{where}: modules_to_save={config['modules_to_save']} carries full module copies that are not a weighted sum of deltas; retrain without them")
    if config.get("init_lora_weights", True) not in _PLAIN_INITS:
        raise AdapterError(f"{where}: init_lora_weights={config['init_lora_weights']!r} changes the base weights as well; convert it to a plain LoRA first")
    for key, value in config.items():
        if key not in _NEUTRAL_FIELDS and value not in (None, False, [], {}, "", 0):
            raise AdapterError(f"{where}: unsupported LoRA option {key}={value!r}; loradb merges plain LoRA adapters only")
    for key in ("base_model_name_or_path", "revision", "task_type"):  # names: read as text, matched against bases
        if config.get(key) is not None and not isinstance(config[key], str):
            raise AdapterError(f"{where}: {key} must be a string, got {config[key]!r}")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key, 8), (int, float)) or config.get(key, 8) <= 0:
            raise AdapterError(f"{where}: {key} must be a positive number, got {config.get(key)!r}")
    _check_patterns(config, where)
    if any("\x00" in text for text in jsondoc.strings(config)):  # no database text can hold it (PostgreSQL refuses the row)
        raise AdapterError(f"{where}: adapter_config.json holds a NUL character")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUANTIFIED_GROUP = re.compile(r"\)[*+?{]")  # a group repeated: the shape of catastrophic backtracking
_UNBOUNDED = re.compile(r"(?<!\\)[*+]|(?<!\\)\{\d*,\}")  # unescaped unbounded repeats
_Factor = TypeVar("_Factor")  # a factor's array, or what a header says of it


def _group_factors(tensors: dict[str, _Factor], where: str | Path) -> dict[str, dict[str, _Factor]]:
    factors: dict[str, dict[str, _Factor]] = {}
    for key, value in tensors.items():
        for suffix, slot in ((A_SUFFIX, "A"), (B_SUFFIX, "B")):
            if key.startswith(KEY_PREFIX) and key.endswith(suffix):
                factors.setdefault(key[len(KEY_PREFIX):-len(suffix)], {})[slot] = value
                break
        else:
            raise AdapterError(
                f"{where}: tensor {key!r} is not a plain LoRA factor (expected '{KEY_PREFIX}<module>{A_SUFFIX}' or '...{B_SUFFIX}'); "
                "DoRA magnitudes, embedding LoRA, biases and saved modules cannot be merged exactly"
            )
    if not factors:
        raise AdapterError(f"{where}: the adapter holds no LoRA factors")
    return factors


def module_shapes(weights: Path) -> dict[str, tuple[int, int]]:
    """module -> (out_features, in_features) of a LoRA safetensors file, from its header alone."""
    return {name: (out, inp) for name, (out, inp, _) in factor_shapes(weights).items()}


def factor_shapes(weights: Path) -> dict[str, tuple[int, int, int]]:
    """module -> (out_features, in_features, rank) of a LoRA safetensors file, from its header
    alone (what a compose will hold, known before any factor is read)."""
    from loradb.lora.tensorfile import read_header

    header, _, _ = read_header(weights)
    shapes: dict[str, Any] = {k: v.get("shape") if isinstance(v, dict) else None for k, v in header.items()}
    pairs = _group_factors(shapes, weights)
    return {name: (int(p["B"][0]), int(p["A"][1]), int(p["A"][0])) for name, p in pairs.items()
            if isinstance(p.get("A"), list) and isinstance(p.get("B"), list) and len(p["A"]) == 2 and len(p["B"]) == 2}


def read_adapter(path: str | os.PathLike) -> LoraAdapter:
    """Read and validate a PEFT LoRA adapter directory.

    Args:
        path: directory with adapter_config.json and adapter_model.safetensors.
    Returns:
        The adapter, factors as float32 numpy arrays and each module's scale resolved.
    Raises:
        AdapterError: with what was wrong and what to do about it.
    """
    where = Path(path)
    if not where.is_dir():
        raise AdapterError(f"{where}: not a directory; pass a PEFT adapter directory (adapter_config.json + {WEIGHTS_NAME})")
    weights = where / WEIGHTS_NAME
    if not weights.is_file():
        pickled = [n for n in PICKLED_NAMES if (where / n).exists()]
        if pickled:
            raise AdapterError(f"{where}: {pickled[0]} is a pickled file and loradb never unpickles; convert it to {WEIGHTS_NAME} with a tool you trust")
        raise AdapterError(f"{where}: {WEIGHTS_NAME} is missing")
    try:
        config = jsondoc.loads((where / CONFIG_NAME).read_text())
    except FileNotFoundError:
        raise AdapterError(f"{where}: {CONFIG_NAME} is missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise AdapterError(f"{where}/{CONFIG_NAME} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{where}/{CONFIG_NAME} must hold a JSON object")
    return adapter_from_files(config, weights, where)


def adapter_from_files(config: dict, weights: Path, where: str | Path) -> LoraAdapter:
    """Validate a config dict and a safetensors weights file as one LoRA adapter.

    Args:
        config: the parsed adapter_config.json.
        weights: the adapter_model.safetensors file (or a stored blob of it).
        where: how to name the adapter in error messages.
    """
    _check_config(config, where)
    tensors, metadata = read_tensors(weights, f"{where}: {WEIGHTS_NAME}")
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    modules = {}
    for name, pair in sorted(_group_factors(tensors, where).items()):
        if _CONTROL.search(name):  # no layer is named so, and databases (PostgreSQL's text) cannot hold a NUL
            raise AdapterError(f"{where}: module name {name!r} holds control characters")
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{where}: module {name!r} has lora_{'A' if 'B' in pair else 'B'} missing")
        A, B = pair["A"], pair["B"]
        r = int(_pattern_value(rank_pattern, name, config.get("r", 8)))
        alpha = float(_pattern_value(alpha_pattern, name, config.get("lora_alpha", 8)))
        if A.ndim != 2 or B.ndim != 2:
            raise AdapterError(f"{where}: module {name!r} is not a linear layer (factor shapes {A.shape}, {B.shape}); only Linear/Conv1D LoRA merges here")
        if A.shape[0] != r or B.shape[1] != r:
            raise AdapterError(f"{where}: module {name!r} has factors {A.shape} and {B.shape} but its configured rank is {r}")
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            raise AdapterError(f"{where}: module {name!r} contains NaN or infinite values")
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        modules[name] = LoraModule(A=A, B=B, scale=scale)
    return LoraAdapter(
        modules=modules,
        fan_in_fan_out=bool(config.get("fan_in_fan_out", False)),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        task_type=config.get("task_type"),
        config=config,
        metadata=dict(metadata),
    )


def peft_config_for(modules: dict[str, LoraModule], *, fan_in_fan_out: bool, base_model_name_or_path: str | None,
                    task_type: str | None) -> dict:
    """The adapter_config.json of unit-scale modules (alpha = r per module, so scale = 1).

    Ranks that differ between modules go into rank_pattern/alpha_pattern with escaped
    full module names, so each pattern matches exactly one module.
    """
    ranks = {name: m.rank for name, m in modules.items()}
    common = max(set(ranks.values()), key=lambda r: (list(ranks.values()).count(r), r))
    pattern = {re.escape(name): r for name, r in sorted(ranks.items()) if r != common}
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": common,
        "lora_alpha": common,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(modules),
        "fan_in_fan_out": fan_in_fan_out,
        "bias": "none",
        "use_rslora": False,
        "lora_dropout": 0.0,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def write_adapter(path: str | os.PathLike, adapter: LoraAdapter, *, metadata: dict[str, str] | None = None) -> Path:
    """Write unit-scale modules (scale already folded into B) as a PEFT adapter directory.

    Args:
        path: output directory (created; existing adapter files are replaced).
        adapter: modules whose scale is 1.
        metadata: extra safetensors metadata (strings), e.g. the base model fingerprint.
    Returns:
        The directory written.
    """
    from safetensors.numpy import save_file

    if any(abs(m.scale - 1.0) > 0 for m in adapter.modules.values()):
        raise ValueError("write_adapter expects unit-scale modules; fold the scale into B first")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in adapter.modules.items():
        tensors[f"{KEY_PREFIX}{name}{A_SUFFIX}"] = np.ascontiguousarray(m.A, dtype=np.float32)
        tensors[f"{KEY_PREFIX}{name}{B_SUFFIX}"] = np.ascontiguousarray(m.B, dtype=np.float32)
    config = peft_config_for(adapter.modules, fan_in_fan_out=adapter.fan_in_fan_out,
                             base_model_name_or_path=adapter.base_model_name_or_path, task_type=adapter.task_type)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", **(metadata or {})})
    with_umask_mode(out / WEIGHTS_NAME)  # save_file writes 0600 whatever the umask
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out
