"""What the benchmark needs to know about a task: how to train a domain's LoRA, how to run
the base model with a composed delta on a domain's test inputs, and how to score it.

- classification (encoders, e.g. all-MiniLM-L6-v2): label-prompt classification, scored
  by accuracy (then macro-F1);
- generation (causal LMs, e.g. SmolLM2-135M-Instruct): greedy generation of the target
  text, scored by ROUGE-L F-measure (then ROUGE-1, ROUGE-2).

The model under evaluation holds theta0 in memory; set_delta makes it theta0 + delta
exactly (the composed B @ A added to each weight), so every row is the same base model
with another adapter, never a second copy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loradb.lora.inmemory import DeltaWeights
from loradb.models.train import TrainConfig, TrainResult, train_causal_lora, train_lora
from loradb.evaluate.domains import Domain
from loradb.evaluate.metrics import NLL, ROUGE_METRICS, rouge, scores


class DeltaModel:
    """A base model in memory whose weights can be set to theta0 + delta and back."""

    def __init__(self, model):
        self.model = model
        self._weights = DeltaWeights(model)

    def set_delta(self, composed: dict | None) -> None:
        self._weights.set(composed)


class ClassifierRunner:
    """A model run as a label-prompt classifier per domain (each domain has its own labels)."""

    def __init__(self, model, tokenizer, config: TrainConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config

    def classifier(self, domain: Domain):
        from loradb.models.classify import PromptClassifier

        assert domain.prompts is not None  # a classification domain
        return PromptClassifier(self.model, self.tokenizer, domain.prompts, scale=self.config.scale,
                                max_length=self.config.max_length)

    def predict(self, texts: list[str], domain: Domain, *, progress: bool = False) -> list[str]:
        classifier = self.classifier(domain)
        return [classifier.labels[i] for i in classifier.predict(texts)]


class AdaptedClassifier(DeltaModel, ClassifierRunner):
    """The encoder, frozen, as a label-prompt classifier whose weights set_delta changes."""

    def __init__(self, base_path: Path, config: TrainConfig):
        from loradb.models.loading import load_model

        model, tokenizer = load_model(base_path)
        model.eval()
        model.requires_grad_(False)
        ClassifierRunner.__init__(self, model, tokenizer, config)
        DeltaModel.__init__(self, model)


class GenerationRunner:
    """A Generator run for a domain: its instruction put in front of every input."""

    def __init__(self, generator, max_input_tokens: int):
        self.generator = generator
        self.tokenizer = generator.format.tokenizer
        self.max_input_tokens = max_input_tokens

    def _for(self, domain: Domain):
        from loradb.models.generate import PromptFormat

        assert domain.instruction is not None  # a generation domain
        if self.generator.format.instruction != domain.instruction:
            self.generator.format = PromptFormat(self.tokenizer, domain.instruction, max_input_tokens=self.max_input_tokens)
        return self.generator

    def predict(self, texts: list[str], domain: Domain, *, progress: bool = False) -> list[str]:
        return self._for(domain).generate(texts, progress=progress)

    def nll(self, texts: list[str], targets: list[str], domain: Domain) -> list[float]:
        return self._for(domain).nll(texts, targets)


class AdaptedGenerator(DeltaModel, GenerationRunner):
    def __init__(self, base_path: Path, config: TrainConfig, max_new_tokens: int):
        from loradb.models.generate import generator_for

        generator = generator_for(base_path, instruction="", max_input_tokens=config.max_length, max_new_tokens=max_new_tokens)
        GenerationRunner.__init__(self, generator, config.max_length)
        DeltaModel.__init__(self, generator.model)

@dataclass(frozen=True)
class ClassificationTask:
    name: str = "classification"
    metrics: tuple[str, ...] = ("accuracy", "macro_f1")

    @staticmethod
    def spec(domain: Domain) -> dict:
        """What, besides the data and the training settings, decides the domain's adapter."""
        return {"prompts": domain.prompts}

    def train(self, base_path: Path, domain: Domain, out: Path, config: TrainConfig, *, progress: bool) -> TrainResult:
        assert domain.prompts is not None  # a classification domain
        return train_lora(base_path, domain.train_texts, domain.train_labels, domain.prompts, out, config, progress=progress)

    def model(self, base_path: Path, config: TrainConfig) -> AdaptedClassifier:
        return AdaptedClassifier(base_path, config)

    def score(self, truth: list[str], predictions: list[str]) -> dict[str, float]:
        return scores(truth, predictions)

    @staticmethod
    def per_example(truth: list[str], predictions: list[str]) -> list[float]:
        """1 for a right label, 0 for a wrong one: their mean is the accuracy (paired bootstrap)."""
        return [float(t == p) for t, p in zip(truth, predictions, strict=True)]

    def evaluate(self, model, domain: Domain, progress: bool) -> dict:
        """The scores on the domain's test set, and each example's (the paired bootstrap's)."""
        predictions = model.predict(domain.test_texts, domain, progress=progress)
        return {**self.score(domain.test_labels, predictions), "per_example": self.per_example(domain.test_labels, predictions)}

    def reference_score(self, model, texts: list[str], labels: list[str], domain: Domain) -> float:
        """What leave-one-out over the references maximises: the accuracy on a labeled sample."""
        return self.score(labels, model.predict(texts, domain))[self.metrics[0]]

@dataclass(frozen=True)
class GenerationTask:
    """ROUGE of greedy outputs on (a seeded sample of at most `rouge_examples` of) the scored
    pairs, and the teacher-forced loss of every scored pair's reference target ("nll", lower
    is better): one forward pass a pair, so it is affordable on more pairs than decoding is."""

    max_new_tokens: int = 32
    rouge_examples: int | None = None  # None: decode every scored pair
    name: str = "generation"
    metrics: tuple[str, ...] = (*ROUGE_METRICS, NLL)

    @staticmethod
    def spec(domain: Domain) -> dict:
        return {"instruction": domain.instruction}

    def train(self, base_path: Path, domain: Domain, out: Path, config: TrainConfig, *, progress: bool) -> TrainResult:
        assert domain.instruction is not None  # a generation domain
        return train_causal_lora(base_path, domain.train_texts, domain.train_labels, out, config,
                                 instruction=domain.instruction, progress=progress)

    def model(self, base_path: Path, config: TrainConfig) -> AdaptedGenerator:
        return AdaptedGenerator(base_path, config, self.max_new_tokens)

    def score(self, truth: list[str], predictions: list[str]) -> dict[str, float]:
        return rouge(truth, predictions)

    @staticmethod
    def per_example(truth: list[str], predictions: list[str]) -> list[float]:
        """ROUGE-L of each output: their mean is the row's ROUGE-L (paired bootstrap)."""
        return [rouge([t], [p])["rougeL"] for t, p in zip(truth, predictions, strict=True)]

    def decoded(self, domain: Domain) -> list[int]:
        """The scored pairs that are decoded for ROUGE: all, or a seeded sample (in their order)."""
        n = len(domain.test_texts)
        if self.rouge_examples is None or n <= self.rouge_examples:
            return list(range(n))
        return sorted(random.Random(f"rouge-{domain.name}").sample(range(n), self.rouge_examples))

    def evaluate(self, model, domain: Domain, progress: bool) -> dict:
        """ROUGE of the outputs written for the decoded pairs (kept), the loss of every scored
        pair's target; per-example values of both (the paired bootstrap's)."""
        keep = self.decoded(domain)
        texts, truth = [domain.test_texts[i] for i in keep], [domain.test_labels[i] for i in keep]
        predictions = model.predict(texts, domain, progress=progress)
        losses = model.nll(domain.test_texts, domain.test_labels, domain)
        return {**self.score(truth, predictions), NLL: float(np.mean(losses)),
                "per_example": self.per_example(truth, predictions), f"per_example_{NLL}": losses, "outputs": predictions}

    @staticmethod
    def reference_score(model, texts: list[str], labels: list[str], domain: Domain) -> float:
        """What leave-one-out over the references maximises: minus the teacher-forced loss of a
        labeled sample (decoding every candidate on every reference would cost hours a fold)."""
        return -float(np.mean(model.nll(texts, labels, domain)))
