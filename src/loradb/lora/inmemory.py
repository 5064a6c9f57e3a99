"""A base model held in memory, its weights set to theta0 + delta exactly and back.

What the benchmark's rows and `loradb generate --adapter` run on: the composed B @ A is
added to each adapted weight (no LoRA branch left at run time, so a merged model is as
fast as the base), and theta0 is kept to restore before the next delta.
"""

from __future__ import annotations

from loradb.lora.compose import dense_delta
from loradb.errors import LoradbError
from loradb.lora.base import find_module


def stores_transposed(module) -> bool:
    """True for layers that keep their weight as (in, out): transformers' Conv1D (GPT-2).

    Decided by the layer itself, not by the adapter's fan_in_fan_out flag: a square Conv1D
    (GPT-2's c_proj) accepts either layout without an error, so trusting a wrong flag would
    silently add the transposed update (PEFT itself forces the flag on for Conv1D).
    """
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency; keep the check local
        return False
    return isinstance(module, Conv1D)


def layer_delta(module, name: str, A, B):
    """B @ A laid out like `module.weight`, refusing a module whose shape does not fit."""
    delta = dense_delta(A, B, fan_in_fan_out=stores_transposed(module))
    if tuple(delta.shape) != tuple(module.weight.shape):
        raise LoradbError(f"module {name}: the adapter's update is {tuple(delta.shape)} but the layer's weight is "
                          f"{tuple(module.weight.shape)}; the adapter was trained on another model")
    return delta


class DeltaWeights:
    def __init__(self, model):
        self.model = model
        self.original: dict = {}  # module -> its theta0 weight, kept from the first time it is changed

    def set(self, composed: dict | None) -> None:
        """Restore theta0, then add B @ A of each composed module (None: the pre-trained model).

        Every module's update is formed and checked before any weight changes, so a refused
        delta leaves the model as it was (theta0)."""
        import torch

        with torch.no_grad():
            for module, w0 in self.original.items():
                module.weight.copy_(w0)
            updates = []
            for name, (A, B) in (composed or {}).items():
                module = find_module(self.model, name)
                updates.append((module, layer_delta(module, name, A, B)))
            for module, delta in updates:
                if module not in self.original:
                    self.original[module] = module.weight.detach().clone()
                module.weight.add_(delta.to(module.weight.dtype))
