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


ROUGE_METRICS = ("rougeL", "rouge1", "rouge2")
NLL = "nll"  # generation: the teacher-forced loss of the reference target (lower is better)


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measures (rougeL first) of predictions against one reference each.

    Google's rouge-score package (the implementation behind most published ROUGE numbers),
    with its Porter stemmer on, as the paper's evaluation. An empty prediction scores 0.
    """
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        from loradb.errors import LoradbError

        raise LoradbError("ROUGE needs rouge-score: `pip install 'loradb[causal]'`") from None
    if len(targets) != len(predictions) or not targets:
        raise ValueError(f"need equal, non-empty lists, got {len(targets)} targets and {len(predictions)} predictions")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_METRICS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_METRICS, 0.0)
    for target, prediction in zip(targets, predictions):
        for name, score in scorer.score(target, prediction).items():
            totals[name] += score.fmeasure
    return {name: total / len(targets) for name, total in totals.items()}
