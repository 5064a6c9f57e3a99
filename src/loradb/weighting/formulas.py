"""Ensemble weights w = A(z_trg, {z_i}): the paper's weighting methods, in pure numpy.

Every method returns weights summing to 1 (except when the user passes raw weights to
compose) and the residual ||z_trg - sum_i w_i z_i||. The constrained problems are
solved exactly: `linear` in closed form on the constraint plane (minimum-norm when the
z_i are affinely dependent), `sparse` and `convex` by identifying the optimal support
(and signs) and then solving its KKT system, which is verified before the answer is
returned.

`linear` and `sparse` are the paper's forms: negative weights allowed, so they can
extrapolate (weights of ±6 were seen on real pools, and they break outputs). `convex` is
their bounded form: w >= 0 and sum(w) = 1, a convex combination of the retrieved adapters,
which never extrapolates. (On the simplex ||w||_1 = 1, so the sparse method's L1 term is a
constant there and its bounded form is this same problem; the non-negativity alone makes
the solution sparse: typically a few adapters carry all the weight.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np

from loradb.errors import LoradbError

FLOAT32_RESOLUTION = float(np.finfo(np.float32).eps)  # z vectors are stored in float32

@dataclass(frozen=True)
class WeightResult:
    """Weights for the retrieved adapters, in the order given, and how well they fit z_trg."""

    method: str
    weights: np.ndarray  # (k,), float64
    residual: float  # ||z_trg - sum_i w_i z_i||
    params: dict = field(default_factory=dict)  # the resolved hyper-parameters


def check_inputs(z_trg: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(z_trg, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    if z.ndim != 1 or Z.ndim != 2 or Z.shape[1] != z.shape[0] or Z.shape[0] == 0:
        raise ValueError(f"expected z_trg of shape (d,) and Z of shape (k, d), got {z.shape} and {Z.shape}")
    if not (np.isfinite(z).all() and np.isfinite(Z).all()):
        raise LoradbError("representations contain NaN or infinite values")
    return z, Z


def squared_distances(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """d_i^2 = ||z_i - z_trg||^2 for each row z_i of Z."""
    z, Z = check_inputs(z_trg, Z)
    return ((Z - z) ** 2).sum(axis=1)


def residual(z_trg: np.ndarray, Z: np.ndarray, w: np.ndarray) -> float:
    """||z_trg - sum_i w_i z_i||."""
    z, Z = check_inputs(z_trg, Z)
    return float(np.linalg.norm(z - np.asarray(w, dtype=np.float64) @ Z))


def auto_temperature(d2: np.ndarray) -> float:
    """lambda_1 = 1 / median(d^2): weights then fall by ~e per typical squared distance."""
    med = float(np.median(d2))
    return 1.0 / med if med > 0 else 1.0


def auto_l1(d2: np.ndarray) -> float:
    """lambda_2 = 0.1 * median(d^2): the L1 term on the same scale as the fit term."""
    return 0.1 * float(np.median(d2))


def uniform(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """w_i = 1/k."""
    k = Z.shape[0]
    return np.full(k, 1.0 / k)


def nearest(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """All weight on the closest z_i (the first one, on a tie)."""
    w = np.zeros(Z.shape[0])
    w[int(np.argmin(squared_distances(z_trg, Z)))] = 1.0
    return w


def similarity(z_trg: np.ndarray, Z: np.ndarray, temperature: float) -> np.ndarray:
    """w_i = exp(-lambda_1 d_i^2) / sum_j exp(-lambda_1 d_j^2), computed stably."""
    if not np.isfinite(temperature) or temperature < 0:
        raise LoradbError(f"temperature must be a finite number >= 0, got {temperature}")
    d2 = squared_distances(z_trg, Z)
    e = np.exp(-temperature * (d2 - d2.min()))  # shifted before scaling: a huge temperature cannot overflow to inf - inf
    return e / e.sum()


def _offsets(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Rows z_trg - z_i: with sum(w) = 1, z_trg - sum w_i z_i = sum w_i (z_trg - z_i)."""
    z, Z = check_inputs(z_trg, Z)
    return z[None, :] - Z


def linear(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """argmin_w ||z_trg - sum w_i z_i||^2 subject to sum(w) = 1, negative weights allowed.

    Solved on the constraint plane w = 1/k + N u (N an orthonormal basis of the vectors
    summing to zero) by least squares; the minimum-norm u gives the minimum-norm w, so
    duplicate or affinely dependent z_i share weight symmetrically instead of arbitrarily.
    """
    D = _offsets(z_trg, Z)
    k = D.shape[0]
    w0 = np.full(k, 1.0 / k)
    if k == 1:
        return w0
    N = _sum_zero_basis(k)
    M = D.T @ N  # (d, k-1)
    # Singular values are cut relative to D's scale, not M's: when the z_i coincide, M is
    # rounding noise and must count as zero. Representations are stored in float32, so
    # directions below float32 resolution carry no information and are treated as absent.
    scale = float(np.linalg.norm(D, 2)) if D.any() else 1.0
    u = _min_norm_lstsq(M, -(D.T @ w0), cutoff=FLOAT32_RESOLUTION * scale)
    return w0 + N @ u


def _min_norm_lstsq(M: np.ndarray, b: np.ndarray, cutoff: float) -> np.ndarray:
    """Minimum-norm least-squares solution, singular values <= cutoff treated as zero."""
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    keep = s > cutoff
    return Vt[keep].T @ ((U[:, keep].T @ b) / s[keep])


def _sum_zero_basis(k: int) -> np.ndarray:
    """Orthonormal basis (k, k-1) of {v : sum(v) = 0}."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(k), np.eye(k)[:, : k - 1]]))
    return q[:, 1:]


def sparse_objective(Q: np.ndarray, w: np.ndarray, l1: float) -> float:
    """w^T Q w + lambda_2 ||w||_1 with Q = D D^T (the sparse method's objective)."""
    return float(w @ Q @ w + l1 * np.abs(w).sum())


def _solve_pattern(Q: np.ndarray, support: np.ndarray, signs: np.ndarray, l1: float) -> np.ndarray | None:
    """Minimiser of w^T Q w + l1 * signs.w on a support, with sum(w) = 1 (the KKT system)."""
    idx = np.flatnonzero(support)
    m = len(idx)
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = 2 * Q[np.ix_(idx, idx)]
    kkt[:m, m] = -1.0
    kkt[m, :m] = 1.0
    rhs = np.concatenate([-l1 * signs, [1.0]])
    sol = _min_norm_lstsq(kkt, rhs, cutoff=(m + 1) * np.finfo(float).eps * max(1.0, np.abs(kkt).max()) * 4)
    if np.linalg.norm(kkt @ sol - rhs) > 1e-9 * (np.linalg.norm(rhs) + np.abs(kkt).max() * np.abs(sol).sum()):
        return None  # this support admits no stationary point
    w = np.zeros(Q.shape[0])
    w[idx] = sol[:m]
    return w


def _is_optimal(Q: np.ndarray, w: np.ndarray, support: np.ndarray, signs: np.ndarray, l1: float) -> bool:
    """KKT conditions of the sparse problem: signs as assumed, subgradient bound off the support."""
    if not np.all(np.sign(w[support]) == signs):
        return False
    g = 2 * Q @ w  # gradient of the quadratic part
    mu = float(np.mean(g[support] + l1 * signs))
    scale = 1e-9 * (1 + np.abs(g).max() + l1 + abs(mu))
    return bool(np.all(np.abs(g[~support] - mu) <= l1 + scale))


def _sparse_candidate(Q: np.ndarray, l1: float, start: np.ndarray) -> np.ndarray:
    """A close approximate optimum (SLSQP on w = p - n, p, n >= 0) to read the support from."""
    from scipy.optimize import minimize

    k = Q.shape[0]

    def f(x):
        w = x[:k] - x[k:]
        return w @ Q @ w + l1 * x.sum()

    def grad(x):
        g = 2 * Q @ (x[:k] - x[k:])
        return np.concatenate([g + l1, -g + l1])

    x0 = np.concatenate([np.clip(start, 0, None), np.clip(-start, 0, None)])
    eq = {"type": "eq", "fun": lambda x: x[:k].sum() - x[k:].sum() - 1.0,
          "jac": lambda x: np.concatenate([np.ones(k), -np.ones(k)])}
    res = minimize(f, x0, jac=grad, bounds=[(0, None)] * (2 * k), constraints=[eq], method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 2000})
    return res.x[:k] - res.x[k:]


def sparse(z_trg: np.ndarray, Z: np.ndarray, l1: float) -> np.ndarray:
    """argmin_w ||z_trg - sum w_i z_i||^2 + lambda_2 ||w||_1 subject to sum(w) = 1.

    An approximate solver proposes the support and signs; the exact solution on that
    pattern comes from its KKT linear system and is accepted only if it satisfies the
    optimality conditions. Small problems fall back to checking every pattern.
    """
    if not np.isfinite(l1) or l1 < 0:
        raise LoradbError(f"the L1 weight must be a finite number >= 0, got {l1}")
    start = linear(z_trg, Z)
    if l1 == 0 or Z.shape[0] == 1:
        return start
    D = _offsets(z_trg, Z)
    Q = D @ D.T
    candidate = _sparse_candidate(Q, l1, start)
    top = max(1.0, float(np.abs(candidate).max()))
    for tol in (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3):
        support = np.abs(candidate) > tol * top
        if not support.any():
            continue
        signs = np.sign(candidate[support])
        w = _solve_pattern(Q, support, signs, l1)
        if w is not None and _is_optimal(Q, w, support, signs, l1):
            return w
    if Q.shape[0] <= 8:
        return _sparse_by_enumeration(Q, l1)
    raise LoradbError("the sparse weights could not be certified optimal; use fewer adapters (k) or another l1")


def convex(z_trg: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """argmin_w ||z_trg - sum w_i z_i||^2 subject to w >= 0 and sum(w) = 1.

    A bounded solver (SLSQP) proposes the support; the exact weights on it come from the
    KKT system and are accepted only if they are positive there and no adapter off the
    support could lower the fit (its gradient is at least the multiplier). Up to 12
    adapters fall back to checking every support.
    """
    D = _offsets(z_trg, Z)
    k = D.shape[0]
    if k == 1:
        return np.ones(1)
    Q = D @ D.T
    candidate = _convex_candidate(Q)
    for tol in (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3):
        support = candidate > tol * max(1.0, float(candidate.max()))
        w = _solve_pattern(Q, support, np.ones(int(support.sum())), 0.0) if support.any() else None
        if w is not None and _is_convex_optimal(Q, w, support):
            return w
    if k <= 12:
        return _convex_by_enumeration(Q)
    raise LoradbError("the convex weights could not be certified optimal; use fewer adapters (k)")


def _convex_candidate(Q: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize

    k = Q.shape[0]
    res = minimize(lambda w: w @ Q @ w, np.full(k, 1.0 / k), jac=lambda w: 2 * Q @ w, bounds=[(0, None)] * k,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(k)}],
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000})
    return np.clip(res.x, 0, None)


def _is_convex_optimal(Q: np.ndarray, w: np.ndarray, support: np.ndarray) -> bool:
    """KKT of the simplex problem: positive on the support, and off it the gradient 2Qw is
    at least the support's common value mu (moving weight there would not lower the fit)."""
    if np.any(w[support] <= 0):
        return False
    g = 2 * Q @ w
    mu = float(np.mean(g[support]))
    scale = 1e-9 * (1 + np.abs(g).max() + abs(mu))
    return bool(np.all(np.abs(g[support] - mu) <= scale) and np.all(g[~support] >= mu - scale))


def _convex_by_enumeration(Q: np.ndarray) -> np.ndarray:
    """Exact answer by trying every support (2^k - 1 of them; small k only)."""
    best, best_obj = None, np.inf
    for pattern in product((False, True), repeat=Q.shape[0]):
        support = np.array(pattern)
        if not support.any():
            continue
        w = _solve_pattern(Q, support, np.ones(int(support.sum())), 0.0)
        if w is None or not _is_convex_optimal(Q, w, support):
            continue
        obj = float(w @ Q @ w)
        if obj < best_obj:
            best, best_obj = w, obj
    if best is None:
        raise LoradbError("the convex weights could not be certified optimal")
    return best


def _sparse_by_enumeration(Q: np.ndarray, l1: float) -> np.ndarray:
    """Exact answer by trying every sign pattern (3^k of them; small k only)."""
    best, best_obj = None, np.inf
    for pattern in product((-1, 0, 1), repeat=Q.shape[0]):
        signs_full = np.array(pattern, dtype=float)
        support = signs_full != 0
        if not support.any():
            continue
        w = _solve_pattern(Q, support, signs_full[support], l1)
        if w is None or not _is_optimal(Q, w, support, signs_full[support], l1):
            continue
        obj = sparse_objective(Q, w, l1)
        if obj < best_obj:
            best, best_obj = w, obj
    if best is None:
        raise LoradbError("the sparse weights could not be certified optimal; use another l1")
    return best


