"""The differential-privacy release of z: the noise calibration against the definition,
the noise actually added, and clipping."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from loradb.errors import LoradbError
from loradb.retrieval.privacy import DPConfig, _privacy_loss_delta, clip_rows, gaussian_sigma, privatize_mean


def hockey_stick_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """delta(epsilon) of N(0, s^2) vs N(Delta, s^2) straight from the definition:
    integral of max(0, p(x) - e^eps q(x)) dx, by numerical quadrature."""
    p, q = stats.norm(0, sigma), stats.norm(sensitivity, sigma)
    lo, hi = -12 * sigma - sensitivity, 12 * sigma + sensitivity
    value, _ = integrate.quad(lambda x: max(0.0, p.pdf(x) - math.exp(epsilon) * q.pdf(x)), lo, hi, limit=500, points=[0.0])
    return value


@pytest.mark.parametrize("epsilon,delta", [(0.1, 1e-5), (1.0, 1e-5), (4.0, 1e-6), (10.0, 1e-3)])
def test_sigma_is_the_smallest_that_meets_the_definition(epsilon, delta):
    sensitivity = 0.37
    sigma = gaussian_sigma(sensitivity, epsilon, delta)
    assert hockey_stick_delta(sigma, sensitivity, epsilon) <= delta * (1 + 1e-4)
    assert hockey_stick_delta(0.98 * sigma, sensitivity, epsilon) > delta  # 2% less noise breaks the guarantee
    assert abs(_privacy_loss_delta(sigma, sensitivity, epsilon) - hockey_stick_delta(sigma, sensitivity, epsilon)) < 1e-3 * delta
    if epsilon < 1:  # never more noise than the classic sufficient bound
        assert sigma <= sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def test_release_adds_noise_of_that_scale_around_the_clipped_mean():
    rng = np.random.default_rng(0)
    n, dim = 200, 20000
    features = rng.normal(0, 3, size=(n, dim)) / math.sqrt(dim) * 10  # norms about 30
    config = DPConfig(epsilon=1.0, delta=1e-5, clip=5.0)
    clipped = clip_rows(features, config.clip)
    z, privacy = privatize_mean(clipped.sum(0), n, config)
    noise = z - clipped.mean(0)
    assert privacy["sensitivity"] == pytest.approx(2 * 5.0 / n)
    assert privacy["sigma"] == pytest.approx(gaussian_sigma(2 * 5.0 / n, 1.0, 1e-5))
    assert noise.std() == pytest.approx(privacy["sigma"], rel=0.03)
    assert abs(noise.mean()) < 4 * privacy["sigma"] / math.sqrt(dim)
    z2, _ = privatize_mean(clipped.sum(0), n, config)
    assert not np.array_equal(z, z2)  # fresh noise every release


def test_clipping_bounds_norms_and_keeps_directions():
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    c = clip_rows(x, 1.0)
    np.testing.assert_allclose(c, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])


@pytest.mark.parametrize("config", [DPConfig(0, 1e-5, 1), DPConfig(1, 0, 1), DPConfig(1, 1, 1), DPConfig(1, 1e-5, -1),
                                    DPConfig(float("nan"), 1e-5, 1), DPConfig(1, 1e-5, float("inf"))])
def test_bad_budgets_refused(config):
    with pytest.raises(LoradbError):
        config.validate()


def test_delta_must_be_below_one_over_n():
    with pytest.raises(LoradbError, match="not below 1/n"):
        privatize_mean(np.zeros(4), 10, DPConfig(1.0, 0.2, 1.0))


def _released_doc(bert):
    """The wire document of a real DP release (and its sidecar twin written to disk)."""
    from test_cli import TEXTS

    from loradb.retrieval.represent import represent_texts
    from loradb.service.wire import representation_doc

    rep = represent_texts(bert, TEXTS["cooking"] * 20, progress=False, dp=DPConfig(2.0, 1e-4, 1.0))
    return representation_doc(rep)


def _tampered(doc, **privacy):
    return {**doc, "privacy": {**doc["privacy"], **privacy}}


def test_received_privacy_blocks_are_recomputed_not_trusted(bert):
    from loradb.service.wire import representation_from_doc

    doc = _released_doc(bert)
    assert representation_from_doc(doc, max_dim=64).privacy == doc["privacy"]  # the real release passes
    p = doc["privacy"]
    assert representation_from_doc(_tampered(doc, sigma=p["sigma"] * 2), max_dim=64).privacy["sigma"] == p["sigma"] * 2
    cases = {
        "sigma below the calibration": (_tampered(doc, sigma=p["sigma"] / 2), "the stated guarantee does not hold"),
        "a larger epsilon than the noise gives": (_tampered(doc, epsilon=0.5), "the stated guarantee does not hold"),
        "sensitivity not 2C/n": (_tampered(doc, sensitivity=p["sensitivity"] / 10), "2 * clip / n"),
        "n other than the representation's": (_tampered(doc, n_samples=p["n_samples"] * 10), "own example count"),
        "another mechanism": (_tampered(doc, mechanism="laplace"), "mechanism must be"),
        "an extra field": (_tampered(doc, audited=True), "unknown field(s) audited"),
        "a missing field": ({**doc, "privacy": {k: v for k, v in p.items() if k != "clip"}}, "missing clip"),
        "var beside a private z": ({**doc, "var": [1.0] * len(doc["z"])}, "carries no var"),
        "an unknown top-level field": ({**doc, "labels_seen": ["a"]}, "unknown field(s) labels_seen"),
        "an unknown space field": ({**doc, "space": {**doc["space"], "extra": 1}}, "unknown field(s) extra"),
        "another format": ({**doc, "format": "loradb.representation.v9"}, "is not 'loradb.representation.v1'"),
    }
    for what, (bad, match) in cases.items():
        with pytest.raises(LoradbError, match=match.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
            representation_from_doc(bad, max_dim=64)
            pytest.fail(what)


def test_a_sidecar_with_a_forged_privacy_block_is_refused(bert, tmp_path):
    import json

    from loradb.retrieval.targets import representation_from_sidecar

    doc = _released_doc(bert)
    z = np.asarray(doc["z"], dtype=np.float32)
    side = {k: v for k, v in doc.items() if k != "z"}
    assert representation_from_sidecar(z, json.loads(json.dumps(side)), "t.npy").privacy is not None
    with pytest.raises(LoradbError, match="the stated guarantee does not hold"):
        representation_from_sidecar(z, _tampered(side, sigma=1e-9), "t.npy")
