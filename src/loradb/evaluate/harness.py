"""Leave-one-domain-out zero-shot adaptation, the paper's protocol.

For each domain held out in turn: the other domains' LoRAs (trained once, cached by
content hash) go into a fresh database with representations of their training texts;
the held-out domain's *unlabeled* test texts give z_trg; every weighting method composes
an adapter, which is evaluated on the held-out test set next to the pre-trained model
(zero-shot) and the held-out domain's own LoRA (SFT, the oracle).

Hyper-parameters (lambda_1, lambda_2 as multiples of their automatic values) are chosen
per fold on reference data only: leave-one-out over the fold's reference domains, each
in turn the target (z from its training texts, the task's metric on a sample of its
labeled training set) for the remaining ones. The held-out domain's labels are never used.

The task (tasks.py) is classification (accuracy) or generation with a causal LM
(ROUGE-L); everything else, the protocol, the rows and the report, is the same.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from loradb.lora.adapter import read_adapter
from loradb.retrieval.arrow import arrow_scores, arrow_select
from loradb.io.files import cache_dir
from loradb.lora.base import load_base
from loradb.lora.compose import compose_exact, factors_of
from loradb.db.database import LoraDB
from loradb.errors import LoradbError
from loradb.models.generate import is_causal_lm
from loradb.retrieval.keys import KEYS, RAW_L2, KeyInputs, family_precision, get_key, key_features
from loradb.retrieval.represent import Encoder, save_representation, task_spec
from loradb.models.prompts import DEFAULT_INSTRUCTION
from loradb.models.prompts import TRAINING_INFO
from loradb.models.train import GENERATION_TRAIN, TrainConfig, train_lora
from loradb.retrieval.weights import auto_l1, auto_temperature, compute_weights
from loradb.evaluate.domains import Domain, load_domains, load_generation_domains
from loradb.evaluate.metrics import scores
from loradb.evaluate.tasks import ClassificationTask, GenerationTask

ROWS = ("pretrained", "merge-all", "arrow", "nearest", "uniform", "similarity", "linear", "sparse", "sft")
COMPOSED = ("nearest", "uniform", "similarity", "linear", "sparse")
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
    tune_examples: int = 160  # labeled reference examples scored per tuning candidate
    temperature_grid: tuple[float, ...] = (1.0, 0.25, 4.0)  # multiples of 1/median(d^2); the default first wins ties
    l1_grid: tuple[float, ...] = (1.0, 0.1, 10.0)  # multiples of 0.1*median(d^2)
    shots: tuple[int, ...] = ()  # few-shot rows (learned, lorahub, scratch) at these examples per label
    learn_steps: int = 40
    lorahub_evaluations: int = 60
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
    arrow_texts: int = 64  # unlabeled target inputs the arrow router reads
    test_examples: int | None = None  # score on a seeded sample of at most this many test examples (None: all)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_cached(base_path: Path, domain: Domain, task, config: TrainConfig, *, cache: Path,
                 progress: bool) -> tuple[Path, float, bool]:
    """The domain's LoRA, trained once per (base, data, task, config): (dir, train seconds, reused)."""
    spec = {"base": load_base(base_path).fingerprint, "texts": domain.train_texts, "labels": domain.train_labels,
            **task.spec(domain), "config": {**asdict(config), "targets": list(config.targets)}}
    if task.name != "classification":  # classification keys stay as they were, so earlier caches still hit
        spec["task"] = task.name
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    out = cache / "adapters" / key
    if (out / TRAINING_INFO).is_file():
        return out, json.loads((out / TRAINING_INFO).read_text())["seconds"], True
    result = task.train(base_path, domain, out, config, progress=progress)
    return out, result.seconds, False


def _sample(domain: Domain, n: int, seed: int) -> tuple[list[str], list[str]]:
    idx = sorted(random.Random(seed).sample(range(len(domain.train_texts)), min(n, len(domain.train_texts))))
    return [domain.train_texts[i] for i in idx], [domain.train_labels[i] for i in idx]


class _Scorer:
    """The task's metric of composed adapters on labeled samples, each composition scored once:
    leave-one-out tuning meets the same (target, adapters, weights) in many folds."""

    def __init__(self, task, model, adapters: dict, config: EvalConfig):
        self.task, self.model, self.adapters, self.config = task, model, adapters, config
        self.seen: dict = {}

    def __call__(self, target: Domain, names: list[str], weights) -> float:
        key = (target.name, tuple(names), tuple(np.round(np.asarray(weights, dtype=float), 10)))
        if key not in self.seen:
            self.model.set_delta(compose_exact([factors_of(self.adapters[n]) for n in names], list(weights)))
            texts, labels = _sample(target, self.config.tune_examples, self.config.seed)
            self.seen[key] = self.task.score(labels, self.model.predict(texts, target))[self.task.metrics[0]]
        return self.seen[key]


def _tune(refs: list[Domain], z_train: dict, scorer: _Scorer, key: str, config: EvalConfig) -> dict:
    """Leave-one-out over the reference domains: the multipliers of lambda_1 and lambda_2
    with the best mean metric on the references' own labeled training samples, under the
    fold's retrieval key (each reference is the target, the others the database)."""
    grids = {"similarity": ("temperature", config.temperature_grid), "sparse": ("l1", config.l1_grid)}
    chosen = {}
    for method, (param, grid) in grids.items():
        if method not in config.methods or len(refs) < 3:
            chosen[param] = {"multiplier": 1.0, "scores": {}}
            continue
        mean_acc = {}
        for mult in grid:
            accs = []
            for r in refs:
                others = [c for c in refs if c.name != r.name]
                q, R = key_features(key, KeyInputs.stacked([z_train[r.name]]),
                                    KeyInputs.stacked([z_train[c.name] for c in others]))
                d2 = ((R - q) ** 2).sum(axis=1)
                near = np.lexsort((np.arange(len(others)), d2))[: config.k]
                d2 = d2[near]
                value = mult * (auto_temperature(d2) if param == "temperature" else auto_l1(d2))
                w = compute_weights(method, q, R[near], **{param: value}).weights
                accs.append(scorer(r, [others[i].name for i in near], w))
            mean_acc[mult] = float(np.mean(accs))
        best = max(grid, key=lambda m: mean_acc[m])  # max keeps the first of equal scores: the default
        chosen[param] = {"multiplier": best, "scores": {str(m): a for m, a in mean_acc.items()}}
    return chosen


def run_eval(base_path: str | Path, domains_dir: str | Path, out: str | Path, config: EvalConfig = EvalConfig(), *,
             cache: Path | None = None, progress: bool = True, log=_log) -> dict:
    """Run the leave-one-domain-out benchmark and write results.json, report.md and plots to `out`.

    Args:
        base_path: local transformers model directory.
        domains_dir: one folder per domain with train.jsonl and test.jsonl (>= 3 domains).
        out: report directory (created; an earlier report there is replaced).
        config: k, methods, folds, keys, training and tuning settings.
        cache: where trained adapters are cached (default: loradb's cache directory).
    Returns:
        The results dictionary written to results.json.
    """
    from loradb.evaluate.report import require_plotting, write_report

    require_plotting()
    _check_config(config)
    started = time.perf_counter()
    base = load_base(base_path)
    base_path = base.path
    task, domains, config = _task_for(base, domains_dir, config)
    metric = task.metrics[0]
    names = [d.name for d in domains]
    folds = list(config.folds) if config.folds else names
    unknown = sorted(set(folds) - set(names))
    if unknown:
        raise LoradbError(f"--folds names {', '.join(unknown)}, which {domains_dir} does not hold; its domains: {', '.join(names)}")
    if len(domains) - 1 < 2:
        raise LoradbError("each fold needs at least two reference domains")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or cache_dir()
    by_name = {d.name: d for d in domains}
    log(f"{len(domains)} domains, {len(folds)} held out in turn: "
        + ", ".join(f"{d.name} ({len(d.train_texts)} train / {len(d.test_texts)} test)" for d in domains))

    timing: dict = {"train_seconds": {}, "train_reused": {}, "represent_target_seconds": {}, "adapt_seconds": {}}
    adapter_dirs = {}
    for d in domains:
        adapter_dirs[d.name], seconds, reused = train_cached(base_path, d, task, config.train, cache=cache, progress=progress)
        timing["train_seconds"][d.name], timing["train_reused"][d.name] = seconds, reused
        log(f"LoRA for {d.name}: " + (f"reused from the cache (trained earlier in {seconds:.0f} s)" if reused
                                      else f"trained on {min(len(d.train_texts), config.train.max_examples or len(d.train_texts))} "
                                           f"training examples in {seconds:.0f} s"))
    adapters = {n: read_adapter(p) for n, p in adapter_dirs.items()}

    log("representations: training texts of every domain, unlabeled test texts of every target, each task's prompts")
    encoder = Encoder(base_path, layer=config.layer, pooling=config.pooling, max_length=config.max_length)
    z_train, z_test, z_test_paths, ref_paths = {}, {}, {}, {}
    work = out / "work"
    for d in domains:
        z_train[d.name] = encoder.represent(d.train_texts, progress=progress, desc=f"z {d.name} train").with_task(encoder, task_spec(**d.task))
        ref_paths[d.name] = save_representation(z_train[d.name], work / "references" / f"{d.name}.npy")
        if d.name in folds:
            t0 = time.perf_counter()
            rep = encoder.represent(d.test_texts, progress=progress, desc=f"z {d.name} test")
            z_test[d.name] = rep.with_task(encoder, task_spec(**d.task))
            timing["represent_target_seconds"][d.name] = time.perf_counter() - t0
            z_test_paths[d.name] = save_representation(z_test[d.name], work / "targets" / f"{d.name}.npy")
    del encoder

    model = task.model(base_path, config.train)
    transfer_on = config.transfer if config.transfer is not None else len(domains) <= FULL_TRANSFER_UP_TO
    pretrained, own, transfer = _single_adapter_rows(task, model, domains, folds, adapters, transfer_on, progress, log)

    results: dict = {"base": str(base_path), "domains_dir": str(domains_dir), "task": task.name,
                     "metrics": list(task.metrics),
                     "config": {**asdict(config), "train": {**asdict(config.train), "targets": list(config.train.targets)}},
                     "families": {d.name: d.family for d in domains}, "folds": folds,
                     "tasks": {d.name: d.task for d in domains},
                     **({"instruction": domains[0].instruction}  # one instruction for every domain: say it once
                        if task.name == "generation" and len({d.instruction for d in domains}) == 1 else {}),
                     "domains": {}, "hyperparameters": {}, "retrieval": {}, "k_sweep": {}}
    scorer = _Scorer(task, model, adapters, config)
    for held_name in folds:
        held = by_name[held_name]
        refs = [d for d in domains if d.name != held.name]
        log(f"held out {held.name} ({held.family}): database of {len(refs)} reference adapters, z from its unlabeled test texts")
        db_dir = work / f"fold-{held.name}" / "db"
        if db_dir.exists():
            shutil.rmtree(db_dir)
        db = LoraDB.init(db_dir)
        for r in refs:
            db.add(adapter_dirs[r.name], repr=ref_paths[r.name], name=r.name, base=base_path, meta={"family": r.family},
                   progress=False)
        key, choice = _fold_key(db, config)
        tuned = _tune(refs, z_train, scorer, key, config) if config.tune else {}
        results["hyperparameters"][held.name] = tuned
        row = {"pretrained": dict(pretrained[held.name]),
               "sft": {**own[held.name], "train_seconds": timing["train_seconds"][held.name]}}
        fold = _Fold(db, held, z_test_paths[held.name], task, model, progress, timing["represent_target_seconds"][held.name])
        timing["adapt_seconds"][held.name] = {}
        d2 = np.array([h.distance for h in fold.search(config.k, "uniform", key).hits])
        for method in config.methods:
            kwargs = {}
            if method == "similarity" and tuned:
                kwargs["temperature"] = tuned["temperature"]["multiplier"] * auto_temperature(d2)
            if method == "sparse" and tuned:
                kwargs["l1"] = tuned["l1"]["multiplier"] * auto_l1(d2)
            row[method] = fold.run(config.k, method, key, **kwargs)
            timing["adapt_seconds"][held.name][method] = row[method]["adapt_seconds"]
        row["merge-all"] = fold.given({r.name: 1.0 / len(refs) for r in refs})
        row["arrow"] = _arrow_row(fold, model, held, refs, adapters, config)
        results["retrieval"][held.name] = {
            "key": key, "key_choice": choice,
            "keys": _compare_keys(fold, refs, held, key, row, config) if config.compare_keys else {},
            "arrow_precision": _precision([by_name[n].family for n in row["arrow"]["ranking"]], held.family),
        }
        if config.k_sweep:
            results["k_sweep"][held.name] = _k_sweep(fold, key, row, config, metric)
        if config.shots:
            results.setdefault("few_shot", {})[held.name] = _few_shot(
                held, row, db, model, base_path, config, work / f"fold-{held.name}", log)
        db.close()
        results["domains"][held.name] = row
        log("  " + "  ".join(f"{m} {row[m][metric]:.3f}" for m in ROWS if m in row) + f"  (key {key})")

    if transfer is not None:
        results["transfer"] = transfer
    results["map"] = _prototype_map(z_train, z_test)
    results["gain_recovered"] = _gain_recovered(results["domains"], (*BASELINES, *config.methods), metric)
    results["average"] = _averages(results["domains"], results["gain_recovered"], (*BASELINES, *config.methods), task.metrics)
    results["retrieval_summary"] = retrieval_summary(results, metric)
    timing["total_seconds"] = time.perf_counter() - started
    results["timing"] = timing
    write_report(results, out)
    return results


def _check_config(config: EvalConfig) -> None:
    for m in config.methods:
        if m not in COMPOSED:
            raise LoradbError(f"unknown method {m!r} for eval; choose from {', '.join(COMPOSED)}")
    for m in config.k_sweep_methods:
        if m not in COMPOSED:
            raise LoradbError(f"unknown method {m!r} for the k sweep; choose from {', '.join(COMPOSED)}")
    if config.key_method not in COMPOSED:
        raise LoradbError(f"unknown method {config.key_method!r} to score keys with; choose from {', '.join(COMPOSED)}")
    if config.key is not None:
        get_key(config.key)
    if config.k < 1 or any(k < 1 for k in config.k_sweep):
        raise LoradbError(f"-k and --k-sweep values must be at least 1, got {config.k} and {list(config.k_sweep)}")


def _single_adapter_rows(task, model, domains: list[Domain], folds: list[str], adapters: dict, full: bool,
                         progress: bool, log):
    """The pre-trained model and the SFT oracle (each held-out domain's own adapter) on the
    held-out test sets; with `full`, every single adapter on every domain (transfer matrix)."""
    metric = task.metrics[0]
    targets = domains if full else [d for d in domains if d.name in folds]
    sources = domains if full else None
    log("single adapters: " + ("every LoRA on every domain's test set (transfer matrix)" if full
                               else "each held-out domain's own LoRA (SFT) and the pre-trained model"))
    pretrained, own = {}, {}
    scores = np.full((len(domains), len(domains)), np.nan)
    for j, target in enumerate(domains):
        if target not in targets:
            continue
        model.set_delta(None)
        pretrained[target.name] = _evaluate(task, model, target, progress)
        for i, source in enumerate(sources or [target]):
            model.set_delta(compose_exact([factors_of(adapters[source.name])], [1.0]))
            got = _evaluate(task, model, target, progress)
            scores[domains.index(source), j] = got[metric]
            if source.name == target.name:
                own[target.name] = got  # the SFT row: the domain's own LoRA on its own test set
    names = [d.name for d in domains]
    transfer = {"sources": names, "targets": names, "metric": metric, "scores": scores.tolist()} if full else None
    return pretrained, own, transfer


class _Fold:
    """One held-out domain's database and target: search, compose, evaluate, timed. A
    composition met again (the same adapters with the same weights: every method at k = 1,
    keys that retrieve the same set) is scored once."""

    def __init__(self, db: LoraDB, held: Domain, target_path: Path, task, model, progress: bool, represent_seconds: float):
        self.db, self.held, self.target_path, self.task, self.model = db, held, target_path, task, model
        self.progress, self.represent_seconds = progress, represent_seconds
        self.scored: dict = {}

    def search(self, k: int, method: str, key: str, **kwargs):
        return self.db.search(repr=self.target_path, k=k, method=method, key=key, progress=False, **kwargs)

    def evaluate(self, weights: dict[str, float], composed: dict | None = None) -> dict:
        """The task's scores of the records named in `weights`, composed with those weights
        (`composed`: that composition, when the caller has made it already)."""
        signature = tuple(sorted((n, round(float(w), 12)) for n, w in weights.items()))
        if signature not in self.scored:
            self.model.set_delta(composed or compose_exact([factors_of(self.db.load_adapter(self.db.get(n))) for n in weights],
                                                           list(weights.values())))
            self.scored[signature] = _evaluate(self.task, self.model, self.held, self.progress)
        return dict(self.scored[signature])

    def run(self, k: int, method: str, key: str, **kwargs) -> dict:
        """Retrieve, weigh, compose and evaluate: the row of one method."""
        t0 = time.perf_counter()
        result = self.search(k, method, key, **kwargs)
        composed = compose_exact([factors_of(self.db.load_adapter(h.record)) for h in result.hits],
                                 [h.weight for h in result.hits])
        seconds = time.perf_counter() - t0 + self.represent_seconds  # what a user waits for: up to the composed adapter
        weights = {h.record.name: h.weight for h in result.hits}
        return {**self.evaluate(weights, composed), "weights": weights, "distances": {h.record.name: h.distance for h in result.hits},
                "residual": result.residual, "params": result.params, "adapt_seconds": seconds}

    def given(self, weights: dict[str, float], **extra) -> dict:
        """Compose records by name with the given weights and evaluate."""
        return {**self.evaluate(weights), "weights": dict(weights), **extra}


def _fold_key(db: LoraDB, config: EvalConfig) -> tuple[str, dict | None]:
    """The fold's retrieval key: the configured one, else the one LoraDB.choose_key picks by
    leave-one-out over the fold's references (raw-l2 when they are all of one family)."""
    if config.key is not None:
        return config.key, None
    families = {r.meta["family"] for r in db.list()}
    if len(families) < 2:
        return RAW_L2, None
    choice = db.choose_key(family_meta="family", k=PRECISION_AT)
    return choice["key"], choice["precision"]


def _precision(families: list[str], family: str, at: int = PRECISION_AT) -> float:
    return family_precision(families, family, at)


def _arrow_row(fold: _Fold, model, held: Domain, refs: list[Domain], adapters: dict, config: EvalConfig) -> dict:
    """The top k references by arrow score on the held-out domain's unlabeled test inputs, merged uniformly."""
    t0 = time.perf_counter()
    rng = random.Random(config.seed)
    texts = rng.sample(held.test_texts, min(config.arrow_texts, len(held.test_texts)))
    model.set_delta(None)
    scores = arrow_scores(model.model, model.tokenizer, texts, [adapters[r.name] for r in refs],
                          max_length=config.train.max_length)
    order = arrow_select(scores, len(refs))
    chosen = [refs[i].name for i in order[: config.k]]
    seconds = time.perf_counter() - t0
    return fold.given({n: 1.0 / len(chosen) for n in chosen}, ranking=[refs[i].name for i in order],
                      scores={refs[i].name: float(scores[i]) for i in order}, adapt_seconds=seconds)


def _compare_keys(fold: _Fold, refs: list[Domain], held: Domain, chosen: str, row: dict, config: EvalConfig) -> dict:
    """Every retrieval key the references support, on this held-out fold: its full ranking
    (and family precision@5, @k), and the metric of key_method's composition at k."""
    families = {r.name: r.family for r in refs}
    out = {}
    supported = set.intersection(*(set(r.keys) for r in fold.db.list()))
    for name in KEYS:
        if name not in supported:
            continue
        ranked = fold.search(len(refs), "uniform", name).hits
        entry = {"ranking": [h.record.name for h in ranked], "distances": [h.distance for h in ranked],
                 f"precision@{PRECISION_AT}": _precision([families[h.record.name] for h in ranked], held.family),
                 f"precision@{config.k}": _precision([families[h.record.name] for h in ranked], held.family, config.k)}
        if name == chosen and config.key_method in row:
            scored = row[config.key_method]
        else:
            scored = fold.run(config.k, config.key_method, name)
        entry[fold.task.metrics[0]] = scored[fold.task.metrics[0]]
        entry["weights"] = scored["weights"]
        out[name] = entry
    return out


def _k_sweep(fold: _Fold, key: str, row: dict, config: EvalConfig, metric: str) -> dict:
    """The metric of each sweep method at each k (the fold's key; automatic lambdas)."""
    out: dict = {}
    for method in config.k_sweep_methods:
        for k in config.k_sweep:
            if k == config.k and method in row and method not in ("similarity", "sparse"):
                value = row[method][metric]  # the same composition the main row made
            else:
                value = fold.run(k, method, key)[metric]
            out.setdefault(method, {})[str(k)] = value
    return out


def _prototype_map(z_train: dict, z_test: dict) -> dict:
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
    summary = {"keys": {}, "chosen": {held: f["key"] for held, f in folds.items()},
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


def few_shot_sample(domain: Domain, per_label: int, seed: int) -> tuple[list[str], list[str]]:
    """`per_label` labeled examples of each label from the domain's training split (seeded)."""
    rng = random.Random(f"{seed}-{per_label}")
    texts, labels = [], []
    for label in sorted(set(domain.train_labels)):
        idx = [i for i, y in enumerate(domain.train_labels) if y == label]
        for i in sorted(rng.sample(idx, min(per_label, len(idx)))):
            texts.append(domain.train_texts[i])
            labels.append(label)
    return texts, labels


def _few_shot(held: Domain, row: dict, db, model, base_path: Path, config: EvalConfig, work: Path, log) -> dict:
    """Rows learned / lorahub / scratch for each shot count, on the held-out test set.

    learned and lorahub start from the similarity weights of the retrieved adapters; the
    shots come from the held-out domain's training split, never its test set.
    """
    from loradb.fewshot.learn import learn_weights, lorahub_weights

    names = list(row["similarity"]["weights"])
    init = np.array([row["similarity"]["weights"][n] for n in names])
    factors = [factors_of(db.load_adapter(db.get(n))) for n in names]
    out = {}
    for n in config.shots:
        texts, labels = few_shot_sample(held, n, config.seed)
        model.set_delta(None)
        entry = {}
        for method, fn, kwargs in (("learned", learn_weights, {"steps": config.learn_steps}),
                                   ("lorahub", lorahub_weights, {"max_evaluations": config.lorahub_evaluations})):
            t0 = time.perf_counter()
            learned = fn(model.classifier(held), factors, texts, labels, init=init, **kwargs)
            composed = compose_exact(factors, list(learned.weights))
            seconds = time.perf_counter() - t0
            model.set_delta(composed)
            entry[method] = {**scores(held.test_labels, model.predict(held.test_texts, held)), "seconds": seconds,
                             "weights": dict(zip(names, map(float, learned.weights)))}
            model.set_delta(None)
        scratch_cfg = replace(config.train, epochs=config.scratch_epochs, batch_size=min(8, len(texts)), max_examples=None)
        t0 = time.perf_counter()
        scratch_dir = work / f"scratch-{n}"
        if scratch_dir.exists():
            shutil.rmtree(scratch_dir)
        train_lora(base_path, texts, labels, held.prompts, scratch_dir, scratch_cfg, progress=False)
        seconds = time.perf_counter() - t0
        model.set_delta(compose_exact([factors_of(read_adapter(scratch_dir))], [1.0]))
        entry["scratch"] = {**scores(held.test_labels, model.predict(held.test_texts, held)), "seconds": seconds}
        model.set_delta(None)
        out[str(n)] = entry
        log(f"  {n} shots per label: " + "  ".join(f"{m} {e['accuracy']:.3f}" for m, e in entry.items()))
    return out


def _evaluate(task, model, domain: Domain, progress: bool) -> dict:
    """The task's scores on the domain's test set; generation keeps what was written too."""
    predictions = model.predict(domain.test_texts, domain, progress=progress)
    return {**task.score(domain.test_labels, predictions), **({"outputs": predictions} if task.name == "generation" else {})}


def _task_for(base, domains_dir, config: EvalConfig):
    """The task, its domains, and the config with the task's defaults filled in; a task
    that does not suit the base model is refused before any work."""
    if config.task not in TASKS:
        raise LoradbError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    causal = is_causal_lm(base.config)
    if config.task == "generation":
        if not causal:
            raise LoradbError(f"--task generation needs a causal language model; {base.path} is not one "
                              f"(architectures {base.config.get('architectures')})")
        if config.shots:
            raise LoradbError("--shots (few-shot rows) is for classification only")
        if config.max_new_tokens < 1:
            raise LoradbError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
        domains = load_generation_domains(domains_dir, DEFAULT_INSTRUCTION)
        task = GenerationTask(max_new_tokens=config.max_new_tokens)
        train = config.train or GENERATION_TRAIN
    else:
        if causal:
            raise LoradbError(f"{base.path} is a causal language model; evaluate it with --task generation")
        domains = load_domains(domains_dir)
        task = ClassificationTask()
        train = config.train or TrainConfig()
    tune = config.tune if config.tune is not None else task.name == "classification"
    if config.test_examples is not None:
        if config.test_examples < 1:
            raise LoradbError(f"--test-examples must be at least 1, got {config.test_examples}")
        domains = [_with_test_sample(d, config.test_examples, config.seed) for d in domains]
    return task, domains, replace(config, train=train.validate(), tune=tune)


def _with_test_sample(domain: Domain, n: int, seed: int) -> Domain:
    """The domain with a seeded sample of at most n of its test examples (in their order)."""
    if len(domain.test_texts) <= n:
        return domain
    idx = sorted(random.Random(f"{seed}-test-{domain.name}").sample(range(len(domain.test_texts)), n))
    return replace(domain, test_texts=[domain.test_texts[i] for i in idx], test_labels=[domain.test_labels[i] for i in idx])


def _gain_recovered(rows: dict, methods, metric: str) -> dict:
    """(method - pretrained) / (sft - pretrained) of the metric, per held-out domain (None if SFT gained nothing)."""
    out = {}
    for name, row in rows.items():
        gain = row["sft"][metric] - row["pretrained"][metric]
        out[name] = {m: ((row[m][metric] - row["pretrained"][metric]) / gain if gain > 0 else None) for m in methods}
    return out


def _averages(rows: dict, gains: dict, methods, metrics) -> dict:
    avg = {}
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
