"""Few-shot composition weights: learned (gradient) and LoraHub-style (gradient-free).

`learned` is the learned composition of "Does Combining Parameter-efficient Modules
Improve Few-shot Transfer Accuracy?" (arXiv 2402.15414): w = softmax(v), v trained by
gradient descent on the task loss of a handful of labeled target examples, with the
adapters applied as parallel low-rank branches (y = W0 x + sum_i w_i s_i B_i A_i x), so
no dense merge is formed per step. `lorahub` follows LoraHub: weights in a box
[-1.5, 1.5], task loss + 0.05 * ||w||_1, minimised by a derivative-free optimiser
(scipy's Powell). Both start from the retrieval weights when given. The task is
label-prompt classification (models/classify.py), so only the weights are learned.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError
from loradb.lora.base import find_module

MAX_SHOTS_PER_LABEL = 32
LORAHUB_BOX = 1.5
LORAHUB_L1 = 0.05


@dataclass
class LearnResult:
    weights: np.ndarray
    losses: list[float]  # the objective along the way
    evaluations: int


def check_shots(labels: list[str], prompts: dict[str, str], where: str) -> None:
    """Refuse a k-shot set with unknown labels, a label without examples, or more than 32 per label."""
    unknown = sorted(set(labels) - set(prompts))
    if unknown:
        raise LoradbError(f"{where}: labels {unknown} are not among the task's labels {sorted(prompts)}")
    counts = {label: labels.count(label) for label in prompts}
    missing = [label for label, n in counts.items() if n == 0]
    if missing:
        raise LoradbError(f"{where}: too few examples: no example of label(s) {missing}; give 1 to {MAX_SHOTS_PER_LABEL} per label")
    over = {label: n for label, n in counts.items() if n > MAX_SHOTS_PER_LABEL}
    if over:
        raise LoradbError(f"{where}: {over} examples per label; few-shot composition takes 1 to {MAX_SHOTS_PER_LABEL} per label")


@contextmanager
def parallel_branches(model, factors: list[dict], weights):
    """Add sum_i weights[i] * s_i * B_i A_i x to each adapted module's output while active.

    Args:
        model: the frozen base model (torch).
        factors: k adapters as module -> (A, B, scale) torch tensors.
        weights: a (k,) torch tensor read at every forward (so it may require grad).
    """
    hooks = []
    by_module: dict[str, list] = {}
    for i, adapter in enumerate(factors):
        for name, (A, B, s) in adapter.items():
            by_module.setdefault(name, []).append((i, A, B, float(s)))

    def make_hook(branches):
        def hook(module, inputs, output):
            x = inputs[0]
            for i, A, B, s in branches:
                output = output + (weights[i] * s) * ((x @ A.T) @ B.T)
            return output
        return hook

    try:
        for name, branches in by_module.items():
            hooks.append(find_module(model, name).register_forward_hook(make_hook(branches)))
        yield
    finally:
        for h in hooks:
            h.remove()


def _targets(prompts: dict[str, str], labels: list[str]):
    import torch

    order = list(prompts)
    return torch.tensor([order.index(label) for label in labels])


def learn_weights(classifier, factors: list[dict], texts: list[str], labels: list[str], *,
                  init: np.ndarray | None = None, steps: int = 40, lr: float = 0.1) -> LearnResult:
    """w = softmax(v) minimising the cross-entropy of the few-shot examples (Adam on v, full batch).

    Args:
        classifier: a PromptClassifier over the frozen base model.
        factors: the k retrieved adapters (module -> (A, B, scale)).
        texts, labels: the labeled target examples.
        init: starting weights (e.g. the retrieval weights); their positive part sets
            v = log(w). None starts from uniform.
    Returns:
        LearnResult with weights on the simplex.
    """
    import torch

    k = len(factors)
    classifier.model.requires_grad_(False)  # only v learns; no gradients for the frozen base
    start = np.full(k, 1.0 / k) if init is None else np.clip(np.asarray(init, dtype=np.float64), 1e-6, None)
    v = torch.tensor(np.log(start / start.sum()), dtype=torch.float32, requires_grad=True)
    y = _targets(dict(zip(classifier.labels, classifier.prompts)), labels)
    optim = torch.optim.Adam([v], lr=lr)
    losses = []
    with parallel_branches(classifier.model, factors, _Softmax(v)):
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(classifier.logits(texts), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
    w = torch.softmax(v.detach(), 0).numpy().astype(np.float64)
    return LearnResult(weights=w, losses=losses, evaluations=steps)


class _Softmax:
    """Indexable softmax(v), recomputed at every access so each forward pass differentiates
    through the current v (k is small; this costs nothing next to the forward pass)."""

    def __init__(self, v):
        self.v = v

    def __getitem__(self, i):
        import torch

        return torch.softmax(self.v, 0)[i]


def lorahub_weights(classifier, factors: list[dict], texts: list[str], labels: list[str], *,
                    init: np.ndarray | None = None, max_evaluations: int = 60) -> LearnResult:
    """LoraHub: weights in [-1.5, 1.5]^k minimising loss + 0.05 * ||w||_1 without gradients (Powell)."""
    import torch
    from scipy.optimize import minimize

    k = len(factors)
    start = np.zeros(k) if init is None else np.clip(np.asarray(init, dtype=np.float64), -LORAHUB_BOX, LORAHUB_BOX)
    y = _targets(dict(zip(classifier.labels, classifier.prompts)), labels)
    current = torch.zeros(k)
    losses = []

    def objective(w: np.ndarray) -> float:
        current.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
        with torch.inference_mode():
            loss = torch.nn.functional.cross_entropy(classifier.logits(texts), y).item()
        value = loss + LORAHUB_L1 * float(np.abs(w).sum())
        losses.append(value)
        return value

    with parallel_branches(classifier.model, factors, current):
        start_value = objective(start)
        res = minimize(objective, start, method="Powell", bounds=[(-LORAHUB_BOX, LORAHUB_BOX)] * k,
                       options={"maxfev": max_evaluations, "xtol": 1e-3, "ftol": 1e-4})
    best = res.x if res.fun <= start_value else start  # never worse than where it started
    return LearnResult(weights=np.asarray(best, dtype=np.float64), losses=losses, evaluations=len(losses))
