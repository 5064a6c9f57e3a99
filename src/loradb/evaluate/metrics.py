"""Classification metrics (pure numpy): accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of predictions equal to the truth."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need equal, non-empty label arrays, got {t.shape} and {p.shape}")
    return float((t == p).mean())


def macro_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """Unweighted mean of per-class F1 over the classes present in truth or prediction.

    A class's F1 is 2PR/(P+R), taken as 0 when it has no true positives.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need equal, non-empty label arrays, got {t.shape} and {p.shape}")
    scores = []
    for c in np.union1d(t, p):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def scores(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred)}
