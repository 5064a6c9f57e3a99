"""Does anything in the library fit this data? A fit score for every search, and the decision
to compose or to keep the base model.

The evidence is the distance from the target to its nearest record in the geometry of the
space's retrieval key. What counts as near is learned from the library itself, by leave one
out: each record in turn plays the target and its distance to its nearest other record is
measured. Where records carry a family (metadata such as family=sentiment), the threshold
tau separates the records that have a relative in the library (another record of their
family) from those that have none, at the best balanced accuracy; without families it is
the 95th percentile of those nearest distances (a target farther from every record than
95% of the records are from their nearest neighbour is a stranger here).

fit = 2^(-d2_nearest / tau): 1 for a target on top of a record, 0.5 at the threshold, toward
0 far away; the decision is to compose at fit >= 0.5 and to abstain below ("nothing in this
library fits this data: keep the base model").
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

import numpy as np

from loradb.errors import LoradbError
from loradb.retrieval.keys import KeyInputs, key_distances

FIT_TO_COMPOSE = 0.5  # the fit at the threshold
QUANTILE = 0.95  # without families: tau is this quantile of the records' nearest-neighbour distances
MAX_TARGETS = 400  # records played as targets in calibration (a seeded sample of a larger space)
COMPOSE, ABSTAIN = "compose", "abstain"
NOTHING_FITS = "nothing in this library fits this data: keep the base model"


@dataclass(frozen=True)
class FitThreshold:
    """A space's calibrated threshold, stored with the key it was measured in."""

    key: str
    tau: float  # squared distance in the key's geometry at which fit = 0.5
    rule: str  # "families" | "quantile" | "no-relatives"
    records: int  # records in the space when it was calibrated
    targets: int  # records played as targets
    balanced_accuracy: float | None = None  # of the families rule on the records themselves
    members: str | None = None  # members_digest of the records it was calibrated on (None: made before loradb kept it)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FitThreshold | None":
        """The stored threshold, or None when the setting is not one (then nothing is judged)."""
        try:
            doc = json.loads(text)
            return cls(**{f: doc[f] for f in cls.__dataclass_fields__ if f in doc})
        except (ValueError, TypeError):
            return None


def members_digest(record_ids) -> str:
    """Which records a space holds, in 16 hex digits: a threshold judges only the records it was
    calibrated on (the same number of records, swapped, is another library)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(record_ids)).encode()).hexdigest()[:16]


def fit_score(d2_nearest: float, tau: float) -> float:
    return float(2.0 ** (-max(d2_nearest, 0.0) / tau))


def decide(d2_nearest: float, threshold: FitThreshold | None, key: str, records: int | None = None,
           members: str | None = None) -> dict:
    """The fit block of a search result: score, decision and why. A threshold made for another
    key, or on other records than the space holds now (`members`, members_digest; else their
    number), does not judge."""
    if threshold is not None and threshold.members is not None and members is not None:
        stale = threshold.members != members
    else:
        stale = threshold is not None and records is not None and threshold.records != records
    if threshold is None or threshold.key != key or stale:
        why = (f"the space has no fit threshold for key {key}" if threshold is None or threshold.key != key else
               f"the space's records changed since its fit threshold was calibrated on {threshold.records} of them")
        return {"score": None, "decision": COMPOSE, "key": key, "d2_nearest": float(d2_nearest),
                "reason": f"{why}: composing without a check (`loradb key calibrate DB --key {key}` sets one)"}
    score = fit_score(d2_nearest, threshold.tau)
    decision = COMPOSE if score >= FIT_TO_COMPOSE else ABSTAIN
    reason = (f"fit {score:.2f} >= {FIT_TO_COMPOSE}: the nearest record is as close as relatives in this library are"
              if decision == COMPOSE else
              f"{NOTHING_FITS} (fit {score:.2f} < {FIT_TO_COMPOSE}: the nearest record is farther than relatives in "
              "this library are from each other)")
    return {"score": score, "decision": decision, "key": key, "d2_nearest": float(d2_nearest), "tau": threshold.tau,
            "rule": threshold.rule, "reason": reason}


def nearest_other_d2(key: str, inputs: KeyInputs, targets: list[int]) -> np.ndarray:
    """For each record in `targets`: squared distance to its nearest other record under `key`,
    with the others as the references (what a search would see without it)."""
    n = inputs.z.shape[0]
    out = np.empty(len(targets))
    for t, i in enumerate(targets):
        others = [j for j in range(n) if j != i]
        out[t] = key_distances(key, inputs.subset(slice(i, i + 1)), inputs.subset(others)).min()
    return out


def calibrate(key: str, inputs: KeyInputs, families: list[str | None] | None = None, *, seed: int = 0,
              members: str | None = None) -> FitThreshold:
    """The space's threshold from its own records (see the module's docstring).

    Raises:
        LoradbError: fewer than three records.
    """
    n = inputs.z.shape[0]
    if n < 3:
        raise LoradbError(f"calibrating a fit threshold needs at least three records; the space has {n}")
    targets = list(range(n)) if n <= MAX_TARGETS else sorted(random.Random(seed).sample(range(n), MAX_TARGETS))
    d2 = nearest_other_d2(key, inputs, targets)
    if families is None or any(f is None for f in families):
        return FitThreshold(key, _positive(float(np.quantile(d2, QUANTILE)), d2), "quantile", n, len(targets), members=members)
    named = [str(f) for f in families]
    counts = {f: named.count(f) for f in set(named)}
    related = np.array([counts[named[i]] > 1 for i in targets])
    if related.all():  # every record has a relative: the loosest relative pair marks the edge
        return FitThreshold(key, _positive(float(d2.max()), d2), "families", n, len(targets), 1.0, members)
    if not related.any():  # no record has one: only a near-duplicate of a record fits
        return FitThreshold(key, _positive(float(d2.min()) / 2, d2), "no-relatives", n, len(targets), members=members)
    tau, accuracy = _best_split(d2, related)
    return FitThreshold(key, _positive(tau, d2), "families", n, len(targets), accuracy, members)


def _best_split(d2: np.ndarray, related: np.ndarray) -> tuple[float, float]:
    """The tau whose rule d2 <= tau best tells records with a relative from those without
    (balanced accuracy); on a tie the smaller tau (abstaining is the safer error)."""
    values = np.unique(d2)
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [values[-1] * 1.0001 + 1e-12]])
    best_tau, best_acc = float(candidates[0]), -1.0
    for tau in candidates:
        near = d2 <= tau
        acc = 0.5 * (near[related].mean() + (~near[~related]).mean())
        if acc > best_acc + 1e-12:
            best_tau, best_acc = float(tau), float(acc)
    return best_tau, best_acc


def _positive(tau: float, d2: np.ndarray) -> float:
    """tau > 0 even when records coincide (a space of duplicates)."""
    return tau if tau > 0 else max(float(d2.max()), 1e-12)
