"""Each weighting method against its formula, exact solutions, and properties (hypothesis)."""

from itertools import product

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loradb.errors import LoradbError
from loradb.weighting.formulas import sparse_objective
from loradb.weighting.registry import ZERO_SHOT, compute_weights


def _problem(seed, k, d):
    rng = np.random.default_rng(seed)
    return rng.normal(size=d), rng.normal(size=(k, d))


def test_uniform_and_nearest():
    z, Z = _problem(0, 4, 6)
    assert np.allclose(compute_weights("uniform", z, Z).weights, 0.25)
    d2 = ((Z - z) ** 2).sum(1)
    w = compute_weights("nearest", z, Z).weights
    assert w[np.argmin(d2)] == 1.0 and w.sum() == 1.0


def test_similarity_is_the_softmax_formula():
    z, Z = _problem(1, 5, 8)
    lam = 0.37
    d2 = ((Z - z) ** 2).sum(1)
    expected = np.exp(-lam * d2) / np.exp(-lam * d2).sum()
    r = compute_weights("similarity", z, Z, temperature=lam)
    assert np.allclose(r.weights, expected, rtol=1e-12, atol=0)
    assert r.params == {"temperature": lam}


def test_similarity_is_stable_for_huge_distances():
    z = np.zeros(3)
    Z = np.array([[1e3, 0, 0], [2e3, 0, 0]])
    w = compute_weights("similarity", z, Z, temperature=1.0).weights
    assert np.isfinite(w).all() and np.allclose(w, [1.0, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_linear_recovers_affine_combination_exactly(seed):
    rng = np.random.default_rng(seed)
    k, d = 4, 10
    Z = rng.normal(size=(k, d))
    w_star = rng.normal(size=k)
    w_star /= w_star.sum()  # any real weights summing to 1, negative ones included
    z = w_star @ Z
    r = compute_weights("linear", z, Z)
    assert np.allclose(r.weights, w_star, atol=1e-10)
    assert r.residual < 1e-10


def test_linear_is_the_constrained_least_squares_optimum():
    z, Z = _problem(3, 4, 12)
    w = compute_weights("linear", z, Z).weights
    # KKT: the gradient of ||z - Z^T w||^2 is constant across coordinates at the optimum
    g = -2 * Z @ (z - w @ Z)
    assert np.allclose(g, g.mean(), atol=1e-9) and np.isclose(w.sum(), 1.0)


def test_degenerate_cases():
    Z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a duplicate z
    z = np.array([0.5, 0.5])
    lin = compute_weights("linear", z, Z).weights
    assert np.allclose(lin, [0.25, 0.25, 0.5])  # duplicates share weight symmetrically
    for method in ZERO_SHOT:  # k = 1
        r = compute_weights(method, z, Z[:1])
        assert np.allclose(r.weights, [1.0])
    for method in ("linear", "sparse", "nearest"):  # target equal to a stored z
        r = compute_weights(method, Z[2], Z)
        assert r.residual < 1e-12 and np.isclose(r.weights.sum(), 1.0)
        assert np.isclose(r.weights[2], 1.0)
    r = compute_weights("similarity", z, np.array([[1.0, 2.0], [1.0, 2.0]]))  # all identical
    assert np.allclose(r.weights, 0.5)


def _sparse_reference(z, Z, l1):
    """Brute force: the best of all sign patterns' equality-constrained minimisers."""
    D = z[None] - Z
    Q = D @ D.T
    k = len(Z)
    best, best_obj = None, np.inf
    for pattern in product((-1.0, 0.0, 1.0), repeat=k):
        s = np.array(pattern)
        idx = np.flatnonzero(s)
        if idx.size == 0:
            continue
        m = idx.size
        kkt = np.block([[2 * Q[np.ix_(idx, idx)], -np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
        try:
            sol = np.linalg.solve(kkt, np.concatenate([-l1 * s[idx], [1.0]]))
        except np.linalg.LinAlgError:
            continue
        w = np.zeros(k)
        w[idx] = sol[:m]
        if np.any(np.sign(w[idx]) != s[idx]):
            continue  # not in this orthant: the orthant's optimum lies on a smaller pattern
        obj = sparse_objective(Q, w, l1)
        if obj < best_obj:
            best, best_obj = w, obj
    return best


@pytest.mark.parametrize("seed", range(12))
def test_sparse_matches_reference_qp(seed):
    rng = np.random.default_rng(seed)
    k, d = int(rng.integers(2, 6)), 8  # k <= d: the optimum is unique
    z, Z = rng.normal(size=d), rng.normal(size=(k, d))
    z = z * 0.3 + 1.5 * Z[0]  # an extrapolating target, so linear weights go negative
    l1 = float(rng.uniform(0.01, 2.0))
    ours = compute_weights("sparse", z, Z, l1=l1).weights
    assert np.abs(ours - _sparse_reference(z, Z, l1)).max() < 1e-6


def test_sparse_pulls_negative_weights_to_zero():
    rng = np.random.default_rng(7)
    Z = rng.normal(size=(4, 6))
    z = 1.6 * Z[0] - 0.6 * Z[1]
    lin = compute_weights("linear", z, Z).weights
    assert lin.min() < -0.5
    sp = compute_weights("sparse", z, Z, l1=50.0).weights
    assert sp.min() > -1e-12 and np.isclose(sp.sum(), 1.0)
    assert compute_weights("sparse", z, Z, l1=0.0).weights == pytest.approx(lin)


def _convex_reference(z, Z):
    """Brute force: the best non-negative equality-constrained minimiser over every support."""
    D = z[None] - Z
    Q = D @ D.T
    k = len(Z)
    best, best_obj = None, np.inf
    for pattern in product((False, True), repeat=k):
        idx = np.flatnonzero(pattern)
        if idx.size == 0:
            continue
        m = idx.size
        kkt = np.block([[2 * Q[np.ix_(idx, idx)], -np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
        sol = np.linalg.lstsq(kkt, np.concatenate([np.zeros(m), [1.0]]), rcond=None)[0]
        w = np.zeros(k)
        w[idx] = sol[:m]
        if w.min() < -1e-12 or abs(w.sum() - 1) > 1e-9:
            continue
        obj = float(w @ Q @ w)
        if obj < best_obj - 1e-15:
            best, best_obj = w, obj
    return best, best_obj


@pytest.mark.parametrize("seed", range(16))
def test_convex_matches_reference_qp_and_never_extrapolates(seed):
    rng = np.random.default_rng(seed)
    k, d = int(rng.integers(2, 8)), 10
    Z = rng.normal(size=(k, d))
    z = 1.6 * Z[0] - 0.6 * Z[1] + 0.2 * rng.normal(size=d) if seed % 2 else rng.normal(size=d)  # outside the hull
    ours = compute_weights("convex", z, Z).weights
    ref, ref_obj = _convex_reference(z, Z)
    D = z[None] - Z
    assert ours.min() >= 0 and np.isclose(ours.sum(), 1.0)
    assert float(ours @ (D @ D.T) @ ours) <= ref_obj + 1e-9 and np.abs(ours - ref).max() < 1e-6
    assert compute_weights("linear", z, Z).weights.min() < 0 or seed % 2 == 0  # the paper's linear extrapolates here


def test_convex_recovers_a_planted_mixture_of_three():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(8, 16))
    truth = np.zeros(8)
    truth[[1, 4, 6]] = [0.5, 0.3, 0.2]
    w = compute_weights("convex", truth @ Z, Z).weights
    assert np.abs(w - truth).max() < 1e-8  # the relatives carry the weight, the five others exactly none
    far = compute_weights("convex", 3.0 * Z[2] - 2.0 * Z[5], Z).weights  # far outside: the nearest vertex or edge
    assert far.min() >= 0 and np.isclose(far.sum(), 1.0) and far[2] > 0.9


def test_bad_names_and_parameters_are_refused():
    z, Z = _problem(0, 3, 4)
    with pytest.raises(LoradbError, match="nearest, uniform, similarity, linear, sparse"):
        compute_weights("softmax", z, Z)
    with pytest.raises(LoradbError):
        compute_weights("similarity", z, Z, temperature=-1)
    with pytest.raises(LoradbError):
        compute_weights("sparse", z, Z, l1=float("nan"))
    with pytest.raises(LoradbError):
        compute_weights("linear", z * np.nan, Z)


finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def problems(draw):
    k = draw(st.integers(1, 6))
    d = draw(st.integers(1, 8))
    Z = draw(arrays(np.float64, (k, d), elements=finite))
    z = draw(arrays(np.float64, (d,), elements=finite))
    return z, Z


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(sorted(ZERO_SHOT)))
def test_weights_sum_to_one(problem, method):
    z, Z = problem
    r = compute_weights(method, z, Z, temperature=0.5, l1=0.3)
    assert np.isfinite(r.weights).all()
    assert abs(r.weights.sum() - 1.0) < 1e-8
    assert r.residual == pytest.approx(np.linalg.norm(z - r.weights @ Z), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["uniform", "nearest", "similarity", "linear", "sparse", "convex"]), st.randoms())
def test_permutation_equivariance(problem, method, rnd):
    z, Z = problem
    d2 = ((Z - z) ** 2).sum(1)
    assume(len(np.unique(np.round(d2, 6))) == len(d2))  # ties make "nearest" pick by position
    if method in ("linear", "sparse", "convex"):  # equivariance needs a unique optimum: affinely independent z_i
        assume(len(Z) == 1 or np.linalg.matrix_rank(Z[1:] - Z[0], tol=1e-6) == len(Z) - 1)
        assume(np.linalg.cond(Z[1:] - Z[0]) < 1e6 if len(Z) > 1 else True)
    perm = list(range(len(Z)))
    rnd.shuffle(perm)
    w = compute_weights(method, z, Z, temperature=0.5, l1=0.3).weights
    wp = compute_weights(method, z, Z[perm], temperature=0.5, l1=0.3).weights
    assert np.allclose(wp, w[perm], atol=1e-6)
