"""The parameter ensemble theta0 + sum_i w_i delta_theta_i, in pure torch.

For LoRA modules the weighted sum is itself a LoRA: stacking the factors,
    B = [w_1 s_1 B_1 | ... | w_k s_k B_k],  A = [A_1; ...; A_k],
gives B @ A = sum_i w_i s_i B_i A_i exactly, with rank sum(r_i) and scale 1. A module
that an adapter lacks contributes nothing. No d_out x d_in matrix is formed here except
in `dense_delta`, which the merged-model export calls one module at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

# module name -> (A (r, in), B (out, r), scale)
Factors = Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]


def compose_exact(adapters: Sequence[Factors], weights: Sequence[float]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stack weighted LoRA factors into one unit-scale LoRA per module.

    Args:
        adapters: k adapters, each a mapping module -> (A, B, scale).
        weights: k real weights (any sign; they need not sum to 1).
    Returns:
        module -> (A_cat (sum r_i, in), B_cat (out, sum r_i)) in float32, so that
        B_cat @ A_cat = sum_i w_i s_i B_i A_i over the adapters having that module.
    """
    if len(adapters) != len(weights) or not adapters:
        raise ValueError(f"need one weight per adapter, got {len(adapters)} adapters and {len(weights)} weights")
    names = sorted({name for adapter in adapters for name in adapter})
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in names:
        As, Bs = [], []
        for adapter, w in zip(adapters, weights):
            if name not in adapter:
                continue
            A, B, scale = adapter[name]
            if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
                raise ValueError(f"module {name}: factor shapes {tuple(A.shape)} and {tuple(B.shape)} do not form a LoRA")
            As.append(A.to(torch.float32))
            # fold weight and scale in float64 first so w * s is not rounded twice
            Bs.append((B.to(torch.float64) * (float(w) * float(scale))).to(torch.float32))
        shapes = {(B.shape[0], A.shape[1]) for A, B in zip(As, Bs)}
        if len(shapes) != 1:
            raise ValueError(f"module {name}: adapters disagree on its shape {sorted(shapes)}")
        out[name] = (torch.cat(As, dim=0), torch.cat(Bs, dim=1))
    return out


def dense_delta(A: torch.Tensor, B: torch.Tensor, *, fan_in_fan_out: bool = False) -> torch.Tensor:
    """The full update B @ A of one unit-scale module, laid out like the base weight.

    Args:
        A: (r, in) factor.  B: (out, r) factor.
        fan_in_fan_out: the base layer stores its weight as (in, out) (GPT-2 Conv1D).
    Returns:
        (out, in) float32 tensor, or (in, out) when fan_in_fan_out.
    """
    delta = B.to(torch.float32) @ A.to(torch.float32)
    return delta.T.contiguous() if fan_in_fan_out else delta
