"""The global scale s of a composed update: theta = theta0 + s * sum_i w_i delta_theta_i.

Weights that sum to 1 (similarity, uniform, convex) average the chosen updates, so the size
of the update shrinks as more adapters share it: merging all of 30 adapters gives each 1/30,
close to doing nothing. s sets the size apart from the choice. It cannot be chosen from the
target's unlabeled data; the benchmark harness chooses it per library by leave-one-out over
the references' labeled samples (evaluate/scale.py) and a user passes it as `scale`.
"""

from __future__ import annotations

import math

from loradb.errors import LoradbError

MAX_SCALE = 100.0  # far past any useful update; a larger value is a typo, not a choice


def check_scale(scale: float | None) -> None:
    """Refuse a scale that is not a finite number in (0, MAX_SCALE]; None means 1."""
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or not 0 < scale <= MAX_SCALE:
        raise LoradbError(f"`scale` must be a number above 0 and at most {MAX_SCALE:g}, got {scale!r}")
