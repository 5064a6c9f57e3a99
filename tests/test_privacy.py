"""The differential-privacy release of z: the noise calibration against the definition,
the noise actually added, and clipping."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from loradb.errors import LoradbError
from loradb.privacy import DPConfig, _privacy_loss_delta, clip_rows, gaussian_sigma, privatize_mean


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
