"""Retrieval keys: how a target and the stored records are compared, in pure numpy.

The paper ranks adapters by squared L2 between raw mean features. Among adapters of
*different* tasks that is dominated by hubs: a prototype of small norm near the centre of
all prototypes is nearest to every target. So the key is a choice. Every key is a feature
map phi applied to the target and to each record; ranking is by squared L2 between the
mapped vectors, and the weighting methods (similarity, linear, sparse) run on the mapped
vectors too, so one key gives one geometry for both retrieval and weights.

The map may use statistics of the references in the space (`References`): their mean
prototype and their pooled within-dataset variance. What each key needs from a record
or a target besides z: `var` (per-feature variance of the dataset's features, stored
with the record) or `task` (the embedding of the task's label prompts or instruction
under the same base model and recipe: the idea behind LoraRetriever's instruction
retrieval; a zero-shot user has it, since any classifier or generator needs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError, registered

RAW_L2 = "raw-l2"  # the paper's key; what records without variance or task keep working with
_EPS = 1e-12

@dataclass(frozen=True)
class KeyInputs:
    """What a key may read of n datasets (rows): z always, var and task when known."""

    z: np.ndarray  # (n, d)
    var: np.ndarray | None = None  # (n, d): per-feature variance of each dataset's features
    task: np.ndarray | None = None  # (n, d): embedding of each dataset's task prompts / instruction

    @classmethod
    def of(cls, z, var=None, task=None) -> "KeyInputs":
        as2d = (lambda a: np.atleast_2d(np.asarray(a, dtype=np.float64)))
        return cls(as2d(z), None if var is None else as2d(var), None if task is None else as2d(task))

    @classmethod
    def stacked(cls, items) -> "KeyInputs":
        """Rows of records or representations (anything with z, var, task_z); var and task
        only when every item has them."""
        def rows(attr):
            values = [getattr(item, attr) for item in items]
            return None if any(v is None for v in values) else np.stack(values)

        return cls.of(rows("z"), rows("var"), rows("task_z"))

    def subset(self, index) -> "KeyInputs":
        """The datasets at `index` (a list of row numbers or a slice)."""
        return KeyInputs(self.z[index], None if self.var is None else self.var[index],
                         None if self.task is None else self.task[index])

@dataclass(frozen=True)
class References:
    """Statistics of a space's reference records that some keys normalise by."""

    mean: np.ndarray  # (d,): the mean prototype
    within_var: np.ndarray | None  # (d,): mean of the records' per-feature variances (pooled within-dataset)

    @classmethod
    def of(cls, refs: KeyInputs) -> "References":
        return cls(refs.z.mean(axis=0), None if refs.var is None else refs.var.mean(axis=0))

    @classmethod
    def streamed(cls, chunks) -> "tuple[References | None, int]":
        """(the References of the rows of several KeyInputs, how many rows), summed chunk by
        chunk (a large space need not be in memory at once); (None, 0) for no rows."""
        total, z_sum, var_sum, every_var = 0, np.zeros(0), np.zeros(0), True
        for x in chunks:
            z_sum = x.z.sum(axis=0) if total == 0 else z_sum + x.z.sum(axis=0)
            every_var = every_var and x.var is not None
            if every_var:
                var_sum = x.var.sum(axis=0) if total == 0 else var_sum + x.var.sum(axis=0)
            total += len(x.z)
        if not total:
            return None, 0
        return cls(z_sum / total, var_sum / total if every_var else None), total

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "within_var": None if self.within_var is None else self.within_var.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "References":
        return cls(np.asarray(d["mean"], dtype=np.float64),
                   None if d.get("within_var") is None else np.asarray(d["within_var"], dtype=np.float64))


# an index's References snapshot is retaken (the index rebuilt) once the space's size has moved
# this far from the size it was taken at: the mean of n records moves by O(1/n) a record
REFERENCES_DRIFT = 0.1


def snapshot_drifted(snapshot: dict | None, size: int) -> bool:
    """Whether an index's References snapshot ({"records": n, ...References.to_json()}, None for
    a key that reads none) is stale for a space of `size` records."""
    return snapshot is not None and abs(size - snapshot["records"]) > REFERENCES_DRIFT * snapshot["records"]


def _needed(part: np.ndarray | None) -> np.ndarray:
    """A part a key declares it needs (needs_var / needs_task): key_features refused its absence."""
    assert part is not None
    return part


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _raw(x: KeyInputs, refs: References) -> np.ndarray:
    return x.z


def _cosine(x: KeyInputs, refs: References) -> np.ndarray:
    return _unit(x.z)


def _centered_cosine(x: KeyInputs, refs: References) -> np.ndarray:
    return _unit(x.z - refs.mean)


def _whitened(x: KeyInputs, refs: References) -> np.ndarray:
    # Mahalanobis distance under the pooled within-dataset covariance (its diagonal): a
    # feature that varies a lot inside every dataset says little about which dataset it is
    within_var = _needed(refs.within_var)
    scale = np.sqrt(within_var + 1e-6 * float(within_var.mean()) + _EPS)
    return (x.z - refs.mean) / scale


def _frechet(x: KeyInputs, refs: References) -> np.ndarray:
    # the Frechet (2-Wasserstein) distance between diagonal Gaussians N(z, var) is
    # ||z1 - z2||^2 + ||sqrt(var1) - sqrt(var2)||^2: squared L2 of [z, sqrt(var)]
    return np.concatenate([x.z, np.sqrt(np.maximum(_needed(x.var), 0.0))], axis=1)


def _task(x: KeyInputs, refs: References) -> np.ndarray:
    return _unit(_needed(x.task))


def _task_centered(x: KeyInputs, refs: References) -> np.ndarray:
    # both parts unit vectors, so each contributes a squared distance in [0, 4]
    return np.concatenate([_unit(_needed(x.task)), _unit(x.z - refs.mean)], axis=1)

@dataclass(frozen=True)
class RetrievalKey:
    name: str
    features: Callable[[KeyInputs, References], np.ndarray]
    needs_var: bool = False
    needs_task: bool = False
    reads_references: bool = False  # the map reads the space's References (its mean or pooled variance)
    help: str = ""


KEYS: dict[str, RetrievalKey] = {
    k.name: k
    for k in (
        RetrievalKey(RAW_L2, _raw, help="squared L2 between mean features (the paper)"),
        RetrievalKey("cosine", _cosine, help="cosine distance between mean features"),
        RetrievalKey("centered-cosine", _centered_cosine, reads_references=True, help="cosine after subtracting the references' mean prototype (against hubs)"),
        RetrievalKey("whitened", _whitened, needs_var=True, reads_references=True, help="Mahalanobis under the pooled within-dataset variance"),
        RetrievalKey("frechet", _frechet, needs_var=True, help="Frechet distance between diagonal Gaussians (mean and spread)"),
        RetrievalKey("task", _task, needs_task=True, help="cosine between the tasks' label-prompt / instruction embeddings"),
        RetrievalKey("task+centered", _task_centered, needs_task=True, reads_references=True, help="task key plus centered-cosine data key"),
    )
}


# The data-free key: a record is ranked by its adapter's weights alone (retrieval/arrow.py), so
# every record of a base model is found by it, those added without their data too. It compares
# no vectors of a shared space, so it is not a RetrievalKey: db/arrowsearch.py runs it.
ARROW = "arrow"
DATA_FREE_KEYS = {ARROW: "data-free: each adapter's top input directions (per module, from its weights) against the "
                         "target's tokens under the base model (Arrow's score); finds records without data too"}


def key_names() -> list[str]:
    """Every retrieval key a search may name: the keys of vectors (KEYS), then the data-free ones."""
    return [*KEYS, *DATA_FREE_KEYS]


def get_key(name: str) -> RetrievalKey:
    """The registered key called `name`, or an error listing the valid names."""
    return registered(KEYS, name, "retrieval key")


def supported_keys(*, has_var: bool, has_task: bool) -> list[str]:
    """The keys a dataset with (or without) variance and task embedding can be compared by."""
    return [k.name for k in KEYS.values() if (has_var or not k.needs_var) and (has_task or not k.needs_task)]


_LACKS_VAR = "the feature variance (made by loradb 0.1 or with differential privacy)"
_LACKS_TASK = "a task embedding (label prompts or instruction)"


def missing_for(key: RetrievalKey, x: KeyInputs) -> str | None:
    """What `x` lacks for `key`, as words for an error message (None: nothing)."""
    return lacking_parts(key, has_var=x.var is not None, has_task=x.task is not None)


def lacking_parts(key: RetrievalKey, *, has_var: bool, has_task: bool) -> str | None:
    """What a row with (or without) a variance and a task embedding lacks for `key`, as words
    (None: nothing); for rows read straight from a store."""
    if key.needs_var and not has_var:
        return _LACKS_VAR
    if key.needs_task and not has_task:
        return _LACKS_TASK
    return None


def needs_in_words(key: RetrievalKey) -> str:
    """What `key` reads besides z, as words for an error message."""
    return " and ".join([*([_LACKS_VAR] if key.needs_var else []), *([_LACKS_TASK] if key.needs_task else [])]) or "z"


def lacks_for(key: str, item) -> str | None:
    """What one record or representation (anything with z, var, task_z) lacks for the key
    called `key`, as words for an error message (None: nothing)."""
    return missing_for(get_key(key), KeyInputs.stacked([item]))


def key_features(key: str | RetrievalKey, target: KeyInputs, records: KeyInputs,
                 refs: References | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(phi(target) (d',), phi(records) (n, d')) under `key`.

    Args:
        key: a name in KEYS or the key itself.
        target: one row, the target dataset.
        records: the candidate records.
        refs: the statistics to normalise by (default: those of `records`).
    """
    key = get_key(key) if isinstance(key, str) else key
    require_inputs(key, target=target, records=records)
    refs = refs or References.of(records)
    if key.needs_var and refs.within_var is None:
        raise LoradbError(f"retrieval key {key.name} needs the references' feature variances")
    return key_map(key, target, refs)[0], key_map(key, records, refs)


def require_inputs(key: RetrievalKey, *, target: KeyInputs | None = None, records: KeyInputs | None = None) -> None:
    """Refuse, in words for the user, a target or records lacking what `key` reads."""
    for what, x, remedy in (("the target", target, "give the target's task (--prompts labels.json or --instruction) "
                             "and compute z from --data"), ("a record", records, "add the records again with their task")):
        lack = None if x is None else missing_for(key, x)
        if lack:
            raise LoradbError(f"retrieval key {key.name} needs {lack}, which {what} does not have; {remedy}, "
                              f"or use one of {', '.join(supported_keys(has_var=False, has_task=False))}")


def key_map(key: str | RetrievalKey, x: KeyInputs, refs: References | None) -> np.ndarray:
    """phi of the rows of `x` under `key` with given references (what an index stores): (n, d').
    `refs` may be None only for a key that does not read them."""
    key = get_key(key) if isinstance(key, str) else key
    lack = missing_for(key, x)
    if lack:
        raise LoradbError(f"retrieval key {key.name} needs {lack}")
    if key.reads_references and (refs is None or (key.needs_var and refs.within_var is None)):
        raise LoradbError(f"retrieval key {key.name} needs the references' statistics")
    return key.features(x, refs if refs is not None else References(np.zeros(x.z.shape[1]), None))


def key_distances(key: str | RetrievalKey, target: KeyInputs, records: KeyInputs,
                  refs: References | None = None) -> np.ndarray:
    """Squared L2 between phi(target) and each phi(record): (n,)."""
    q, R = key_features(key, target, records, refs)
    return ((R - q) ** 2).sum(axis=1)


def family_precision(ranked_families: list[str], family: str, k: int) -> float:
    """The fraction of the first k retrieved whose family is `family`."""
    top = ranked_families[:k]
    return sum(f == family for f in top) / len(top) if top else 0.0


def choose_key(inputs: KeyInputs, families: list[str], *, k: int = 5, candidates: list[str] | None = None) -> dict:
    """The key under which each reference, as a target in turn, retrieves its own family
    best among the others: mean family precision@k by leave-one-out, no target data used.

    Ties go to the earlier key in KEYS (the simpler one). Keys the references cannot use
    (no variance or task embedding) are skipped.
    Returns:
        {"key": the chosen name, "precision": {key: mean precision@k}}.
    """
    n = inputs.z.shape[0]
    if n < 2:
        raise LoradbError("choosing a retrieval key needs at least two references")
    names = candidates or [name for name in KEYS
                           if missing_for(KEYS[name], inputs) is None]
    scores = {}
    for name in names:
        precisions = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            sub, one = inputs.subset(others), inputs.subset(slice(i, i + 1))
            d2 = key_distances(name, one, sub)
            order = np.lexsort((np.arange(len(others)), d2))
            precisions.append(family_precision([families[others[j]] for j in order], families[i], k))
        scores[name] = float(np.mean(precisions))
    best = max(names, key=lambda nm: scores[nm])  # max keeps the first of equal scores
    return {"key": best, "precision": scores}
