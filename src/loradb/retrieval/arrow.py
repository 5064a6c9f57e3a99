"""Arrow routing: choose adapters from their weights and the target's inputs, with no data
prototypes (after "Towards Modular LLMs by Building and Reusing a Library of LoRAs",
Ostapenko et al. 2024).

Each adapter's "arrow" in a module is the top right-singular vector v of its update B A:
the input direction the adapter changes most. An input h that points along v (either
sign) is one the adapter was made for. The score of an adapter on a target dataset is
the mean of |<h, v>| over the target's tokens and the adapter's modules, with h the
module's input under the frozen base model. The original routes per token and layer;
loradb uses the dataset-level mean to pick the top k adapters, which are then merged with
uniform weights: the benchmark's weight-space baseline for retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def arrows(adapter) -> dict[str, np.ndarray]:
    """module -> unit top right-singular vector (in_features,) of B A, without forming B A:
    with B = Q R, B A = Q (R A), so B A and the small R A share right-singular vectors."""
    out = {}
    for name, m in adapter.modules.items():
        _, R = np.linalg.qr(np.asarray(m.B, dtype=np.float64))
        _, _, vt = np.linalg.svd(R @ np.asarray(m.A, dtype=np.float64), full_matrices=False)
        out[name] = vt[0]
    return out


def arrow_scores(model, tokenizer, texts: Sequence[str], adapters: Sequence, *, max_length: int = 128,
                 batch_size: int = 32) -> np.ndarray:
    """Mean |<h, v>| of each adapter over the texts' non-padding tokens and its modules.

    Args:
        model: the frozen base model (theta0: no delta set), as loaded by represent.load_model.
        tokenizer: its tokenizer.
        texts: the target's unlabeled inputs.
        adapters: LoraAdapter objects on that base model.
    Returns:
        (len(adapters),) scores; larger means the adapter's directions are more present.
    """
    return arrow_scores_of(model, tokenizer, texts, [arrows(a) for a in adapters], max_length=max_length,
                           batch_size=batch_size)


def arrow_scores_of(model, tokenizer, texts: Sequence[str], vectors: Sequence[dict[str, np.ndarray]], *,
                    max_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """arrow_scores from each adapter's arrows (module -> unit vector), already computed."""
    import torch

    from loradb.lora.base import find_module

    modules = sorted({name for v in vectors for name in v})
    sums = {name: np.zeros(len(vectors)) for name in modules}  # sum over tokens of |h . v_i|
    tokens = 0
    mask_now: dict = {}

    def hook_for(name):
        width = next(v[name] for v in vectors if name in v).shape[0]  # this module's input size
        V = torch.tensor(np.stack([v[name] if name in v else np.zeros(width) for v in vectors], axis=1),
                         dtype=torch.float32)  # (in, n); zero columns for adapters without this module

        def hook(module, inputs, output):
            h = inputs[0].reshape(-1, inputs[0].shape[-1])[mask_now["flat"]]
            sums[name] += (h @ V).abs().sum(0).double().numpy()
        return hook

    handles = [find_module(model, name).register_forward_hook(hook_for(name)) for name in modules]
    try:
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
                mask_now["flat"] = enc["attention_mask"].reshape(-1).bool()
                tokens += int(mask_now["flat"].sum())
                model(**enc)
    finally:
        for h in handles:
            h.remove()
    per_module = np.stack([sums[name] / max(tokens, 1) for name in modules])  # (modules, n)
    has = np.array([[name in v for v in vectors] for name in modules])
    return (per_module * has).sum(0) / np.maximum(has.sum(0), 1)


def arrow_select(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores (ties: the earlier index)."""
    return [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[:k]]


ARROW_TEMPERATURE = 0.1  # similarity under the data-free key: a score 10% below the best weighs e^-1 as much


def arrow_gaps(scores: np.ndarray) -> np.ndarray:
    """1 - score / best score of each (0 for the best): how far below the best an adapter scores,
    relative to the scores' own size (which depends on the base model's feature norms)."""
    s = np.asarray(scores, dtype=np.float64)
    best = float(s.max()) if len(s) else 0.0
    return 1.0 - s / best if best > 0 else np.zeros(len(s))


def arrow_weights(method: str, scores: np.ndarray, temperature: float | None = None) -> tuple[np.ndarray, dict]:
    """Weights of the top-k adapters (scores best first) under the data-free key: uniform (Arrow's
    own use of its dataset-level score), nearest, or similarity, exp(-gap / T) normalised, with
    gap = 1 - score / best score and T = ARROW_TEMPERATURE unless given. The methods that fit
    vectors of a shared space (linear, sparse) have none here and are refused."""
    from loradb.errors import LoradbError

    k = len(scores)
    if method == "uniform":
        return np.full(k, 1.0 / k), {}
    if method == "nearest":
        return np.eye(k)[0], {}
    if method == "similarity":
        t = ARROW_TEMPERATURE if temperature is None else float(temperature)
        if not (np.isfinite(t) and t > 0):
            raise LoradbError(f"`temperature` must be a positive number, got {temperature}")
        e = np.exp(-arrow_gaps(scores) / t)
        return e / e.sum(), {"temperature": t}
    raise LoradbError(f"method {method} weighs vectors of a shared space, which the data-free key arrow has none of; "
                      "use uniform, nearest or similarity")
