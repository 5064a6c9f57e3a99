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
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..adapter import read_adapter
from ..base import cache_dir, load_base
from ..compose import compose_exact, factors_of
from ..db import LoraDB
from ..errors import LoradbError
from ..generate import is_causal_lm
from ..represent import Encoder, save_representation
from ..train import DEFAULT_INSTRUCTION, GENERATION_TRAIN, TRAINING_INFO, TrainConfig, train_lora
from ..weights import auto_l1, auto_temperature, compute_weights, squared_distances
from .domains import Domain, load_domains, load_generation_domains
from .metrics import scores
from .tasks import ClassificationTask, GenerationTask

ROWS = ("pretrained", "nearest", "uniform", "similarity", "linear", "sparse", "sft")
COMPOSED = ("nearest", "uniform", "similarity", "linear", "sparse")
TASKS = ("classification", "generation")


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
    layer: int = -1  # representation recipe for z (see represent.py)
    pooling: str = "mean"
    seed: int = 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_cached(base_path: Path, domain: Domain, task, config: TrainConfig, *, cache: Path,
                 progress: bool) -> tuple[Path, float, bool]:
    """The domain's LoRA, trained once per (base, data, task, config): (dir, train seconds, reused)."""
    spec = {"base": load_base(base_path).fingerprint, "texts": domain.train_texts, "labels": domain.train_labels,
            **task.spec, "config": {**asdict(config), "targets": list(config.targets)}}
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


def _tune(refs: list[Domain], z_train: dict, adapters: dict, model, task, config: EvalConfig) -> dict:
    """Leave-one-out over the reference domains: the multipliers of lambda_1 and lambda_2
    with the best mean metric on the references' own labeled training samples."""
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
                near = np.argsort(squared_distances(z_train[r.name], np.stack([z_train[c.name] for c in others])), kind="stable")
                cands = [others[i] for i in near[: config.k]]
                Z = np.stack([z_train[c.name] for c in cands])
                d2 = squared_distances(z_train[r.name], Z)
                value = mult * (auto_temperature(d2) if param == "temperature" else auto_l1(d2))
                w = compute_weights(method, z_train[r.name], Z, **{param: value}).weights
                model.set_delta(compose_exact([factors_of(adapters[c.name]) for c in cands], w))
                texts, labels = _sample(r, config.tune_examples, config.seed)
                accs.append(task.score(labels, model.predict(texts))[task.metrics[0]])
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
        config: k, methods, training and tuning settings.
        cache: where trained adapters are cached (default: loradb's cache directory).
    Returns:
        The results dictionary written to results.json.
    """
    from .report import require_plotting, write_report

    require_plotting()

    for m in config.methods:
        if m not in COMPOSED:
            raise LoradbError(f"unknown method {m!r} for eval; choose from {', '.join(COMPOSED)}")
    if config.k < 1:
        raise LoradbError(f"-k must be at least 1, got {config.k}")
    started = time.perf_counter()
    base = load_base(base_path)
    base_path = base.path
    task, domains, config = _task_for(base, domains_dir, config)
    metric = task.metrics[0]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or cache_dir()
    names = [d.name for d in domains]
    log(f"{len(domains)} domains: {', '.join(f'{d.name} ({len(d.train_texts)} train / {len(d.test_texts)} test)' for d in domains)}")

    timing: dict = {"train_seconds": {}, "train_reused": {}, "represent_target_seconds": {}, "adapt_seconds": {}}
    adapter_dirs = {}
    for d in domains:
        adapter_dirs[d.name], seconds, reused = train_cached(base_path, d, task, config.train, cache=cache, progress=progress)
        timing["train_seconds"][d.name], timing["train_reused"][d.name] = seconds, reused
        log(f"LoRA for {d.name}: " + (f"reused from the cache (trained earlier in {seconds:.0f} s)" if reused
                                      else f"trained on {len(d.train_texts)} training examples in {seconds:.0f} s"))
    adapters = {n: read_adapter(p) for n, p in adapter_dirs.items()}

    log("representations: training texts of every domain, unlabeled test texts of every target")
    encoder = Encoder(base_path, layer=config.layer, pooling=config.pooling)
    z_train, z_test_paths, z_test = {}, {}, {}
    work = out / "work"
    for d in domains:
        z_train[d.name] = encoder.represent(d.train_texts, progress=progress, desc=f"z {d.name} train").z
        t0 = time.perf_counter()
        rep = encoder.represent(d.test_texts, progress=progress, desc=f"z {d.name} test")
        timing["represent_target_seconds"][d.name] = time.perf_counter() - t0
        z_test[d.name] = rep.z
        z_test_paths[d.name] = save_representation(rep, work / "targets" / f"{d.name}.npy")
        save_representation(replace(rep, z=z_train[d.name], n_samples=len(d.train_texts)), work / "references" / f"{d.name}.npy")

    model = task.model(base_path, config.train)
    log("transfer matrix: every single LoRA on every domain's test set, and the pre-trained model")
    transfer = np.zeros((len(domains), len(domains)))
    pretrained, own = {}, {}
    for j, target in enumerate(domains):
        log(f"  on {target.name}: the pre-trained model and {len(domains)} single LoRAs")
        model.set_delta(None)
        pretrained[target.name] = _evaluate(task, model, target, progress)
        for i, source in enumerate(domains):
            model.set_delta(compose_exact([factors_of(adapters[source.name])], [1.0]))
            got = _evaluate(task, model, target, progress)
            transfer[i, j] = got[metric]
            if i == j:
                own[target.name] = got  # the SFT row: the domain's own LoRA on its own test set
    distance = np.array([[float(squared_distances(z_test[t], z_train[s][None])[0]) for t in names] for s in names])

    results: dict = {"base": str(base_path), "domains_dir": str(domains_dir), "task": task.name,
                     "metrics": list(task.metrics), **task.spec,
                     "config": {**asdict(config), "train": {**asdict(config.train), "targets": list(config.train.targets)}},
                     "domains": {}, "hyperparameters": {}}
    for j, held in enumerate(domains):
        log(f"held out {held.name}: database of {len(domains) - 1} reference adapters, z from its unlabeled test texts")
        refs = [d for d in domains if d.name != held.name]
        db_dir = work / f"fold-{held.name}" / "db"
        if db_dir.exists():
            import shutil

            shutil.rmtree(db_dir)
        db = LoraDB.init(db_dir)
        for r in refs:
            db.add(adapter_dirs[r.name], repr=work / "references" / f"{r.name}.npy", name=r.name, base=base_path, progress=False)
        tuned = _tune(refs, z_train, adapters, model, task, config) if config.tune else {}
        results["hyperparameters"][held.name] = tuned
        row = {"pretrained": dict(pretrained[held.name]),
               "sft": {**own[held.name], "train_seconds": timing["train_seconds"][held.name]}}
        timing["adapt_seconds"][held.name] = {}
        # the squared distances of the k adapters search will retrieve: what the automatic lambdas scale with
        d2 = np.sort(squared_distances(z_test[held.name], np.stack([z_train[r.name] for r in refs])))[: config.k]
        for method in config.methods:
            t0 = time.perf_counter()
            kwargs = {}
            if method == "similarity" and tuned:
                kwargs["temperature"] = tuned["temperature"]["multiplier"] * auto_temperature(d2)
            if method == "sparse" and tuned:
                kwargs["l1"] = tuned["l1"]["multiplier"] * auto_l1(d2)
            result = db.search(repr=z_test_paths[held.name], k=config.k, method=method, progress=False, **kwargs)
            composed = compose_exact([factors_of(db.load_adapter(h.record)) for h in result.hits], [h.weight for h in result.hits])
            seconds = time.perf_counter() - t0 + timing["represent_target_seconds"][held.name]
            timing["adapt_seconds"][held.name][method] = seconds
            model.set_delta(composed)
            row[method] = {**_evaluate(task, model, held, progress),
                           "weights": {h.record.name: h.weight for h in result.hits},
                           "distances": {h.record.name: h.distance for h in result.hits},
                           "residual": result.residual, "params": result.params, "adapt_seconds": seconds}
        if config.shots:
            results.setdefault("few_shot", {})[held.name] = _few_shot(
                held, row, db, model, base_path, task.prompts, config, work / f"fold-{held.name}", log)
        db.close()
        results["domains"][held.name] = row
        log("  " + "  ".join(f"{m} {row[m][metric]:.3f}" for m in ROWS if m in row))

    results["transfer"] = {"sources": names, "targets": names, "metric": metric, "scores": transfer.tolist(),
                           "distance": distance.tolist()}
    results["gain_recovered"] = _gain_recovered(results["domains"], config.methods, metric)
    results["average"] = _averages(results["domains"], results["gain_recovered"], config.methods, task.metrics)
    timing["total_seconds"] = time.perf_counter() - started
    results["timing"] = timing
    write_report(results, out)
    return results


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


def _few_shot(held: Domain, row: dict, db, model, base_path: Path, prompts: dict, config: EvalConfig,
              work: Path, log) -> dict:
    """Rows learned / lorahub / scratch for each shot count, on the held-out test set.

    learned and lorahub start from the similarity weights of the retrieved adapters; the
    shots come from the held-out domain's training split, never its test set.
    """
    from ..learn import learn_weights, lorahub_weights

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
            learned = fn(model.classifier, factors, texts, labels, init=init, **kwargs)
            composed = compose_exact(factors, list(learned.weights))
            seconds = time.perf_counter() - t0
            model.set_delta(composed)
            entry[method] = {**scores(held.test_labels, model.predict(held.test_texts)), "seconds": seconds,
                             "weights": dict(zip(names, map(float, learned.weights)))}
            model.set_delta(None)
        scratch_cfg = replace(config.train, epochs=config.scratch_epochs, batch_size=min(8, len(texts)), max_examples=None)
        t0 = time.perf_counter()
        scratch_dir = work / f"scratch-{n}"
        if scratch_dir.exists():
            import shutil

            shutil.rmtree(scratch_dir)
        train_lora(base_path, texts, labels, prompts, scratch_dir, scratch_cfg, progress=False)
        seconds = time.perf_counter() - t0
        model.set_delta(compose_exact([factors_of(read_adapter(scratch_dir))], [1.0]))
        entry["scratch"] = {**scores(held.test_labels, model.predict(held.test_texts)), "seconds": seconds}
        model.set_delta(None)
        out[str(n)] = entry
        log(f"  {n} shots per label: " + "  ".join(f"{m} {e['accuracy']:.3f}" for m, e in entry.items()))
    return out


def _evaluate(task, model, domain: Domain, progress: bool) -> dict:
    """The task's scores on the domain's test set; generation keeps what was written too."""
    predictions = model.predict(domain.test_texts, progress=progress)
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
        domains, instruction = load_generation_domains(domains_dir, DEFAULT_INSTRUCTION)
        task = GenerationTask(instruction, max_new_tokens=config.max_new_tokens)
        train = config.train or GENERATION_TRAIN
    else:
        if causal:
            raise LoradbError(f"{base.path} is a causal language model; evaluate it with --task generation")
        domains, prompts = load_domains(domains_dir)
        task = ClassificationTask(prompts)
        train = config.train or TrainConfig()
    tune = config.tune if config.tune is not None else task.name == "classification"
    return task, domains, replace(config, train=train.validate(), tune=tune)


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
