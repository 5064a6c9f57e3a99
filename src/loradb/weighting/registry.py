"""Every weighting method, in one table: the choices of `--method`, the server's allowed
values, the harness's rows and the dispatch all come from METHODS.

A zero-shot method is a formula of the target's z and the retrieved adapters' z (see
formulas.py) and the hyper-parameters it takes; a few-shot method is a learner that
starts from a zero-shot method's weights and fits them on a few labeled target examples
(see learned.py). Adding a method is one entry here (and its function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError, registered
from loradb.weighting.formulas import (WeightResult, auto_l1, auto_temperature, check_inputs, convex, linear, nearest,
                                       residual, similarity, sparse, squared_distances, uniform)
from loradb.weighting.learned import learn_weights, lorahub_weights

DEFAULT_METHOD = "similarity"
HYPERPARAMETERS = {"temperature": auto_temperature, "l1": auto_l1}  # each one's automatic value from the d_i^2


@dataclass(frozen=True)
class WeightMethod:
    """A named weighting method.

    formula: zero-shot weights, formula(z_trg, Z, **params) -> w.
    params: the hyper-parameters the formula takes (names in HYPERPARAMETERS).
    learner: few-shot weights, learner(classifier, factors, texts, labels, init=w0, **{budget[0]: n}).
    starts_from: the zero-shot method a learner starts from (and whose retrieval it keeps).
    budget: the learner's keyword for its work budget and its default.
    """

    name: str
    help: str
    formula: Callable[..., np.ndarray] | None = None
    params: tuple[str, ...] = ()
    learner: Callable | None = None
    starts_from: str | None = None
    budget: tuple[str, int] | None = None

    @property
    def needs_shots(self) -> bool:
        return self.learner is not None


METHODS: dict[str, WeightMethod] = {
    m.name: m
    for m in (
        WeightMethod("nearest", "all weight on the closest adapter", nearest),
        WeightMethod("uniform", "w_i = 1/k", uniform),
        WeightMethod("similarity", "softmax of -lambda_1 d_i^2", similarity, params=("temperature",)),
        WeightMethod("linear", "least squares fit of z_trg, sum(w) = 1", linear),
        WeightMethod("sparse", "linear + lambda_2 ||w||_1", sparse, params=("l1",)),
        WeightMethod("convex", "least squares fit of z_trg by a convex combination: w >= 0, sum(w) = 1 (the bounded "
                     "linear and sparse: never extrapolates)", convex),
        WeightMethod("learned", "softmax weights fitted by gradient on labeled shots", learner=learn_weights,
                     starts_from="similarity", budget=("steps", 40)),
        WeightMethod("lorahub", "LoraHub: Powell search of weights in [-1.5, 1.5] on labeled shots", learner=lorahub_weights,
                     starts_from="similarity", budget=("max_evaluations", 60)),
    )
}
ZERO_SHOT = tuple(n for n, m in METHODS.items() if not m.needs_shots)
FEW_SHOT = tuple(n for n, m in METHODS.items() if m.needs_shots)


def get_method(name: str) -> WeightMethod:
    """The registered method called `name`, or an error listing the valid names."""
    return registered(METHODS, name, "weighting method")


def zero_shot_method(name: str) -> WeightMethod:
    """A method that weighs from representations alone (what search and the server compute)."""
    if name in FEW_SHOT:
        raise LoradbError(f"`method` {name} learns weights from labeled examples (`shots`); it composes, it does not search")
    return registered({n: METHODS[n] for n in ZERO_SHOT}, name, "weighting method")


def method_help(names=None) -> str:
    """'a | b | ...' for help texts."""
    return " | ".join(names or METHODS)


def compute_weights(method: str, z_trg: np.ndarray, Z: np.ndarray, *, temperature: float | None = None,
                    l1: float | None = None) -> WeightResult:
    """Weights for the retrieved adapters' representations Z (k, d) given the target z_trg (d,).

    Args:
        method: a zero-shot name in METHODS.
        z_trg: the target dataset's representation.
        Z: the retrieved adapters' representations, one row each.
        temperature: lambda_1 for `similarity`; None means auto_temperature.
        l1: lambda_2 for `sparse`; None means auto_l1.
    Returns:
        WeightResult with the weights, the residual and the hyper-parameters used.
    """
    m = zero_shot_method(method)
    assert m.formula is not None  # every zero-shot method has one
    z, Zf = check_inputs(z_trg, Z)
    d2 = squared_distances(z, Zf)
    given = {"temperature": temperature, "l1": l1}
    params = {p: HYPERPARAMETERS[p](d2) if (value := given[p]) is None else float(value) for p in m.params}
    w = m.formula(z, Zf, **params)
    return WeightResult(method=m.name, weights=w, residual=residual(z, Zf, w), params=params)
