"""The library case: many adapters, most unrelated to the target, a few relatives.

Targets fall in two groups fixed before any run from the domain files alone: **with
siblings** (the pool holds another domain of the same family with the same label set or
instruction) and **orphans**. The rows that say whether choosing pays there:

- merge-all-tuned: every reference at weight lambda (task arithmetic), lambda chosen by
  leave-one-out over the references (evaluate/scale.py), beside merge-all's plain average;
- default: the default pipeline, adapt or abstain: the fold's fit threshold (calibrated on
  its references by LoraDB.choose_key) decides; when nothing fits the base model is kept,
  else the k retrieved adapters are composed with bounded (convex) weights at the scale s
  chosen by leave-one-out over the references (evaluate/scale.py);
- random-k: k references drawn at random (seeded), weighed uniformly: selection without
  retrieval, at the same k (the mean of several draws, per example);
- best-single: the best one reference adapter on the target (an oracle: it reads the
  target's labels to choose).

Every row keeps per-example scores; `group_summary` gives each group's mean and the 95%
paired bootstrap interval of each row's difference to merge-all (plain and tuned) and to the
pre-trained model.
"""

from __future__ import annotations

import random

import numpy as np

from loradb.errors import LoradbError
from loradb.evaluate.domains import Domain

WITH_SIBLINGS, ORPHANS = "with siblings", "orphans"
COMPARED_TO = ("merge-all", "merge-all-tuned", "pretrained")  # every row's difference to these, with intervals


def task_signature(domain: Domain) -> str:
    """What must match for two domains to be siblings: the label set, or the instruction."""
    return "labels:" + "|".join(sorted(domain.prompts)) if domain.prompts is not None else f"instruction:{domain.instruction}"


def groups(domains: list[Domain]) -> dict[str, str]:
    """Each domain's group, from its family and task alone (no result is looked at)."""
    out = {}
    for d in domains:
        siblings = [o for o in domains if o.name != d.name and o.family == d.family and task_signature(o) == task_signature(d)]
        out[d.name] = WITH_SIBLINGS if siblings else ORPHANS
    return out


def default_row(fold, pretrained: dict, k: int, key: str, method: str, scale: float = 1.0) -> dict:
    """Adapt or abstain, as `loradb compose --scale S` decides: the fit of the fold's search,
    then the pre-trained model's scores (abstain) or the composed adapter's at scale S."""
    result = fold.search(k, method, key, scale=scale)
    fit = dict(result.fit or {})
    if fit.get("score") is None:  # the fold has no threshold for its key: this row would only be the method's
        raise LoradbError(f"fold {fold.held.name}: no fit threshold for key {key} ({fit.get('reason')}); the default "
                          "pipeline row needs one")
    if fit.get("decision") == "abstain":
        return {**pretrained, "abstained": True, "fit": fit, "weights": {}}
    return {**fold.run(k, method, key, scale=scale), "abstained": False, "fit": fit, "scale": scale}


def random_k_row(fold, refs: list[Domain], k: int, draws: int, seed: int, metric: str) -> dict:
    """k references drawn at random, uniform weights; the mean over `draws` seeded draws
    (per example too, so the row pairs with the others in the bootstrap)."""
    rng = random.Random(f"{seed}-random-k-{fold.held.name}")
    rows = []
    for _ in range(draws):
        chosen = rng.sample([r.name for r in refs], min(k, len(refs)))
        rows.append(fold.given({n: 1.0 / len(chosen) for n in chosen}))
    out: dict = {m: float(np.mean([r[m] for r in rows])) for m in rows[0] if isinstance(rows[0][m], float)}
    for field in (f for f in rows[0] if f.startswith("per_example")):  # each metric's per-example values
        out[field] = np.mean([r[field] for r in rows], axis=0).tolist()
    out["draws"] = [{"weights": r["weights"], metric: r[metric]} for r in rows]
    return out


def best_single_row(fold, refs: list[Domain]) -> dict:
    """The best single reference adapter on the target (an oracle: chosen by the target's
    labels, with Fold.oracle_score: for generation by the references' teacher-forced loss)."""
    scored = {r.name: fold.oracle_score({r.name: 1.0}) for r in refs}
    best = max(scored, key=lambda n: (scored[n], n))
    return {**fold.given({best: 1.0}), "chosen": best, "single": scored}


def group_summary(results: dict, rows: list[str], metric: str, *, bases: tuple[str, ...] = COMPARED_TO,
                  per_example: str = "per_example", reps: int = 2000, seed: int = 0) -> dict:
    """Per group and row: the mean over the group's targets of `metric`, and the 95% paired
    bootstrap interval (examples resampled within each target) of the row's difference to
    each of `bases` (merge-all plain and tuned, and the pre-trained model). `per_example`
    names the rows' field of the metric's per-example values."""
    rng = np.random.default_rng(seed)
    domains = results["domains"]
    out: dict = {}
    for group in (WITH_SIBLINGS, ORPHANS):
        names = [n for n, g in results["groups"].items() if g == group and n in domains]
        if not names:
            continue
        sizes = {n: len(domains[n]["pretrained"][per_example]) for n in names}
        picks = {n: rng.integers(0, sizes[n], size=(reps, sizes[n])) for n in names}  # shared by every row: paired
        entry: dict = {"targets": names, "rows": {}}
        for row in rows:
            if not all(row in domains[n] and per_example in domains[n][row] for n in names):
                continue
            stats: dict = {"mean": float(np.mean([domains[n][row][metric] for n in names]))}
            for base in bases:
                if base == row or not all(base in domains[n] for n in names):
                    continue
                diffs = np.zeros(reps)
                for n in names:
                    d = np.asarray(domains[n][row][per_example]) - np.asarray(domains[n][base][per_example])
                    diffs += d[picks[n]].mean(axis=1)
                diffs /= len(names)
                mean = float(np.mean([domains[n][row][metric] - domains[n][base][metric] for n in names]))
                stats[f"vs {base}"] = {"diff": mean, "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]}
            entry["rows"][row] = stats
        out[group] = entry
    return out


def few_shot_summary(results: dict, zero_shot_rows: list[str], few_shot_rows: list[str], metric: str, *,
                     reps: int = 2000, seed: int = 0) -> dict:
    """Few-shot, fairly: per shot count and group, each few-shot row's mean with the 95% paired
    interval of its difference to a LoRA trained from scratch on the same shots and to the
    group's best zero-shot row (the best by the group's mean: a bar set with the labels)."""
    fs = results["few_shot"]
    out: dict = {}
    for n in next(iter(fs.values())):
        domains = {d: {"pretrained": results["domains"][d]["pretrained"],
                       **{r: results["domains"][d][r] for r in zero_shot_rows if r in results["domains"][d]}, **fs[d][n]}
                   for d in fs}
        view = {"domains": domains, "groups": {d: g for d, g in results["groups"].items() if d in fs}}
        means = group_summary(view, zero_shot_rows, metric, bases=(), reps=reps, seed=seed)
        for group, entry in means.items():
            best = max(entry["rows"], key=lambda r: (entry["rows"][r]["mean"], r))
            one = {"domains": domains, "groups": {d: g for d, g in view["groups"].items() if g == group}}
            stats = group_summary(one, [*few_shot_rows, best], metric, bases=("scratch", best), reps=reps, seed=seed)[group]
            out.setdefault(str(n), {})[group] = {**stats, "best_zero_shot": best}
    return out
