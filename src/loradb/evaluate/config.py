"""What a benchmark run is configured by (EvalConfig) and the rows it reports."""

from __future__ import annotations

from dataclasses import dataclass, field


from loradb.errors import LoradbError
from loradb.db.arrowsearch import ARROW_TEXTS
from loradb.retrieval.keys import get_key
from loradb.models.train import TrainConfig
from loradb.weighting.registry import FEW_SHOT, ZERO_SHOT, get_method
from loradb.weighting.scale import MAX_SCALE


COMPOSED = ZERO_SHOT  # the z-based rows, from the weighting registry


# evaluate/library.py: the library case's rows (merge-all-tuned: task arithmetic, lambda by leave-one-out)
LIBRARY_ROWS = ("merge-all-tuned", "random-k", "default", "best-single")
PEFT_ARROW_ROWS = ("peft-arrow-k", "peft-arrow-all")  # evaluate/peft_arrow.py: PEFT's per-token Arrow, k retrieved / all
ROWS = ("pretrained", "merge-all", "merge-all-tuned", "random-k", "arrow", *PEFT_ARROW_ROWS, *COMPOSED, "default",
        "best-single", "sft")


FEW_SHOT_ROWS = (*FEW_SHOT, "scratch")  # the registry's few-shot methods, and a LoRA trained on the same shots


BASELINES = ("merge-all", "arrow")  # retrieval baselines that use no data prototype


TASKS = ("classification", "generation")


FULL_TRANSFER_UP_TO = 8  # domains: beyond this the N x N single-adapter matrix is only made when asked


PRECISION_AT = 5  # family precision@5: how retrieval keys are compared and chosen


@dataclass(frozen=True)
class EvalConfig:
    k: int = 5
    methods: tuple[str, ...] = COMPOSED
    task: str = "classification"  # or "generation" (a causal LM, ROUGE-L)
    train: TrainConfig | None = None  # None: the task's defaults (TrainConfig() or GENERATION_TRAIN)
    # choose lambda_1 / lambda_2 by leave-one-out over the reference domains; None: for
    # classification only (for generation it costs thousands of generations per fold)
    tune: bool | None = None
    max_new_tokens: int = 32  # generation: the longest target written
    rouge_examples: int | None = None  # generation: ROUGE on a seeded sample of this many scored pairs (the loss on all)
    tune_examples: int = 160  # labeled reference examples scored per tuning candidate
    temperature_grid: tuple[float, ...] = (1.0, 0.25, 4.0)  # multiples of 1/median(d^2); the default first wins ties
    l1_grid: tuple[float, ...] = (1.0, 0.1, 10.0)  # multiples of 0.1*median(d^2)
    shots: tuple[int, ...] = ()  # few-shot rows (learned, lorahub, scratch) at these examples per label
    learner_budgets: dict = field(default_factory=dict)  # few-shot method -> its budget (default: the registry's)
    scratch_epochs: int = 20  # LoRA from scratch on the shots: many passes over a few examples
    layer: int = -1  # representation recipe for z (see retrieval/represent.py)
    pooling: str = "mean"
    max_length: int = 256  # tokens per example for z
    seed: int = 0
    folds: tuple[str, ...] | None = None  # the held-out domains (None: every domain); the rest stay references
    key: str | None = None  # retrieval key; None: each fold's own choice on its references (LoraDB.choose_key)
    compare_keys: bool = True  # also score every retrieval key on each fold (precision, and key_method's metric)
    key_method: str = "similarity"  # the weighting each key is scored with
    k_sweep: tuple[int, ...] = ()  # also run k_sweep_methods at these k
    k_sweep_methods: tuple[str, ...] = ("uniform", "similarity", "sparse")
    transfer: bool | None = None  # every single adapter on every domain; None: up to FULL_TRANSFER_UP_TO domains
    arrow_texts: int = ARROW_TEXTS  # unlabeled target inputs the arrow router reads (as the data-free key does)
    test_examples: int | None = None  # score on a seeded sample of at most this many test examples (None: all)
    # z of a target from its unlabeled test texts *not* scored: the test split is shuffled (seeded),
    # at most test_examples (and at most half) are scored, the rest only make z
    target_split: bool = False
    library_rows: bool = False  # the library case (evaluate/library.py): default pipeline, random-k, best single, groups
    # held out with their whole family left out of the library: orphans by construction (for a
    # collection where every domain has siblings, as the generation zoo's)
    orphan_folds: tuple[str, ...] = ()
    default_method: str = "convex"  # the default pipeline's weighting (bounded: it never extrapolates)
    # the update's size (evaluate/scale.py), chosen per fold by leave-one-out over its references:
    # s of the default pipeline (1 first: it wins ties) and merge-all's lambda per adapter
    scale_grid: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0, 3.0)
    task_arithmetic_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    scale_references: int = 8  # references that play the target in that leave-one-out (a seeded sample)
    random_draws: int = 5  # random-k: seeded draws averaged
    peft_arrow: bool = False  # PEFT's own Arrow rows (a fresh base model per row; evaluate/peft_arrow.py)
    bootstrap: int = 2000  # resamples for the groups' 95% intervals


def check_config(config: EvalConfig) -> None:
    for m in config.methods:
        if m not in COMPOSED:
            raise LoradbError(f"unknown method {m!r} for eval; choose from {', '.join(COMPOSED)}")
    for m in config.k_sweep_methods:
        if m not in COMPOSED:
            raise LoradbError(f"unknown method {m!r} for the k sweep; choose from {', '.join(COMPOSED)}")
    starts = sorted({s for m in FEW_SHOT if (s := get_method(m).starts_from)} - set(config.methods)) if config.shots else []
    if starts:
        raise LoradbError(f"few-shot rows start from {', '.join(starts)}: keep it in the methods")
    if config.default_method not in COMPOSED:
        raise LoradbError(f"unknown method {config.default_method!r} for the default pipeline; choose from {', '.join(COMPOSED)}")
    if config.key_method not in COMPOSED:
        raise LoradbError(f"unknown method {config.key_method!r} to score keys with; choose from {', '.join(COMPOSED)}")
    if config.key is not None:
        get_key(config.key)
    for name in ("scale_grid", "task_arithmetic_grid"):
        values = getattr(config, name)
        if not values or any(not (isinstance(v, (int, float)) and 0 < v <= MAX_SCALE) for v in values):
            raise LoradbError(f"`{name}` needs at least one value, each above 0 and at most {MAX_SCALE:g}; got {list(values)}")
    if config.rouge_examples is not None and config.rouge_examples < 1:
        raise LoradbError(f"`rouge_examples` must be at least 1, got {config.rouge_examples}")
    if config.tune_examples < 1:
        raise LoradbError(f"`tune_examples` must be at least 1, got {config.tune_examples}")
    if config.scale_references < 1:
        raise LoradbError(f"`scale_references` must be at least 1, got {config.scale_references}")
    if config.k < 1 or any(k < 1 for k in config.k_sweep):
        raise LoradbError(f"`k` and `k_sweep` values must be at least 1, got {config.k} and {list(config.k_sweep)}")
