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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from loradb.lora.adapter import read_adapter
from loradb.io.files import cache_dir
from loradb.lora.base import load_base
from loradb.lora.compose import compose_exact, factors_of
from loradb.db.database import LoraDB
from loradb.errors import LoradbError
from loradb.models.generate import is_causal_lm
from loradb.retrieval.represent import Encoder, save_representation, task_spec
from loradb.retrieval.targets import representation_from_file
from loradb.models.prompts import DEFAULT_INSTRUCTION
from loradb.models.prompts import TRAINING_INFO
from loradb.models.train import GENERATION_TRAIN, TrainConfig
from loradb.weighting.formulas import auto_l1, auto_temperature
from loradb.evaluate.domains import Domain, load_domains, load_generation_domains, missing_domains
from loradb.evaluate.metrics import NLL
from loradb.evaluate.tasks import ClassificationTask, GenerationTask
from loradb.evaluate.config import (BASELINES, FEW_SHOT_ROWS, LIBRARY_ROWS, FULL_TRANSFER_UP_TO, PEFT_ARROW_ROWS, ROWS,
                                    TASKS, EvalConfig, check_config)
from loradb.evaluate.checkpoint import Checkpoints, run_stamp
from loradb.evaluate.few_shot import few_shot_rows
from loradb.evaluate.library import (ORPHANS, best_single_row, default_row, few_shot_summary, group_summary, groups,
                                     random_k_row)
from loradb.evaluate.peft_arrow import peft_arrow_row
from loradb.evaluate.scale import task_arithmetic_weights, tune_default_scale, tune_task_arithmetic
from loradb.evaluate.fold import (Fold, Scorer, arrow_row, compare_keys, evaluate_on, fold_key, precision_at, sweep_k,
                                  tune_lambdas)
from loradb.evaluate.summary import averages, gain_recovered, prototype_map, retrieval_summary


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_settings(config: TrainConfig) -> dict:
    """The training settings an adapter's cache key holds."""
    settings = {**asdict(config), "targets": list(config.targets)}
    if not config.validation:  # without early stopping the key stays as it was, so earlier caches still hit
        settings.pop("validation"), settings.pop("patience")
    return settings


def adapter_key(base_path: Path, domain: Domain, task, config: TrainConfig) -> str:
    """The cache key of the domain's LoRA: a hash of the base, the training data, the task and the settings."""
    spec = {"base": load_base(base_path).fingerprint, "texts": domain.train_texts, "labels": domain.train_labels,
            **task.spec(domain), "config": train_settings(config)}
    if task.name != "classification":  # classification keys stay as they were, so earlier caches still hit
        spec["task"] = task.name
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def train_cached(base_path: Path, domain: Domain, task, config: TrainConfig, *, cache: Path,
                 progress: bool) -> tuple[Path, float, bool]:
    """The domain's LoRA, trained once per (base, data, task, config): (dir, train seconds, reused)."""
    out = cache / "adapters" / adapter_key(base_path, domain, task, config)
    if (out / TRAINING_INFO).is_file():
        return out, json.loads((out / TRAINING_INFO).read_text())["seconds"], True
    result = task.train(base_path, domain, out, config, progress=progress)
    return out, result.seconds, False


def _train_all(base_path: Path, domains: list[Domain], task, config: TrainConfig, cache: Path, timing: dict,
               progress: bool, log) -> dict[str, Path]:
    """Every domain's LoRA, trained or found in the cache; its seconds and whether reused go to `timing`."""
    adapter_dirs = {}
    for d in domains:
        adapter_dirs[d.name], seconds, reused = train_cached(base_path, d, task, config, cache=cache, progress=progress)
        timing["train_seconds"][d.name], timing["train_reused"][d.name] = seconds, reused
        log(f"LoRA for {d.name}: " + (f"reused from the cache (trained earlier in {seconds:.0f} s)" if reused
                                      else f"trained on {min(len(d.train_texts), config.max_examples or len(d.train_texts))} "
                                           f"training examples in {seconds:.0f} s"))
    return adapter_dirs


def train_pool(base_path: str | Path, domains_dir: str | Path, config: EvalConfig, *, cache: Path | None = None,
               progress: bool = False, log=_log) -> dict[str, Path]:
    """Train (or find in the cache) every domain's LoRA as run_eval would, and evaluate nothing:
    a long pool can be trained first and evaluated later from the cache."""
    base = load_base(base_path)
    task, domains, config = _task_for(base, domains_dir, config)
    assert config.train is not None  # _task_for resolved the task's default
    timing: dict = {"train_seconds": {}, "train_reused": {}}
    return _train_all(base.path, domains, task, config.train, cache or cache_dir(), timing, progress, log)


def run_eval(base_path: str | Path, domains_dir: str | Path, out: str | Path, config: EvalConfig = EvalConfig(), *,
             cache: Path | None = None, progress: bool = True, resume: bool = False, log=_log) -> dict:
    """Run the leave-one-domain-out benchmark and write results.json, report.md and plots to `out`.

    Args:
        base_path: local transformers model directory.
        domains_dir: one folder per domain with train.jsonl and test.jsonl (>= 3 domains).
        out: report directory (created; an earlier report there is replaced).
        config: k, methods, folds, keys, training and tuning settings.
        cache: where trained adapters are cached (default: loradb's cache directory).
        resume: reuse what an earlier run into the same `out`, with the same configuration,
            data and adapters, finished (evaluate/checkpoint.py): a long run killed part-way
            goes on from its last finished fold.
    Returns:
        The results dictionary written to results.json.
    """
    from loradb.evaluate.report import require_plotting, write_report

    require_plotting()
    check_config(config)
    started = time.perf_counter()
    base = load_base(base_path)
    base_path = base.path
    task, domains, config = _task_for(base, domains_dir, config)
    assert config.train is not None  # _task_for resolved the task's default
    metric = task.metrics[0]
    names = [d.name for d in domains]
    folds = list(config.folds) if config.folds else names
    unknown = sorted(set(folds) - set(names))
    if unknown:
        raise LoradbError(f"`folds` names {', '.join(unknown)}, which {domains_dir} does not hold; its domains: {', '.join(names)}")
    by_name = {d.name: d for d in domains}
    outside = sorted(set(config.orphan_folds) - set(folds))
    if outside:
        raise LoradbError(f"`orphan_folds` names {', '.join(outside)}, which is not held out (`folds`)")
    for held in folds:
        if len(_references(by_name, held, config)) < 2:
            raise LoradbError(f"fold {held}: fewer than two reference domains"
                              + (" once its family is left out (`orphan_folds`)" if held in config.orphan_folds else ""))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or cache_dir()
    log(f"{len(domains)} domains, {len(folds)} held out in turn: "
        + ", ".join(f"{d.name} ({len(d.train_texts)} train / {len(d.test_texts)} test)" for d in domains))

    timing: dict = {"train_seconds": {}, "train_reused": {}, "represent_target_seconds": {}, "adapt_seconds": {}}
    adapter_dirs = _train_all(base_path, domains, task, config.train, cache, timing, progress, log)
    adapters = {n: read_adapter(p) for n, p in adapter_dirs.items()}

    work = out / "work"
    checkpoints = Checkpoints(work, run_stamp(config, base.fingerprint, domains, adapter_dirs), enabled=resume)
    log("representations: training texts of every domain, unlabeled test texts of every target, each task's prompts")
    z_train, z_test, z_test_paths, ref_paths = _representations(base, domains, folds, config, work, checkpoints, timing,
                                                                 progress)

    model = task.model(base_path, config.train)
    transfer_on = config.transfer if config.transfer is not None else len(domains) <= FULL_TRANSFER_UP_TO
    pretrained, own, transfer = _single_adapter_rows(task, model, domains, folds, adapters, transfer_on, checkpoints,
                                                     progress, log)

    results: dict = {"base": base.name, "base_fingerprint": base.fingerprint,  # portable: never this machine's path
                     "domains_dir": str(domains_dir), "task": task.name,
                     "metrics": list(task.metrics),
                     "config": {**asdict(config), "train": {**asdict(config.train), "targets": list(config.train.targets)}},
                     "families": {d.name: d.family for d in domains}, "folds": folds,
                     # with siblings / orphans, from the domain files alone; an orphan fold is an orphan by construction
                     "groups": {**groups(domains), **dict.fromkeys(config.orphan_folds, ORPHANS)},
                     **({"orphan_folds": list(config.orphan_folds)} if config.orphan_folds else {}),
                     "adapters": {d.name: _adapter_record(adapter_dirs[d.name]) for d in domains},
                     "tasks": {d.name: d.task for d in domains},
                     **({"instruction": domains[0].instruction}  # one instruction for every domain: say it once
                        if task.name == "generation" and len({d.instruction for d in domains}) == 1 else {}),
                     **({"missing_domains": missing} if (missing := missing_domains(Path(domains_dir))) else {}),
                     "domains": {}, "hyperparameters": {}, "retrieval": {}, "k_sweep": {}}
    if missing:
        log(f"a partial collection: {len(missing)} domains left out because a source could not be had "
            f"({', '.join(sorted(missing))}); the report says so")
    scorer = Scorer(task, model, adapters, config)
    run = _Run(config, task, model, by_name, work, base_path, adapter_dirs, adapters, ref_paths, z_train, z_test_paths,
               scorer, pretrained, own, timing, progress, log)
    for held_name in folds:
        piece = checkpoints.get(f"fold-{held_name}")
        if piece is None:
            piece = checkpoints.put(f"fold-{held_name}", _fold_piece(run, by_name[held_name]))
        else:
            log(f"held out {held_name}: its rows kept by an earlier run (resume)")
        row = results["domains"][held_name] = piece["row"]
        results["hyperparameters"][held_name] = piece["hyperparameters"]
        results["retrieval"][held_name] = piece["retrieval"]
        timing["adapt_seconds"][held_name] = piece["adapt_seconds"]
        if "k_sweep" in piece:
            results["k_sweep"][held_name] = piece["k_sweep"]
        if "few_shot" in piece:
            results.setdefault("few_shot", {})[held_name] = piece["few_shot"]
        log("  " + "  ".join(f"{m} {row[m][metric]:.3f}" for m in ROWS if m in row) + f"  (key {piece['retrieval']['key']})")
    if checkpoints.reused:
        results["resumed"] = checkpoints.reused  # pieces an earlier run of the same stamp made

    if transfer is not None:
        results["transfer"] = transfer
    results["map"] = prototype_map(z_train, z_test)
    rows = (*BASELINES, *(PEFT_ARROW_ROWS if config.peft_arrow else ()), *config.methods,
            *(LIBRARY_ROWS if config.library_rows else ()))
    results["gain_recovered"] = gain_recovered(results["domains"], rows, metric)
    results["average"] = averages(results["domains"], results["gain_recovered"], rows, task.metrics)
    results["retrieval_summary"] = retrieval_summary(results, metric)
    if config.library_rows:
        results["groups_summary"] = group_summary(results, list(ROWS), metric,
                                                  reps=config.bootstrap, seed=config.seed)
        if NLL in task.metrics:  # generation's second metric, on every scored pair
            results["groups_summary_nll"] = group_summary(results, list(ROWS), NLL, per_example=f"per_example_{NLL}",
                                                          reps=config.bootstrap, seed=config.seed)
        if config.shots:
            zero_shot = [r for r in ROWS if r not in ("pretrained", "best-single", "sft")]  # no oracle is a zero-shot bar
            results["few_shot_summary"] = few_shot_summary(results, zero_shot, list(FEW_SHOT_ROWS), metric,
                                                           reps=config.bootstrap, seed=config.seed)
    timing["total_seconds"] = time.perf_counter() - started
    results["timing"] = timing
    write_report(results, out)
    return results


@dataclass(frozen=True)
class _Run:
    """What every fold of a run reads."""

    config: EvalConfig
    task: ClassificationTask | GenerationTask
    model: Any  # the task's model (tasks.py)
    by_name: dict[str, Domain]
    work: Path
    base_path: Path
    adapter_dirs: dict[str, Path]
    adapters: dict
    ref_paths: dict[str, Path]
    z_train: dict
    z_test_paths: dict[str, Path]
    scorer: Scorer
    pretrained: dict
    own: dict
    timing: dict
    progress: bool
    log: Callable[[str], None]


def _fold_piece(run: _Run, held: Domain) -> dict:
    """One held-out domain's rows, hyper-parameters, retrieval and (when asked) k sweep and
    few-shot rows: a fold's piece of results.json, kept whole by the checkpoints."""
    config, task, model, by_name, work, log = run.config, run.task, run.model, run.by_name, run.work, run.log
    adapter_dirs, base_path, z_train, scorer, metric = run.adapter_dirs, run.base_path, run.z_train, run.scorer, task.metrics[0]
    refs = _references(by_name, held.name, config)
    log(f"held out {held.name} ({held.family}): database of {len(refs)} reference adapters"
        + (" (its family left out: an orphan fold)" if held.name in config.orphan_folds else "")
        + ", z from its unlabeled test texts")
    db_dir = work / f"fold-{held.name}" / "db"
    if db_dir.exists():
        shutil.rmtree(db_dir)
    db = LoraDB.init(db_dir)
    for r in refs:
        db.add(adapter_dirs[r.name], repr=run.ref_paths[r.name], name=r.name, base=base_path, meta={"family": r.family},
               progress=False)
    key, choice = fold_key(db, config)
    if config.library_rows and choice is None and len(refs) >= 3:  # choose_key calibrates only for the key it picks
        db.calibrate_fit(key=key)
    tuned = tune_lambdas(refs, z_train, scorer, key, config) if config.tune else {}
    scaling = {}
    if config.library_rows:  # the update's size, by leave-one-out over the references (evaluate/scale.py)
        threshold = db.fit_threshold(db.spaces()[0]["id"], key)
        scaling = {"default": tune_default_scale(refs, held.name, z_train, scorer, key, threshold, config),
                   "merge-all": tune_task_arithmetic(refs, held.name, scorer, config)}
    piece: dict = {"hyperparameters": {**tuned, **({"scale": scaling} if scaling else {})}, "adapt_seconds": {}}
    row = {"pretrained": dict(run.pretrained[held.name]),
           "sft": {**run.own[held.name], "train_seconds": run.timing["train_seconds"][held.name]}}
    fold = Fold(db, held, run.z_test_paths[held.name], task, model, run.progress,
                run.timing["represent_target_seconds"][held.name])
    nearest = fold.search(config.k, "uniform", key).hits  # the k the key retrieves
    d2 = np.array([h.distance for h in nearest])
    for method in config.methods:
        kwargs = {}
        if method == "similarity" and tuned:
            kwargs["temperature"] = tuned["temperature"]["multiplier"] * auto_temperature(d2)
        if method == "sparse" and tuned:
            kwargs["l1"] = tuned["l1"]["multiplier"] * auto_l1(d2)
        row[method] = fold.run(config.k, method, key, **kwargs)
        piece["adapt_seconds"][method] = row[method]["adapt_seconds"]
    row["merge-all"] = fold.given({r.name: 1.0 / len(refs) for r in refs})
    row["arrow"] = arrow_row(fold, model, held, refs, run.adapters, config)
    if config.peft_arrow:  # PEFT's per-token routing over the k the key retrieves, and over the whole library
        assert config.train is not None  # _task_for resolved the task's default
        for name, experts in zip(PEFT_ARROW_ROWS, ([h.record.name for h in nearest], [r.name for r in refs])):
            row[name] = peft_arrow_row(task, base_path, held, {n: adapter_dirs[n] for n in experts}, config.train,
                                       seed=config.seed)
    if config.library_rows:
        lam = scaling["merge-all"]["lambda"]
        row["merge-all-tuned"] = fold.given(task_arithmetic_weights(refs, lam), **{"lambda": lam})
        row["default"] = default_row(fold, row["pretrained"], config.k, key, config.default_method,
                                     scale=scaling["default"]["scale"])
        row["random-k"] = random_k_row(fold, refs, config.k, config.random_draws, config.seed, metric)
        row["best-single"] = best_single_row(fold, refs)
    piece["retrieval"] = {
        "key": key, "key_choice": choice,
        "keys": compare_keys(fold, refs, held, key, row, config) if config.compare_keys else {},
        "arrow_precision": precision_at([by_name[n].family for n in row["arrow"]["ranking"]], held.family),
    }
    if config.k_sweep:
        piece["k_sweep"] = sweep_k(fold, key, row, config, metric)
    if config.shots:
        piece["few_shot"] = few_shot_rows(held, row, db, model, base_path, config, work / f"fold-{held.name}", log)
    db.close()
    piece["row"] = row
    return piece


def _references(by_name: dict[str, Domain], held: str, config: EvalConfig) -> list[Domain]:
    """The fold's library: every other domain; for an orphan fold, every domain of another family."""
    family = by_name[held].family if held in config.orphan_folds else None
    return [d for n, d in by_name.items() if n != held and (family is None or d.family != family)]


def _adapter_record(adapter_dir: Path) -> dict:
    """What the report lists of each adapter: its held-out score and gain over the base, if
    it was trained with early stopping (train --validation), and its epochs."""
    info = json.loads((Path(adapter_dir) / TRAINING_INFO).read_text())
    return {"examples": info.get("examples"), "epochs_run": len(info.get("losses", [])),
            **({"validation": {k: v for k, v in info["validation"].items() if k != "scores"}} if "validation" in info else {})}


def _representations(base, domains: list[Domain], folds: list[str], config: EvalConfig, work: Path,
                     checkpoints: Checkpoints, timing: dict, progress: bool):
    """(z of every domain's training texts, z of every target's unlabeled test texts, the files
    of those and of the references), each with its task's key; saved under `work` (the fold
    databases read the files), or read from there when a run of the same stamp made them."""
    encoder = None

    def made(name: str, texts: list[str], domain: Domain, path: Path):
        nonlocal encoder
        kept = checkpoints.get(name)
        if kept is not None and path.is_file():
            return representation_from_file(path, base), kept["seconds"]
        encoder = encoder or Encoder(base.path, layer=config.layer, pooling=config.pooling, max_length=config.max_length)
        t0 = time.perf_counter()
        rep = encoder.represent(texts, progress=progress, desc=f"z {name}").with_task(encoder, task_spec(**domain.task))
        seconds = time.perf_counter() - t0
        save_representation(rep, path)
        checkpoints.put(name, {"seconds": seconds})
        return rep, seconds

    z_train, z_test, z_test_paths, ref_paths = {}, {}, {}, {}
    for d in domains:
        ref_paths[d.name] = work / "references" / f"{d.name}.npy"
        z_train[d.name], _ = made(f"reference-{d.name}", d.train_texts, d, ref_paths[d.name])
        if d.name in folds:
            z_test_paths[d.name] = work / "targets" / f"{d.name}.npy"
            z_test[d.name], timing["represent_target_seconds"][d.name] = made(f"target-{d.name}", d.target_texts, d,
                                                                              z_test_paths[d.name])
    return z_train, z_test, z_test_paths, ref_paths


def _single_adapter_rows(task, model, domains: list[Domain], folds: list[str], adapters: dict, full: bool,
                         checkpoints: Checkpoints, progress: bool, log):
    """The pre-trained model and the SFT oracle (each held-out domain's own adapter) on the
    held-out test sets; with `full`, every single adapter on every domain (transfer matrix).
    Each target's rows are a piece of the checkpoints."""
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
        piece = checkpoints.get(f"single-{target.name}")
        if piece is None:
            model.set_delta(None)
            piece = {"pretrained": evaluate_on(task, model, target, progress), "scores": {}}
            for source in sources or [target]:
                model.set_delta(compose_exact([factors_of(adapters[source.name])], [1.0]))
                got = evaluate_on(task, model, target, progress)
                piece["scores"][source.name] = got[metric]
                if source.name == target.name:
                    piece["own"] = got  # the SFT row: the domain's own LoRA on its own test set
            piece = checkpoints.put(f"single-{target.name}", piece)
        pretrained[target.name], own[target.name] = piece["pretrained"], piece["own"]
        for source_name, score in piece["scores"].items():
            scores[[d.name for d in domains].index(source_name), j] = score
    names = [d.name for d in domains]
    transfer = {"sources": names, "targets": names, "metric": metric, "scores": scores.tolist()} if full else None
    return pretrained, own, transfer


def _task_for(base, domains_dir, config: EvalConfig):
    """The task, its domains, and the config with the task's defaults filled in; a task
    that does not suit the base model is refused before any work."""
    if config.task not in TASKS:
        raise LoradbError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    causal = is_causal_lm(base.config)
    if config.task == "generation":
        if not causal:
            raise LoradbError(f"`task` generation needs a causal language model; {base.path} is not one "
                              f"(architectures {base.config.get('architectures')})")
        if config.shots:
            raise LoradbError("`shots` (few-shot rows) is for classification only")
        if config.max_new_tokens < 1:
            raise LoradbError(f"`max_new_tokens` must be at least 1, got {config.max_new_tokens}")
        domains = load_generation_domains(domains_dir, DEFAULT_INSTRUCTION)
        task: GenerationTask | ClassificationTask = GenerationTask(max_new_tokens=config.max_new_tokens,
                                                                            rouge_examples=config.rouge_examples)
        train = config.train or GENERATION_TRAIN
    else:
        if causal:
            raise LoradbError(f"{base.path} is a causal language model; evaluate it with `task` generation")
        domains = load_domains(domains_dir)
        task = ClassificationTask()
        train = config.train or TrainConfig()
    tune = config.tune if config.tune is not None else task.name == "classification"
    if config.test_examples is not None and config.test_examples < 1:
        raise LoradbError(f"`test_examples` must be at least 1, got {config.test_examples}")
    if config.target_split:
        domains = [_with_target_split(d, config.test_examples, config.seed) for d in domains]
    elif config.test_examples is not None:
        domains = [_with_test_sample(d, config.test_examples, config.seed) for d in domains]
    return task, domains, replace(config, train=train.validate(), tune=tune)


def _with_target_split(domain: Domain, n: int | None, seed: int) -> Domain:
    """The domain's test split in two, seeded: at most n (and at most half) scored, the rest the
    unlabeled texts its z is made from, so no scored text is in the target's z."""
    count = len(domain.test_texts)
    scored = min(n or count, count // 2)
    if scored < 1:
        raise LoradbError(f"{domain.name}: {count} test examples cannot be split into scored ones and unlabeled ones for z")
    order = list(range(count))
    random.Random(f"{seed}-target-{domain.name}").shuffle(order)
    return _keeping_tests(domain, sorted(order[:scored]), unlabeled_texts=[domain.test_texts[i] for i in sorted(order[scored:])])


def _with_test_sample(domain: Domain, n: int, seed: int) -> Domain:
    """The domain with a seeded sample of at most n of its test examples (in their order)."""
    if len(domain.test_texts) <= n:
        return domain
    return _keeping_tests(domain, sorted(random.Random(f"{seed}-test-{domain.name}").sample(range(len(domain.test_texts)), n)))


def _keeping_tests(domain: Domain, keep: list[int], **changes) -> Domain:
    """The domain scored on its test examples at `keep` only (and any other field changed)."""
    return replace(domain, test_texts=[domain.test_texts[i] for i in keep], test_labels=[domain.test_labels[i] for i in keep],
                   **changes)


