"""Numbers across folds: averages, share of the SFT gain recovered, retrieval quality
(family precision, Spearman against transfer), the 2-D prototype map."""

from __future__ import annotations


import numpy as np

from loradb.retrieval.keys import KEYS
from loradb.evaluate.config import PRECISION_AT


def prototype_map(z_train: dict, z_test: dict) -> dict:
    """2-D PCA coordinates of every reference prototype (training z) and each held-out target (test z)."""
    names = list(z_train)
    Z = np.stack([z_train[n].z for n in names]).astype(np.float64)
    mean = Z.mean(axis=0)
    _, _, vt = np.linalg.svd(Z - mean, full_matrices=False)
    P = vt[:2].T
    project = (lambda z: ((np.asarray(z, dtype=np.float64) - mean) @ P).tolist())
    return {"references": {n: project(z_train[n].z) for n in names},
            "targets": {n: project(rep.z) for n, rep in z_test.items()}}


def retrieval_summary(results: dict, metric: str) -> dict:
    """Per key: mean family precision@5 and mean metric over the held-out folds; arrow's
    precision; and, with a transfer matrix, the Spearman correlation of -d^2 with transfer."""
    folds = results["retrieval"]
    keys = sorted({k for f in folds.values() for k in f["keys"]}, key=list(KEYS).index)
    summary: dict = {"keys": {}, "chosen": {held: f["key"] for held, f in folds.items()},
                     "arrow_precision": float(np.mean([f["arrow_precision"] for f in folds.values()]))}
    for k in keys:
        have = [f["keys"][k] for f in folds.values() if k in f["keys"]]
        summary["keys"][k] = {f"precision@{PRECISION_AT}": float(np.mean([e[f"precision@{PRECISION_AT}"] for e in have])),
                              metric: float(np.mean([e[metric] for e in have])), "folds": len(have)}
        if "transfer" in results:
            summary["keys"][k]["spearman"] = _mean_spearman(results, k)
    return summary


def _mean_spearman(results: dict, key: str) -> float | None:
    """Mean over held-out folds of the rank correlation between -d^2 (key) and each
    reference adapter's single-adapter transfer to the held-out domain."""
    tr = results["transfer"]
    S = np.array(tr["scores"])
    rhos = []
    for held, f in results["retrieval"].items():
        entry = f["keys"].get(key)
        if entry is None:
            continue
        j = tr["targets"].index(held)
        transfer = [S[tr["sources"].index(n), j] for n in entry["ranking"]]
        rho = spearman(-np.array(entry["distances"]), np.array(transfer))
        if rho is not None:
            rhos.append(rho)
    return float(np.mean(rhos)) if rhos else None


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def gain_recovered(rows: dict, methods, metric: str) -> dict:
    """(method - pretrained) / (sft - pretrained) of the metric, per held-out domain (None if SFT gained nothing)."""
    out = {}
    for name, row in rows.items():
        gain = row["sft"][metric] - row["pretrained"][metric]
        out[name] = {m: ((row[m][metric] - row["pretrained"][metric]) / gain if gain > 0 else None) for m in methods}
    return out


def averages(rows: dict, gains: dict, methods, metrics) -> dict:
    avg: dict = {}  # method -> metric (or gain) -> its mean (None: no gain to recover)
    metric = metrics[0]
    for m in ("pretrained", *methods, "sft"):
        avg[m] = {k: float(np.mean([row[m][k] for row in rows.values()])) for k in metrics}
        if m in methods:
            vals = [g[m] for g in gains.values() if g[m] is not None]
            avg[m]["gain_recovered"] = float(np.mean(vals)) if vals else None
    pre, sft = avg["pretrained"][metric], avg["sft"][metric]
    for m in methods:  # the paper's summary: fraction of the average SFT gain
        avg[m]["gain_recovered_of_average"] = (avg[m][metric] - pre) / (sft - pre) if sft > pre else None
    return avg
