"""The identity of a base model: a content fingerprint and the shapes of its weights.

Records, representations and adapters are tied to the exact base model they were made
for. The fingerprint is a sha256 over the model's config (minus bookkeeping fields) and
the bytes of its safetensors weight files, so another architecture *or* other weights
under the same name are told apart. File hashes are cached by (path, size, mtime) so a
multi-GB model is hashed once per machine, not once per command.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from loradb.lora.adapter import FINGERPRINT_KEY, LoraAdapter
from loradb.errors import BaseModelMismatch, LoradbError
from loradb.io.files import file_sha256
from loradb.lora.tensorfile import read_header

# config fields that do not change what the model computes
_VOLATILE_CONFIG = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache", "gradient_checkpointing"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "merges.txt", "vocab.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "preprocessor_config.json")  # what turns raw input into model input

@dataclass(frozen=True)
class BaseModel:
    """A local transformers model directory, identified by content."""

    path: Path
    fingerprint: str
    config: dict
    weight_shapes: dict  # tensor name -> shape tuple
    tokenizer_hash: str

    @functools.cached_property
    def name(self) -> str:
        """What the model is called on every machine (a hub id, a packaged name, else the
        folder's name; see identity.py): what records, outputs and adapter configs carry."""
        from loradb.lora.identity import portable_name

        return portable_name(self.path, self.config)

    @property
    def short(self) -> str:
        return f"{self.name} at {self.path} (fingerprint {self.fingerprint[:12]})"

    @property
    def hidden_size(self) -> int | None:
        return _config_attribute(self.config, "hidden_size")

    @property
    def num_layers(self) -> int | None:
        """Transformer layers (hidden states are 0..num_layers), whatever the config calls them."""
        return _config_attribute(self.config, "num_hidden_layers")

    @functools.cached_property
    def transposed_weights(self) -> frozenset[str] | None:
        """The weight tensors kept as (in, out): those of transformers' Conv1D layers (GPT-2).

        Read from the model's own layer classes, built on the meta device (no weights read).
        None when transformers cannot build the architecture from the config."""
        return _transposed_weights(self.config, tuple(self.weight_shapes))

    def stores_transposed(self, key: str, stated: bool) -> bool:
        """Whether weight tensor `key` is laid out (in, out), which decides how B @ A is added.

        The layer decides, not an adapter's fan_in_fan_out flag (PEFT itself forces the flag on
        for Conv1D): a square Conv1D (GPT-2's c_proj) takes either layout without an error, so a
        wrong flag would silently add the transposed update. `stated` (the adapter's flag) is
        used only for an architecture transformers cannot build."""
        transposed = self.transposed_weights
        return stated if transposed is None else key in transposed


def _config_attribute(config: dict, name: str):
    """A standard config attribute read the way transformers reads it: each model family's
    config class maps its own key to the standard name (GPT-2's n_layer is num_hidden_layers,
    its n_embd is hidden_size). None when the config does not have it."""
    from transformers import AutoConfig

    try:
        value = getattr(AutoConfig.for_model(**config), name, None)
    except (ValueError, TypeError, KeyError):  # no or unknown model_type: only the standard key counts
        value = config.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _transposed_weights(config: dict, tensor_names: tuple[str, ...]) -> frozenset[str] | None:
    import torch
    import transformers
    from transformers import AutoConfig
    from transformers.pytorch_utils import Conv1D

    architecture = (config.get("architectures") or [None])[0]
    model_class = getattr(transformers, architecture, None) if isinstance(architecture, str) else None
    try:
        model_config = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = model_class(model_config) if model_class is not None else transformers.AutoModel.from_config(model_config)
    except Exception:  # noqa: BLE001 - any architecture transformers cannot build (LiteMedSAM, remote code)
        return None
    # each Conv1D's saved weight, found as resolve_module finds a PEFT module's: the saved names may
    # carry another wrapper's prefix than the class built here ("transformer." or none)
    conv_layers = [name for name, module in model.named_modules() if isinstance(module, Conv1D)]
    saved = (match_by_suffix(tensor_names, name, ".weight") for name in conv_layers)
    return frozenset(key for key in saved if key is not None)


@functools.lru_cache(maxsize=16)
def _load_base(resolved: str) -> BaseModel:
    path = Path(resolved)
    if not path.is_dir():
        raise LoradbError(f"base model {path} is not a directory; pass a local transformers model directory")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise LoradbError(f"base model {path} has no readable config.json ({e}); pass a transformers model directory") from None
    weight_files = sorted(path.glob("*.safetensors"))
    if not weight_files:
        raise LoradbError(f"base model {path} has no .safetensors weights; loradb never unpickles .bin checkpoints, convert them first")
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in config.items() if k not in _VOLATILE_CONFIG}, sort_keys=True).encode())
    shapes: dict[str, tuple] = {}
    for wf in weight_files:
        h.update(f"{wf.name}:{file_sha256(wf)}\n".encode())
        header, _, _ = read_header(wf)
        shapes.update({k: tuple(v["shape"]) for k, v in header.items()})
    tok = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (path / name).is_file():
            tok.update(f"{name}:{file_sha256(path / name)}\n".encode())
    return BaseModel(path=path, fingerprint=h.hexdigest(), config=config, weight_shapes=shapes, tokenizer_hash=tok.hexdigest())


def load_base(path: str | os.PathLike) -> BaseModel:
    """Identify the model in a local directory (cached per process)."""
    from loradb.lora.identity import remember

    base = _load_base(str(Path(path).expanduser().resolve()))
    remember(base.fingerprint, base.path)  # so a record naming this model finds this folder later
    return base


def match_by_suffix(names, dotted: str, tail: str = "") -> str | None:
    """The one name in `names` that ends with the longest dotted suffix of `dotted` (+ tail).

    PEFT names modules inside whatever class the adapter was trained on ("bert.encoder..."
    in a classifier, "encoder..." in the bare model); the most specific unique suffix wins,
    an ambiguous one stops the search, and a bare leaf name ("query") never matches alone.
    """
    parts = dotted.split(".")
    for start in range(len(parts) - 1):
        suffix = ".".join(parts[start:]) + tail
        hits = [n for n in names if n == suffix or n.endswith("." + suffix)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            return None
    return None


def resolve_module(base: BaseModel, module: str) -> str | None:
    """The base weight tensor a PEFT module name refers to, tolerating wrapper prefixes."""
    return match_by_suffix(base.weight_shapes, module, ".weight")


def check_adapter_fits(base: BaseModel, adapter: LoraAdapter, where: str) -> None:
    """Refuse an adapter made for another base model, naming both.

    Raises:
        BaseModelMismatch: the adapter's recorded fingerprint differs, or a module is
            missing from the base or has another shape there.
    """
    recorded = adapter.metadata.get(FINGERPRINT_KEY)
    if recorded and recorded != base.fingerprint:
        raise BaseModelMismatch(
            f"{where} was made for base model fingerprint {recorded[:12]} "
            f"({adapter.base_model_name_or_path}) but the base model here is {base.short}"
        )
    for name, module in adapter.modules.items():
        key = resolve_module(base, name)
        if key is None:
            raise BaseModelMismatch(
                f"{where} adapts module {name!r}, which base model {base.short} does not have "
                f"(adapter made for {adapter.base_model_name_or_path!r}); pass the base model it was trained on"
            )
        expected = module.weight_shape[::-1] if base.stores_transposed(key, adapter.fan_in_fan_out) else module.weight_shape
        if tuple(base.weight_shapes[key]) != tuple(expected):
            raise BaseModelMismatch(
                f"{where} module {name!r} updates a {expected[0]}x{expected[1]} weight but {key} in base model "
                f"{base.short} is {'x'.join(map(str, base.weight_shapes[key]))} (adapter made for "
                f"{adapter.base_model_name_or_path!r})"
            )


def find_module(model, name: str):
    """The in-memory module a PEFT module name refers to, tolerating wrapper prefixes."""
    modules = dict(model.named_modules())
    found = match_by_suffix(modules, name)
    if found is None:
        raise LoradbError(f"module {name} not found in the base model")
    return modules[found]
