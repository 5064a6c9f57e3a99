"""Merge modes: how the weighted adapters become one, in one table (MERGES) with the
parameters each declares (MERGE_PARAMS). `--merge` and its flags, the server's allowed
values and fields, validation and the memory estimate all come from here; adding a mode
is one entry (and its element-wise function).

exact stacks the factors (compose.compose_exact: no dense matrix). TIES and DARE act on
individual entries of each module's delta W, which the factors do not expose, so each
module's deltas are formed densely, one module at a time, merged, and re-factorised by
SVD (the report gives the factorisation's relative error per module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loradb.errors import LoradbError, registered

if TYPE_CHECKING:  # torch is imported by the functions that compute: the CLI builds its flags from this module
    import torch

    from loradb.lora.compose import Factors

# the smallest density ties/dare take: dare rescales survivors by 1/density, and below this
# float32 loses the update (1e-300 underflows to 0, then 0/0)
MIN_DENSITY = 1e-6


@dataclass(frozen=True)
class MergeParam:
    """A parameter a merge mode takes: its type, default and allowed range."""

    name: str
    kind: type
    default: float | int
    help: str
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value) -> float | int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and not isinstance(value, int)):
            raise LoradbError(f"`{self.name}` must be {'a whole number' if self.kind is int else 'a number'}, got {value!r}")
        if (self.minimum is not None and not value >= self.minimum) or (self.maximum is not None and not value <= self.maximum):
            raise LoradbError(f"`{self.name}` must be in [{self.minimum:g}, {self.maximum:g}], got {value}")
        return self.kind(value)


@dataclass(frozen=True)
class MergeMode:
    """A merge mode. elementwise(deltas, weights, params, generator) -> the merged dense delta
    of one module (None: the exact stacked factors). memory: its dense working set at the
    peak, as (tensors per delta, fixed tensors) of d_out x d_in (see working_bytes)."""

    name: str
    help: str
    params: tuple[str, ...] = ()
    elementwise: Callable[..., torch.Tensor] | None = None
    memory: tuple[int, int] = (0, 0)


def ties_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES (Yadav et al., 2023) as PEFT's merge_utils.ties computes it: keep each delta's
    top `density` fraction by magnitude, elect the sign of the summed trimmed deltas, and
    average the weighted deltas that agree with it (divided by how many agree)."""
    import torch

    trimmed = []
    for d in deltas:
        k = int(density * d.numel())  # as PEFT: a density below one entry keeps none
        mask = torch.zeros(d.numel(), dtype=d.dtype)
        if k > 0:
            mask[torch.topk(d.abs().reshape(-1), k).indices] = 1
        trimmed.append(d * mask.reshape(d.shape))
    stacked = torch.stack(trimmed)
    majority = torch.where(stacked.sum(0) >= 0, 1.0, -1.0).to(stacked.dtype)
    agree = stacked.sign() == majority
    weighted = stacked * torch.tensor(list(weights), dtype=stacked.dtype).reshape(-1, 1, 1)
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def dare_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float,
               generator: torch.Generator) -> torch.Tensor:
    """DARE (Yu et al., 2024), linear variant as in PEFT's dare_linear: drop each entry with
    probability 1 - density, rescale the survivors by 1/density, then take the weighted sum."""
    import torch

    total = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights):
        keep = torch.bernoulli(torch.full_like(d, density), generator=generator)
        total += w * d * keep / density
    return total


def factorize(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-r factors (A, B) of a dense delta by SVD: (A, B, abs_error, norm)."""
    import torch

    U, S, Vh = torch.linalg.svd(delta.to(torch.float32), full_matrices=False)
    r = min(rank, len(S))
    root = torch.sqrt(S[:r])
    S64 = S.to(torch.float64)
    return (root[:, None] * Vh[:r]).contiguous(), (U[:, :r] * root).contiguous(), \
        float(torch.sqrt((S64[r:] ** 2).sum())), float(torch.sqrt((S64 ** 2).sum()))


MERGE_PARAMS: dict[str, MergeParam] = {
    p.name: p
    for p in (
        MergeParam("density", float, 0.5, "fraction of entries kept", MIN_DENSITY, 1.0),
        MergeParam("seed", int, 0, "seed of the random masks", -(2 ** 63), 2 ** 63 - 1),
    )
}

MERGES: dict[str, MergeMode] = {
    m.name: m
    for m in (
        MergeMode("exact", "the exact weighted sum (stacked factors, no dense matrix)"),
        # ties holds about six k x d_out x d_in tensors at its peak (the deltas, trimmed, stacked, weighted, masked)
        MergeMode("ties", "TIES: trim each delta, elect signs, average what agrees", params=("density",),
                  elementwise=lambda deltas, ws, params, generator: ties_merge(deltas, ws, params["density"]),
                  memory=(16, 24)),  # 16 a delta: a peak of 69.4 MB measured against 66.1 estimated at 14 (k=16, d=256)
        # dare: the k deltas and a few d_out x d_in temporaries
        MergeMode("dare", "DARE: drop entries at random, rescale the rest, weighted sum", params=("density", "seed"),
                  elementwise=lambda deltas, ws, params, generator: dare_merge(deltas, ws, params["density"], generator),
                  memory=(3, 24)),
    )
}


def get_merge(name: str) -> MergeMode:
    return registered(MERGES, name, "merge")


def merge_params(mode: str, given: dict) -> dict:
    """The mode's parameters, with defaults for those not given. Every given value is
    checked, even one the mode does not use (a CLI passes every flag: a bad one is still
    refused, not ignored); unknown names are refused."""
    m = get_merge(mode)
    unknown = sorted(set(given) - set(MERGE_PARAMS))
    if unknown:
        raise LoradbError(f"unknown merge parameter(s) {', '.join(unknown)}; merges take {', '.join(MERGE_PARAMS)}")
    checked = {p: MERGE_PARAMS[p].check(v) for p, v in given.items() if v is not None}
    return {p: checked.get(p, MERGE_PARAMS[p].default) for p in m.params}


def working_bytes(adapters: Sequence[Factors], *, merge: str = "exact", compressed: bool = False) -> int:
    """An upper estimate of the float32 working memory a compose of `adapters` needs.

    exact: the stacked factors of every module ((d_out + d_in) x sum r_i), copied once into
    the result, more when compressed (QR factors, core, truncated factors). An element-wise
    mode forms each module's deltas densely, one module at a time (its `memory` factors),
    then takes an SVD. The factors are set against measured peak RSS, which the
    allocator's reuse of freed blocks raises to about twice the live tensors
    (tests/test_compose_memory_budget.py); a compose over `serve --max-compose-mb` is
    refused before any of it is formed.
    """
    return working_bytes_of_shapes([{name: (int(B.shape[0]), int(A.shape[1]), int(A.shape[0]))
                                     for name, (A, B, _) in factors.items()} for factors in adapters],
                                   merge=merge, compressed=compressed)


def working_bytes_of_shapes(adapters: Sequence[dict[str, tuple[int, int, int]]], *, merge: str = "exact",
                            compressed: bool = False) -> int:
    """working_bytes from each adapter's module -> (d_out, d_in, r) alone, e.g. read from the
    safetensors headers (lora/adapter.py factor_shapes), before any factor is loaded."""
    modules: dict[str, list[tuple[int, int, int]]] = {}
    for shapes_of in adapters:
        for name, shape in shapes_of.items():
            modules.setdefault(name, []).append(shape)
    if not modules:
        return 0
    stacked = sum(sum(r for *_, r in shapes) * (shapes[0][0] + shapes[0][1]) for shapes in modules.values())
    mode = get_merge(merge)
    if mode.elementwise is None:
        return 4 * stacked * (5 if compressed else 3)
    per_delta, fixed = mode.memory
    dense = max((len(shapes) * per_delta + fixed) * shapes[0][0] * shapes[0][1] for shapes in modules.values())
    return 4 * (2 * stacked + dense)


def compose_merged(adapters: Sequence[Factors], weights: Sequence[float], *, mode: str, rank: int | None = None,
                   **params) -> tuple[dict, dict]:
    """An element-wise merge over each module's deltas, re-factorised to rank `rank`
    (default: the stacked rank sum(r_i), the rank an exact merge would have).

    Returns:
        (module -> (A, B) unit-scale factors, report with the merge, its parameters and the
        per-module ranks and relative errors).
    """
    import torch

    m = get_merge(mode)
    if m.elementwise is None:
        raise LoradbError(f"merge {mode} is not element-wise; compose it with compose_exact")
    params = merge_params(mode, params)
    generator = torch.Generator().manual_seed(params.get("seed", 0))
    out, modules, err2, norm2 = {}, {}, 0.0, 0.0
    for name in sorted({n for a in adapters for n in a}):
        present = [(a[name], w) for a, w in zip(adapters, weights) if name in a]
        deltas = [float(s) * (B.to(torch.float32) @ A.to(torch.float32)) for (A, B, s), _ in present]
        merged = m.elementwise(deltas, [w for _, w in present], params, generator)
        target = rank if rank is not None else sum(A.shape[0] for (A, _, _), _ in present)
        A_r, B_r, err, norm = factorize(merged, target)
        out[name] = (A_r, B_r)
        modules[name] = {"rank": int(A_r.shape[0]), "rel_error": err / norm if norm > 0 else 0.0}
        err2, norm2 = err2 + err ** 2, norm2 + norm ** 2
    return out, {"merge": mode, **{k: v for k, v in params.items() if k != "seed"}, "modules": modules,
                 "rel_error": (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0}


@dataclass(frozen=True)
class MergeSpec:
    """How the weighted adapters become one: the merge mode with its parameters, and the
    output's rank (the exact rank sum(r_i) by default; a fixed `rank`, or per module the
    smallest rank within `max_error` relative Frobenius error). Checked once, here; the CLI,
    the server, RemoteDB and LoraDB all build one."""

    merge: str = "exact"
    rank: int | None = None
    max_error: float | None = None
    params: dict = field(default_factory=dict)  # the mode's parameters (MERGE_PARAMS); defaults filled in

    def __post_init__(self):
        mode = get_merge(self.merge)
        object.__setattr__(self, "params", merge_params(self.merge, dict(self.params)))
        if self.rank is not None and self.max_error is not None:
            raise LoradbError("give a `rank` or a `max_error`, not both")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise LoradbError(f"`rank` must be a whole number of at least 1, got {self.rank!r}")
        if self.max_error is not None and not 0 <= self.max_error < 1:
            raise LoradbError(f"`max_error` must be in [0, 1), got {self.max_error}")
        if mode.elementwise is not None and self.max_error is not None:
            raise LoradbError(f"`max_error` works with the exact merge only; give {self.merge} a fixed `rank`")

    @property
    def mode(self) -> MergeMode:
        return MERGES[self.merge]

    @property
    def compressed(self) -> bool:
        """Whether the output is truncated below the exact stacked rank."""
        return self.rank is not None or self.max_error is not None

    def to_doc(self) -> dict:
        """The fields a compose request carries (every merge parameter, defaults included)."""
        return {"merge": self.merge, "rank": self.rank, "max_error": self.max_error,
                **{p: self.params.get(p, MERGE_PARAMS[p].default) for p in MERGE_PARAMS}}


def merge(factors: Sequence[Factors], weights: Sequence[float], spec: MergeSpec) -> tuple[dict, dict | None]:
    """The weighted adapters as one, by the spec: (module -> (A, B) unit-scale factors, the
    compression report: per-module ranks and relative errors; None for the exact merge)."""
    from loradb.lora.compose import compose_exact, compress

    if spec.mode.elementwise is not None:
        return compose_merged(factors, weights, mode=spec.merge, rank=spec.rank, **spec.params)
    composed = compose_exact(factors, weights)
    if spec.compressed:
        return compress(composed, rank=spec.rank, max_error=spec.max_error)
    return composed, None
