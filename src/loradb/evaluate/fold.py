"""One held-out fold: its database of references, its retrieval key, and the rows scored on it
(composed methods, arrow, every key, the k sweep), plus the lambda tuning on its references."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from loradb.retrieval.arrow import arrow_scores, arrow_select
from loradb.lora.compose import compose_exact, factors_of
from loradb.db.database import LoraDB
from loradb.retrieval.keys import KEYS, RAW_L2, KeyInputs, family_precision, key_features
from loradb.weighting.formulas import auto_l1, auto_temperature
from loradb.weighting.registry import compute_weights
from loradb.evaluate.domains import Domain
from loradb.evaluate.config import PRECISION_AT, EvalConfig
from loradb.evaluate.metrics import NLL


def _sample(domain: Domain, n: int, seed: int) -> tuple[list[str], list[str]]:
    idx = sorted(random.Random(seed).sample(range(len(domain.train_texts)), min(n, len(domain.train_texts))))
    return [domain.train_texts[i] for i in idx], [domain.train_labels[i] for i in idx]


class Scorer:
    """The task's metric of composed adapters on labeled samples, each composition scored once:
    leave-one-out tuning meets the same (target, adapters, weights) in many folds."""

    def __init__(self, task, model, adapters: dict, config: EvalConfig):
        self.task, self.model, self.adapters, self.config = task, model, adapters, config
        self.seen: dict = {}

    def __call__(self, target: Domain, names: list[str], weights) -> float:
        key = (target.name, tuple(names), tuple(np.round(np.asarray(weights, dtype=float), 10)))
        if key not in self.seen:
            self.model.set_delta(compose_exact([factors_of(self.adapters[n]) for n in names], list(weights)))
            texts, labels = _sample(target, self.config.tune_examples, self.config.seed)
            self.seen[key] = self.task.reference_score(self.model, texts, labels, target)
        return self.seen[key]


class ReferenceNeighbours(NamedTuple):
    """One reference played as the target, the fold's other references as the library."""

    others: list[Domain]
    q: np.ndarray  # the reference's features under the fold's key
    R: np.ndarray  # the others' features
    d2: np.ndarray  # squared distance to each of the others
    near: np.ndarray  # indices of the k nearest others (ties by their order)

    def names(self) -> list[str]:
        return [self.others[i].name for i in self.near]


def reference_neighbours(r: Domain, refs: list[Domain], z_train: dict, key: str, k: int) -> ReferenceNeighbours:
    """Leave-one-out over the references: `r` (z from its training texts) against the others, in `key`."""
    others = [c for c in refs if c.name != r.name]
    q, R = key_features(key, KeyInputs.stacked([z_train[r.name]]), KeyInputs.stacked([z_train[c.name] for c in others]))
    d2 = ((R - q) ** 2).sum(axis=1)
    return ReferenceNeighbours(others, q, R, d2, np.lexsort((np.arange(len(others)), d2))[:k])


def tune_lambdas(refs: list[Domain], z_train: dict, scorer: Scorer, key: str, config: EvalConfig) -> dict:
    """Leave-one-out over the reference domains: the multipliers of lambda_1 and lambda_2
    with the best mean metric on the references' own labeled training samples, under the
    fold's retrieval key (each reference is the target, the others the database)."""
    grids = {"similarity": ("temperature", config.temperature_grid), "sparse": ("l1", config.l1_grid)}
    chosen = {}
    for method, (param, grid) in grids.items():
        if method not in config.methods or len(refs) < 3:
            chosen[param] = {"multiplier": 1.0, "scores": {}}
            continue
        mean_acc = {}
        for mult in grid:
            accs = []
            for r in refs:
                loo = reference_neighbours(r, refs, z_train, key, config.k)
                d2 = loo.d2[loo.near]
                value = mult * (auto_temperature(d2) if param == "temperature" else auto_l1(d2))
                w = compute_weights(method, loo.q, loo.R[loo.near], **{param: value}).weights
                accs.append(scorer(r, loo.names(), w))
            mean_acc[mult] = float(np.mean(accs))
        best = max(grid, key=lambda m: mean_acc[m])  # max keeps the first of equal scores: the default
        chosen[param] = {"multiplier": best, "scores": {str(m): a for m, a in mean_acc.items()}}
    return chosen


class Fold:
    """One held-out domain's database and target: search, compose, evaluate, timed. A
    composition met again (the same adapters with the same weights: every method at k = 1,
    keys that retrieve the same set) is scored once."""

    def __init__(self, db: LoraDB, held: Domain, target_path: Path, task, model, progress: bool, represent_seconds: float):
        self.db, self.held, self.target_path, self.task, self.model = db, held, target_path, task, model
        self.progress, self.represent_seconds = progress, represent_seconds
        self.scored: dict = {}

    def search(self, k: int, method: str, key: str, **kwargs):
        return self.db.search(repr=self.target_path, k=k, method=method, key=key, progress=False, **kwargs)

    def _composed(self, weights: dict[str, float]) -> dict:
        """The records named in `weights` composed exactly with those weights."""
        return compose_exact([factors_of(self.db.load_adapter(self.db.get(n))) for n in weights], list(weights.values()))

    def evaluate(self, weights: dict[str, float], composed: dict | None = None) -> dict:
        """The task's scores of the records named in `weights`, composed with those weights
        (`composed`: that composition, when the caller has made it already)."""
        signature = tuple(sorted((n, round(float(w), 12)) for n, w in weights.items()))
        if signature not in self.scored:
            self.model.set_delta(composed or self._composed(weights))
            self.scored[signature] = evaluate_on(self.task, self.model, self.held, self.progress)
        return dict(self.scored[signature])

    def run(self, k: int, method: str, key: str, **kwargs) -> dict:
        """Retrieve, weigh, compose and evaluate: the row of one method."""
        t0 = time.perf_counter()
        result = self.search(k, method, key, **kwargs)
        composed = compose_exact([factors_of(self.db.load_adapter(h.record)) for h in result.hits],
                                 [h.weight for h in result.hits])
        seconds = time.perf_counter() - t0 + self.represent_seconds  # what a user waits for: up to the composed adapter
        weights = {h.record.name: h.weight for h in result.hits}
        return {**self.evaluate(weights, composed), "weights": weights, "distances": {h.record.name: h.distance for h in result.hits},
                "residual": result.residual, "params": result.params, "adapt_seconds": seconds}

    def oracle_score(self, weights: dict[str, float]) -> float:
        """A score that reads the target's labels, to rank candidates by (higher is better):
        the task's metric for classification; for generation minus the teacher-forced loss of
        the scored pairs (decoding for every candidate would cost minutes each)."""
        if NLL not in self.task.metrics:
            return self.evaluate(weights)[self.task.metrics[0]]
        self.model.set_delta(self._composed(weights))
        return -float(np.mean(self.model.nll(self.held.test_texts, self.held.test_labels, self.held)))

    def given(self, weights: dict[str, float], **extra) -> dict:
        """Compose records by name with the given weights and evaluate."""
        return {**self.evaluate(weights), "weights": dict(weights), **extra}


def fold_key(db: LoraDB, config: EvalConfig) -> tuple[str, dict | None]:
    """The fold's retrieval key: the configured one, else the one LoraDB.choose_key picks by
    leave-one-out over the fold's references (raw-l2 when they are all of one family)."""
    if config.key is not None:
        return config.key, None
    families = {r.meta["family"] for r in db.list()}
    if len(families) < 2:
        return RAW_L2, None
    choice = db.choose_key(family_meta="family", k=PRECISION_AT)
    return choice["key"], choice["precision"]


def precision_at(families: list[str], family: str, at: int = PRECISION_AT) -> float:
    return family_precision(families, family, at)


def arrow_row(fold: Fold, model, held: Domain, refs: list[Domain], adapters: dict, config: EvalConfig) -> dict:
    """The top k references by arrow score on the held-out domain's unlabeled test inputs, merged uniformly."""
    assert config.train is not None  # resolved by the harness (harness._task_for)
    t0 = time.perf_counter()
    rng = random.Random(config.seed)
    texts = rng.sample(held.target_texts, min(config.arrow_texts, len(held.target_texts)))
    model.set_delta(None)
    scores = arrow_scores(model.model, model.tokenizer, texts, [adapters[r.name] for r in refs],
                          max_length=config.train.max_length)
    order = arrow_select(scores, len(refs))
    chosen = [refs[i].name for i in order[: config.k]]
    seconds = time.perf_counter() - t0
    return fold.given({n: 1.0 / len(chosen) for n in chosen}, ranking=[refs[i].name for i in order],
                      scores={refs[i].name: float(scores[i]) for i in order}, adapt_seconds=seconds)


def compare_keys(fold: Fold, refs: list[Domain], held: Domain, chosen: str, row: dict, config: EvalConfig) -> dict:
    """Every retrieval key the references support, on this held-out fold: its full ranking
    (and family precision@5, @k), and the metric of key_method's composition at k."""
    families = {r.name: r.family for r in refs}
    out = {}
    supported = set.intersection(*(set(r.keys) for r in fold.db.list()))
    for name in KEYS:
        if name not in supported:
            continue
        ranked = fold.search(len(refs), "uniform", name).hits
        entry = {"ranking": [h.record.name for h in ranked], "distances": [h.distance for h in ranked],
                 f"precision@{PRECISION_AT}": precision_at([families[h.record.name] for h in ranked], held.family),
                 f"precision@{config.k}": precision_at([families[h.record.name] for h in ranked], held.family, config.k)}
        if name == chosen and config.key_method in row:
            scored = row[config.key_method]
        else:
            scored = fold.run(config.k, config.key_method, name)
        entry[fold.task.metrics[0]] = scored[fold.task.metrics[0]]
        entry["weights"] = scored["weights"]
        out[name] = entry
    return out


def sweep_k(fold: Fold, key: str, row: dict, config: EvalConfig, metric: str) -> dict:
    """The metric of each sweep method at each k (the fold's key; automatic lambdas)."""
    out: dict = {}
    for method in config.k_sweep_methods:
        for k in config.k_sweep:
            if k == config.k and method in row and method not in ("similarity", "sparse"):
                value = row[method][metric]  # the same composition the main row made
            else:
                value = fold.run(k, method, key)[metric]
            out.setdefault(method, {})[str(k)] = value
    return out


def evaluate_on(task, model, domain: Domain, progress: bool) -> dict:
    """The task's scores on the domain's test set (evaluate/tasks.py); generation keeps what was written too."""
    return task.evaluate(model, domain, progress)
