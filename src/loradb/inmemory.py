"""A base model held in memory, its weights set to theta0 + delta exactly and back.

What the benchmark's rows and `loradb generate --adapter` run on: the composed B @ A is
added to each adapted weight (no LoRA branch left at run time, so a merged model is as
fast as the base), and theta0 is kept to restore before the next delta.
"""

from __future__ import annotations

from .compose import dense_delta
from .learn import find_module


class DeltaWeights:
    def __init__(self, model):
        self.model = model
        self.original: dict = {}  # module -> its theta0 weight, kept from the first time it is changed

    def set(self, composed: dict | None) -> None:
        """Restore theta0, then add B @ A of each composed module (None: the pre-trained model)."""
        import torch

        with torch.no_grad():
            for module, w0 in self.original.items():
                module.weight.copy_(w0)
            for name, (A, B) in (composed or {}).items():
                module = find_module(self.model, name)
                if module not in self.original:
                    self.original[module] = module.weight.detach().clone()
                module.weight.add_(dense_delta(A, B))
