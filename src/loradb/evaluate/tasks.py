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

from dataclasses import dataclass
from pathlib import Path

from loradb.lora.inmemory import DeltaWeights
from loradb.models.train import TrainConfig, TrainResult, train_causal_lora, train_lora
from loradb.evaluate.domains import Domain
from loradb.evaluate.metrics import ROUGE_METRICS, rouge, scores


class DeltaModel:
    """A base model in memory whose weights can be set to theta0 + delta and back."""

    def __init__(self, model):
        self.model = model
        self._weights = DeltaWeights(model)

    def set_delta(self, composed: dict | None) -> None:
        self._weights.set(composed)


class AdaptedClassifier(DeltaModel):
    """The encoder with a label-prompt classifier per domain (each domain has its own labels)."""

    def __init__(self, base_path: Path, config: TrainConfig):
        from loradb.models.loading import load_model

        model, tokenizer = load_model(base_path)
        model.eval()
        model.requires_grad_(False)
        super().__init__(model)
        self.tokenizer = tokenizer
        self.config = config

    def classifier(self, domain: Domain):
        from loradb.models.classify import PromptClassifier

        assert domain.prompts is not None  # a classification domain
        return PromptClassifier(self.model, self.tokenizer, domain.prompts, scale=self.config.scale,
                                max_length=self.config.max_length)

    def predict(self, texts: list[str], domain: Domain, *, progress: bool = False) -> list[str]:
        classifier = self.classifier(domain)
        return [classifier.labels[i] for i in classifier.predict(texts)]


class AdaptedGenerator(DeltaModel):
    def __init__(self, base_path: Path, config: TrainConfig, max_new_tokens: int):
        from loradb.models.generate import generator_for

        self.generator = generator_for(base_path, instruction="", max_input_tokens=config.max_length,
                                       max_new_tokens=max_new_tokens)
        super().__init__(self.generator.model)
        self.tokenizer = self.generator.format.tokenizer
        self.max_input_tokens = config.max_length

    def predict(self, texts: list[str], domain: Domain, *, progress: bool = False) -> list[str]:
        from loradb.models.generate import PromptFormat

        assert domain.instruction is not None  # a generation domain
        if self.generator.format.instruction != domain.instruction:
            self.generator.format = PromptFormat(self.tokenizer, domain.instruction,
                                                 max_input_tokens=self.max_input_tokens)
        return self.generator.generate(texts, progress=progress)

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

@dataclass(frozen=True)
class GenerationTask:
    max_new_tokens: int = 32
    name: str = "generation"
    metrics: tuple[str, ...] = ROUGE_METRICS

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
