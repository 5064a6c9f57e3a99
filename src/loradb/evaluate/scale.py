"""The update's size apart from the choice of adapters (weighting/scale.py): the global scale
s of the default pipeline's composition, and lambda of merge-all as task arithmetic
(theta0 + lambda * sum_i delta_i), both chosen per fold by leave-one-out over its references.

Each sampled reference plays the target: its z from its training texts, the fold's other
references the library, the metric on a sample of its own labeled training set (Scorer).
The held-out domain's labels are never read. The default pipeline's candidates are judged
only on references it would compose for (the fold's fit threshold): where it abstains the
scale changes nothing.
"""

from __future__ import annotations

import random

import numpy as np

from loradb.evaluate.config import EvalConfig
from loradb.evaluate.domains import Domain
from loradb.evaluate.fold import reference_neighbours
from loradb.retrieval.fit import ABSTAIN, FitThreshold, decide
from loradb.weighting.registry import compute_weights

AVERAGE = "average"  # merge-all's plain mean (lambda = 1/n), the first candidate: it wins ties


def _players(refs: list[Domain], held: str, config: EvalConfig) -> list[Domain]:
    """The references that play the target: all of them, or a seeded sample of scale_references."""
    if len(refs) <= config.scale_references:
        return list(refs)
    rng = random.Random(f"{config.seed}-scale-{held}")
    return sorted(rng.sample(refs, config.scale_references), key=lambda d: d.name)


def _best(grid, scores: dict) -> tuple:
    """The candidate with the best mean; the first of equal means (the grid's default first)."""
    means = {c: float(np.mean(scores[c])) for c in grid}
    return max(grid, key=lambda c: means[c]), means


def tune_default_scale(refs: list[Domain], held: str, z_train: dict, scorer, key: str, threshold: FitThreshold | None,
                       config: EvalConfig) -> dict:
    """s for the default pipeline (config.default_method at k, the fold's key and fit threshold)."""
    scores: dict = {s: [] for s in config.scale_grid}
    judged, abstained = [], []
    for r in _players(refs, held, config):
        loo = reference_neighbours(r, refs, z_train, key, config.k)
        if decide(float(loo.d2.min()), threshold, key)["decision"] == ABSTAIN:
            abstained.append(r.name)
            continue
        w = compute_weights(config.default_method, loo.q, loo.R[loo.near]).weights
        for s in config.scale_grid:
            scores[s].append(scorer(r, loo.names(), s * np.asarray(w)))
        judged.append(r.name)
    if not judged:  # the pipeline abstains on every reference: nothing to choose on, keep s = 1
        return {"scale": 1.0, "scores": {}, "references": [], "abstained": abstained}
    best, means = _best(config.scale_grid, scores)
    return {"scale": float(best), "scores": {str(s): m for s, m in means.items()}, "references": judged,
            "abstained": abstained}


def tune_task_arithmetic(refs: list[Domain], held: str, scorer, config: EvalConfig) -> dict:
    """lambda of merge-all: every other reference at weight lambda (or their plain average)."""
    grid: tuple[str | float, ...] = (AVERAGE, *config.task_arithmetic_grid)
    scores: dict = {c: [] for c in grid}
    players = _players(refs, held, config)
    for r in players:
        others = [c.name for c in refs if c.name != r.name]
        for c in grid:
            lam = 1.0 / len(others) if c == AVERAGE else float(c)
            scores[c].append(scorer(r, others, [lam] * len(others)))
    best, means = _best(grid, scores)
    return {"lambda": best, "scores": {str(c): m for c, m in means.items()}, "references": [r.name for r in players]}


def task_arithmetic_weights(refs: list[Domain], choice: str | float) -> dict[str, float]:
    """merge-all's weights at the chosen lambda, for the fold's whole library."""
    lam = 1.0 / len(refs) if choice == AVERAGE else float(choice)
    return {r.name: lam for r in refs}
