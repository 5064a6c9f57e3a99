"""Writing a composed adapter to disk: as a PEFT adapter directory, or merged into a copy
of the base model. Output goes to a temporary sibling directory that is renamed into
place at the end, so an interrupted compose never leaves a half-written --out.
"""

from __future__ import annotations

import shutil
from pathlib import Path


from loradb.lora.adapter import FINGERPRINT_KEY, LoraAdapter, LoraModule, write_adapter
from loradb.lora.base import BaseModel, resolve_module
from loradb.errors import LoradbError
from loradb.io.files import atomic_output_dir, to_json

PROVENANCE_NAME = "loradb_compose.json"
CARD_NAME = "README.md"  # the Hugging Face model card


def write_composed_adapter(out: Path, composed: dict, *, fan_in_fan_out: bool, base: BaseModel, task_type: str | None,
                           provenance: dict, card: str | None = None) -> Path:
    """Write unit-scale stacked factors (module -> (A, B) torch tensors) as a PEFT adapter
    (with `card`: its README.md model card)."""
    modules = {name: LoraModule(A=A.numpy(), B=B.numpy(), scale=1.0) for name, (A, B) in composed.items()}
    adapter = LoraAdapter(modules=modules, fan_in_fan_out=fan_in_fan_out, base_model_name_or_path=base.name, task_type=task_type)
    with atomic_output_dir(out) as tmp:
        write_adapter(tmp, adapter, metadata={FINGERPRINT_KEY: base.fingerprint})
        (tmp / PROVENANCE_NAME).write_text(to_json(provenance) + "\n")
        if card is not None:
            (tmp / CARD_NAME).write_text(card)
    return Path(out)


def write_merged_model(out: Path, composed: dict, *, fan_in_fan_out: bool, base: BaseModel, provenance: dict,
                       card: str | None = None) -> Path:
    """Write a copy of the base model with W += B @ A added to each composed module.

    Each weight file is loaded, updated one module at a time (the only place a dense
    delta exists) and saved in the base's own dtype; other files are copied unchanged. The
    update is laid out as the base layer keeps its weight (BaseModel.stores_transposed);
    `fan_in_fan_out` counts only where transformers cannot build the architecture.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from loradb.lora.compose import dense_delta

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
                delta = dense_delta(A, B, fan_in_fan_out=base.stores_transposed(key, fan_in_fan_out))
                tensors[key] = (w.to(torch.float32) + delta).to(w.dtype)
            save_file(tensors, str(tmp / wf.name), metadata={"format": "pt"})
        (tmp / PROVENANCE_NAME).write_text(to_json(provenance) + "\n")
        if card is not None:  # the merged model is the composition's: its card replaces the base's
            (tmp / CARD_NAME).write_text(card)
    return Path(out)


