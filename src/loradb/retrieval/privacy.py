"""Differentially private dataset representations: clipped features, Gaussian noise on the mean.

z_dp = (1/n) sum_x clip_C(E(x)) + N(0, sigma^2 I), clip_C(v) = v * min(1, C / ||v||).

Neighbouring datasets differ in one example (replace-one; n itself is released), so the
mean of clipped features moves by at most Delta = 2C/n in L2 norm. sigma is the smallest
noise for which the Gaussian mechanism is (epsilon, delta)-DP, calibrated exactly by the
analytic Gaussian mechanism (Balle & Wang, ICML 2018, Theorem 8), valid for every
epsilon > 0, not only epsilon < 1 as the classic sqrt(2 ln(1.25/delta)) bound.

What this protects: whether any one example (one line of the dataset) was in it, as far
as the released vector tells. What it does not: the adapter trained on the same data
(its weights are not private), the number of examples n, repeated releases (each costs
its own epsilon), or floating-point side channels of the noise sampler.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError

MECHANISM = "gaussian, analytic calibration (Balle & Wang 2018)"
ADJACENCY = "replace one example; the example count n is public"
MAX_EPSILON = 50.0

@dataclass(frozen=True)
class DPConfig:
    """The privacy budget of one released representation and the clipping norm."""

    epsilon: float
    delta: float
    clip: float

    def validate(self) -> "DPConfig":
        if not (math.isfinite(self.epsilon) and 0 < self.epsilon <= MAX_EPSILON):
            raise LoradbError(f"--dp-epsilon must be in (0, {MAX_EPSILON:g}], got {self.epsilon}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise LoradbError(f"`dp_delta` must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise LoradbError(f"`dp_clip` must be a positive feature norm, got {self.clip}")
        return self


def _privacy_loss_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The smallest delta for which N(0, sigma^2) noise on a Delta-sensitive query is epsilon-DP
    (Balle & Wang, Theorem 8), computed in log space so large epsilon does not overflow."""
    from scipy.special import log_ndtr

    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    return math.exp(log_ndtr(a - b)) - math.exp(epsilon + log_ndtr(-a - b))


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest sigma making the Gaussian mechanism (epsilon, delta)-DP, to 1e-10 relative."""
    lo, hi = 1e-12 * sensitivity, sensitivity
    while _privacy_loss_delta(hi, sensitivity, epsilon) > delta:  # the loss falls as sigma grows
        lo, hi = hi, hi * 2
    while hi - lo > 1e-10 * hi:
        mid = (lo + hi) / 2
        if _privacy_loss_delta(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def clip_rows(features: np.ndarray, clip: float) -> np.ndarray:
    """Scale each row to L2 norm at most `clip` (float64)."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-300))


def privatize_mean(clipped_sum: np.ndarray, n: int, config: DPConfig) -> tuple[np.ndarray, dict]:
    """Release the mean of n clipped feature vectors with Gaussian noise.

    Args:
        clipped_sum: the sum of the n clipped features, (dim,).
        n: how many examples were summed (released as is).
        config: epsilon, delta and the clipping norm the features were clipped to.
    Returns:
        (the noisy mean as float32, the guarantee as a dict to store with it).
    """
    if n < 1:
        raise LoradbError("the dataset holds no examples")
    if config.delta >= 1.0 / n:
        raise LoradbError(f"`dp_delta` {config.delta:g} is not below 1/n = {1.0 / n:g}: at that delta the release could expose "
                          "a whole example; choose a smaller delta")
    sensitivity = 2.0 * config.clip / n
    sigma = gaussian_sigma(sensitivity, config.epsilon, config.delta)
    rng = np.random.default_rng(secrets.randbits(128))  # fresh OS entropy: the noise must not be reproducible
    z = clipped_sum / n + rng.normal(0.0, sigma, size=clipped_sum.shape)
    return z.astype(np.float32), describe(config, n, sigma, sensitivity)


def describe(config: DPConfig, n: int, sigma: float, sensitivity: float) -> dict:
    return {"epsilon": config.epsilon, "delta": config.delta, "clip": config.clip, "sigma": sigma,
            "sensitivity": sensitivity, "n_samples": n, "mechanism": MECHANISM, "adjacency": ADJACENCY}


def statement(privacy: dict) -> str:
    """One line stating the guarantee, for command output."""
    return (f"(epsilon={privacy['epsilon']:g}, delta={privacy['delta']:g})-differentially private for each example "
            f"({privacy['adjacency']}): features clipped to norm {privacy['clip']:g}, Gaussian noise sigma "
            f"{privacy['sigma']:.4g} on the mean of {privacy['n_samples']}")


PRIVACY_FIELDS = ("epsilon", "delta", "clip", "sigma", "sensitivity", "n_samples", "mechanism", "adjacency")


def check_privacy_doc(doc, n_samples: int | None) -> dict | None:
    """A received privacy description (sidecar, upload), refused unless it is exactly what
    `privatize_mean` writes and its noise really gives the stated guarantee: sensitivity and
    sigma are recomputed from (epsilon, delta, clip, n), and `n_samples` is the count the
    representation itself states. None stays None.

    A larger sigma than needed is accepted (more noise keeps the guarantee); a smaller one,
    another mechanism, or any field that is not ours is refused: `private: true` is shown
    to everyone who retrieves the record, so it is never taken on trust.
    """
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise LoradbError("privacy must be an object with " + ", ".join(PRIVACY_FIELDS))
    unknown, missing = sorted(set(doc) - set(PRIVACY_FIELDS)), [k for k in PRIVACY_FIELDS if k not in doc]
    if unknown or missing:
        raise LoradbError(f"malformed privacy description: {'unknown field(s) ' + ', '.join(map(str, unknown)) if unknown else ''}"
                          f"{'; ' if unknown and missing else ''}{'missing ' + ', '.join(missing) if missing else ''}")
    numbers = {k: doc[k] for k in ("epsilon", "delta", "clip", "sigma", "sensitivity")}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers.values()):
        raise LoradbError("malformed privacy description: epsilon, delta, clip, sigma and sensitivity must be finite numbers")
    n = doc["n_samples"]
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1) or n != n_samples:
        raise LoradbError(f"privacy n_samples {n!r} must be the representation's own example count ({n_samples})")
    if doc["mechanism"] != MECHANISM or doc["adjacency"] != ADJACENCY:
        raise LoradbError(f"privacy mechanism must be {MECHANISM!r} with adjacency {ADJACENCY!r}: loradb can check no other")
    config = DPConfig(float(doc["epsilon"]), float(doc["delta"]), float(doc["clip"])).validate()
    if config.delta >= 1.0 / n:
        raise LoradbError(f"privacy delta {config.delta:g} is not below 1/n = {1.0 / n:g}")
    sensitivity = 2.0 * config.clip / n
    if not math.isclose(float(doc["sensitivity"]), sensitivity, rel_tol=1e-9):
        raise LoradbError(f"privacy sensitivity {doc['sensitivity']:g} is not 2 * clip / n = {sensitivity:g}")
    needed = gaussian_sigma(sensitivity, config.epsilon, config.delta)
    if float(doc["sigma"]) < needed * (1 - 1e-8):
        raise LoradbError(f"privacy sigma {doc['sigma']:.6g} is below the {needed:.6g} that (epsilon={config.epsilon:g}, "
                          f"delta={config.delta:g}) needs at clip {config.clip:g} and n {n}: the stated guarantee does not hold")
    return dict(doc)
