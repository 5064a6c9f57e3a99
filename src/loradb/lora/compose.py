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


def factors_of(adapter) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """An adapter's modules (anything with .modules of A, B numpy arrays and .scale) as torch
    factors, sharing memory with the arrays."""
    return {name: (torch.from_numpy(m.A), torch.from_numpy(m.B), m.scale) for name, m in adapter.modules.items()}


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


# ---- compressed composition: optimal rank-r truncation without the dense matrix ---------

def _core_svd(A: torch.Tensor, B: torch.Tensor):
    """SVD of B @ A through QR factors, without forming it: with B = Q_B R_B and A^T = Q_A R_A,
    B @ A = Q_B (R_B R_A^T) Q_A^T, so only the R x R core is decomposed.

    Costs O((d_out + d_in) R^2) for rank R instead of O(d_out d_in min(d_out, d_in)).
    Q_B and Q_A stay in LAPACK's compact Householder form (geqrf) and are applied later
    with ormqr, which is about twice as fast as forming them.
    Returns:
        (householder_B, U, S, Vh, householder_A) with U S Vh the SVD of the core.
    """
    R = A.shape[0]
    hB = torch.geqrf(B.to(torch.float32).contiguous())
    hA = torch.geqrf(A.to(torch.float32).T.contiguous())
    U, S, Vh = torch.linalg.svd(hB[0][:R].triu() @ hA[0][:R].triu().T, full_matrices=False)
    return hB, U, S, Vh, hA


def _apply_q(householder, small: torch.Tensor, rows: int) -> torch.Tensor:
    """Q @ [small; 0]: Q from geqrf's compact form, small of shape (R, r)."""
    padded = small.new_zeros(rows, small.shape[1])
    padded[: small.shape[0]] = small
    return torch.ormqr(householder[0], householder[1], padded)


def rank_for_error(S: torch.Tensor, max_error: float) -> int:
    """Smallest r with ||tail of S||_2 / ||S||_2 <= max_error (at least 1)."""
    S = S.to(torch.float64)
    total = float((S ** 2).sum())
    if total == 0.0:
        return 1
    tail = torch.flip(torch.cumsum(torch.flip(S ** 2, [0]), 0), [0])  # tail[r] = sum_{i >= r} S_i^2
    ok = torch.nonzero(torch.sqrt(tail / total) <= max_error)
    return max(1, int(ok[0])) if len(ok) else len(S)


def truncate(A: torch.Tensor, B: torch.Tensor, *, rank: int | None = None, max_error: float | None = None):
    """The optimal (Eckart-Young) rank-r factors of B @ A, split evenly: B' = Q_B U_r sqrt(S_r), A' = sqrt(S_r) V_r^T Q_A^T.

    Args:
        A: (R, in) and B: (out, R) unit-scale factors.
        rank: target rank r; or
        max_error: the smallest r whose relative Frobenius error is at most this.
    Returns:
        (A_r, B_r, abs_error, norm): float32 factors, ||B A - B_r A_r||_F and ||B A||_F.
    """
    if (rank is None) == (max_error is None):
        raise ValueError("give exactly one of rank or max_error")
    hB, U, S, Vh, hA = _core_svd(A, B)
    if max_error is not None:
        r = rank_for_error(S, max_error)
    else:
        assert rank is not None  # exactly one of them was given
        r = min(rank, len(S))
    root = torch.sqrt(S[:r])
    B_r = _apply_q(hB, U[:, :r] * root, B.shape[0])
    A_r = _apply_q(hA, (root[:, None] * Vh[:r]).T, A.shape[1]).T.contiguous()
    S = S.to(torch.float64)
    return A_r, B_r, float(torch.sqrt((S[r:] ** 2).sum())), float(torch.sqrt((S ** 2).sum()))


def compress(composed: dict[str, tuple[torch.Tensor, torch.Tensor]], *, rank: int | None = None,
             max_error: float | None = None) -> tuple[dict, dict]:
    """Truncate every composed module; modules already within the rank stay exact.

    Returns:
        (module -> (A_r, B_r), report) with report = {"modules": {name: {"rank", "rel_error"}},
        "rel_error": overall ||delta - delta_r||_F / ||delta||_F over all modules}.
    """
    out, modules, err2, norm2 = {}, {}, 0.0, 0.0
    for name, (A, B) in composed.items():
        if rank is not None and A.shape[0] <= rank:  # nothing to cut: keep the exact factors
            out[name], err, norm = (A, B), 0.0, truncate(A, B, rank=A.shape[0])[3]
        else:
            A_r, B_r, err, norm = truncate(A, B, rank=rank, max_error=max_error)
            out[name] = (A_r, B_r)
        modules[name] = {"rank": int(out[name][0].shape[0]), "rel_error": err / norm if norm > 0 else 0.0}
        err2, norm2 = err2 + err ** 2, norm2 + norm ** 2
    return out, {"modules": modules, "rel_error": (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0}
