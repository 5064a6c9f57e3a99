"""Classification by label prompts: a text gets the label whose prompt embeds closest.

The classifier has no parameters of its own: texts and label prompts are embedded by
the same (adapted) base model — mean-pooled last hidden state, L2-normalised, as
sentence-transformers does for all-MiniLM-L6-v2 — and logits are scale * cosine. So
everything a LoRA learns for a domain lives in delta-theta, theta0 + sum_i w_i delta_i is
the whole adapted classifier, and the pre-trained model is a genuine zero-shot baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_SCALE = 20.0  # cosine -> logit; fixed, shared by every domain and method
DEFAULT_MAX_LENGTH = 128
DEFAULT_TEMPLATE = "This text is {label}."


def default_prompts(labels: Sequence[str]) -> dict[str, str]:
    """A prompt per label when the dataset does not bring its own (labels.json)."""
    return {label: DEFAULT_TEMPLATE.format(label=label) for label in labels}


def embed(model, tokenizer, texts: Sequence[str], *, max_length: int = DEFAULT_MAX_LENGTH):
    """Mean-pooled, L2-normalised last hidden states: (len(texts), hidden) torch tensor."""
    import torch

    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


class PromptClassifier:
    """Scores texts against label prompts with one model (base or adapted)."""

    def __init__(self, model, tokenizer, prompts: dict[str, str], *, scale: float = DEFAULT_SCALE,
                 max_length: int = DEFAULT_MAX_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(prompts)
        self.prompts = [prompts[label] for label in self.labels]
        self.scale = scale
        self.max_length = max_length

    def logits(self, texts: Sequence[str]):
        """(len(texts), n_labels) logits; differentiable when grad is enabled."""
        e = embed(self.model, self.tokenizer, texts, max_length=self.max_length)
        p = embed(self.model, self.tokenizer, self.prompts, max_length=self.max_length)
        return self.scale * e @ p.T

    def predict(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Index (into self.labels) of the predicted label of each text."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
        pred = np.zeros(len(texts), dtype=np.int64)
        with torch.inference_mode():
            p = embed(self.model, self.tokenizer, self.prompts, max_length=self.max_length)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                e = embed(self.model, self.tokenizer, [texts[j] for j in idx], max_length=self.max_length)
                pred[idx] = (e @ p.T).argmax(-1).numpy()
        return pred
