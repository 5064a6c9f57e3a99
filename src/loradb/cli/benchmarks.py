"""Commands of the evaluation harness: eval, the packaged dataset collections, the demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from loradb.cli.common import BASE_NAMES, add_training_flags, base_dir, command, print_json, vector_key_names, train_config
from loradb.errors import LoradbError
from loradb.weighting.registry import FEW_SHOT, ZERO_SHOT


def _eval_flags(p) -> None:
    p.add_argument("--base", required=True, type=base_dir, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("--domains", required=True, help="folder with one folder per domain (train.jsonl, test.jsonl)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--resume", action="store_true",
                   help="reuse what an earlier run into --out finished (representations, single-adapter rows, whole "
                        "folds) when its configuration, data and adapters are the same: a long run goes on where it stopped")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(ZERO_SHOT)} (default all)")
    p.add_argument("-k", type=int, default=5, help="adapters retrieved per held-out domain (default 5)")
    p.add_argument("--no-tune", action="store_true", help="use the automatic lambda_1 / lambda_2 instead of leave-one-out "
                   "tuning (generation never tunes: it would cost thousands of generations per fold)")
    p.add_argument("--shots", help="few-shot rows at these examples per label, e.g. 1,4,16,32 "
                   f"({', '.join(FEW_SHOT)}, scratch)")
    p.add_argument("--layer", type=int, default=-1, help="hidden state for z (default -1, the last)")
    p.add_argument("--pooling", default="mean", choices=("mean", "cls", "last"), help="token pooling for z (default mean)")
    p.add_argument("--task", choices=("classification", "generation", "segmentation"), default="classification",
                   help="classification (accuracy; domains with text, label), generation (ROUGE-L on a causal LM; "
                   "domains with input, target and an optional task.json instruction) or segmentation (Dice with "
                   "--base litemedsam; sites with train/ and test/ images and masks/, e.g. `loradb data sites`); "
                   "default classification")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generation: longest output (default 32 tokens)")
    p.add_argument("--folds", help="hold out only these domains, comma-separated (default: every domain); "
                   "every other domain stays a reference")
    p.add_argument("--key", choices=vector_key_names(), help="retrieval key for every fold (default: each fold chooses "
                   "by leave-one-out over its references, by domain.json families; the data-free key arrow is "
                   "every fold's `arrow` row)")
    p.add_argument("--no-compare-keys", action="store_true", help="skip scoring every retrieval key on each fold")
    p.add_argument("--test-examples", type=int, help="score on a seeded sample of at most this many test examples per domain")
    p.add_argument("--k-sweep", help="also run uniform, similarity and sparse at these k, e.g. 1,3,5,10")
    p.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=None,
                   help="every single adapter on every domain (N^2 evaluations; default: only up to "
                        "8 domains); needed for the Spearman figure")
    library = p.add_argument_group("the library case (adapt or abstain; groups with siblings / orphans)")
    library.add_argument("--library-rows", action="store_true",
                         help="also the default pipeline (adapt or abstain, at a scale chosen on the references), "
                         "merge-all as task arithmetic with a tuned lambda, random-k, the best single reference, and "
                         "each group's means with 95%% paired bootstrap intervals")
    library.add_argument("--target-split", action="store_true", help="make each target's z from test texts that are not "
                         "scored (at most --test-examples, and at most half, are scored)")
    library.add_argument("--scale-grid", help="the default pipeline's scale candidates (default 1,0.5,1.5,2,3; the first "
                         "wins ties)")
    library.add_argument("--task-arithmetic-grid", help="merge-all's lambda candidates besides the plain average "
                         "(default 0.05,0.1,0.2,0.3,0.5)")
    library.add_argument("--scale-references", type=int, help="references that play the target when choosing the scale "
                         "and lambda (default 8)")
    library.add_argument("--tune-examples", type=int, help="labeled examples of each reference scored per candidate "
                         "(default 160)")
    library.add_argument("--orphan-folds", help="hold these domains out with their whole family left out of the library "
                         "(orphans by construction), comma-separated; each must be in --folds (if given)")
    p.add_argument("--peft-arrow", action="store_true", help="also PEFT's own Arrow (per-token routing) over the k "
                   "retrieved adapters and over all")
    p.add_argument("--rouge-examples", type=int, help="generation: ROUGE on a seeded sample of this many scored pairs "
                   "(the teacher-forced loss on every one; default: all)")
    add_training_flags(p)


def _library_settings(args) -> dict:
    """The EvalConfig fields the library flags set (the unset ones keep EvalConfig's defaults)."""
    given = {"scale_grid": _parse_numbers(args.scale_grid, "--scale-grid"),
             "task_arithmetic_grid": _parse_numbers(args.task_arithmetic_grid, "--task-arithmetic-grid"),
             "scale_references": args.scale_references, "tune_examples": args.tune_examples,
             "orphan_folds": tuple(f for f in args.orphan_folds.split(",") if f) if args.orphan_folds else None}
    needs_rows = [flag for flag, field in (("--scale-grid", "scale_grid"), ("--task-arithmetic-grid", "task_arithmetic_grid"),
                                           ("--scale-references", "scale_references"))
                  if given[field] is not None]
    if needs_rows and not args.library_rows:
        raise LoradbError(f"{', '.join(needs_rows)} set(s) the library case's update sizes: add --library-rows")
    return {"library_rows": args.library_rows, "target_split": args.target_split, "peft_arrow": args.peft_arrow,
            "rouge_examples": args.rouge_examples, **{k: v for k, v in given.items() if v is not None}}


@command("eval", "leave-one-domain-out benchmark with a report", flags=_eval_flags, db=False)
def cmd_eval(args) -> int:
    from loradb.evaluate.config import COMPOSED, EvalConfig
    from loradb.evaluate.harness import run_eval
    from loradb.evaluate.report import summary_lines

    methods = tuple(m for m in args.methods.split(",") if m) if args.methods else COMPOSED
    if args.task == "segmentation":
        return _eval_segmentation(args, methods if args.methods else None)
    config = EvalConfig(k=args.k, methods=methods, task=args.task, train=train_config(args, args.task),
                        tune=False if args.no_tune else None, layer=args.layer, pooling=args.pooling,
                        shots=_parse_shots(args.shots), max_new_tokens=args.max_new_tokens,
                        folds=tuple(f for f in args.folds.split(",") if f) if args.folds else None, key=args.key,
                        compare_keys=not args.no_compare_keys, k_sweep=_parse_counts(args.k_sweep, "--k-sweep"),
                        transfer=args.transfer, test_examples=args.test_examples, **_library_settings(args))
    results = run_eval(args.base, args.domains, args.out, config, resume=args.resume)
    print("\n".join(summary_lines(results)))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _eval_segmentation(args, methods: tuple[str, ...] | None) -> int:
    from loradb.evaluate.segmentation import COMPOSED, SegmentationConfig, run_segmentation_eval

    unsupported = [flag for flag, value in (("--shots", args.shots), ("--k-sweep", args.k_sweep), ("--key", args.key),
                                            ("--folds", args.folds), ("--library-rows", args.library_rows),
                                            ("--orphan-folds", args.orphan_folds), ("--peft-arrow", args.peft_arrow))
                   if value]
    if unsupported:
        raise LoradbError(f"--task segmentation does not take {', '.join(unsupported)} yet")
    if methods is not None and set(methods) - set(COMPOSED):
        raise LoradbError(f"--task segmentation composes with {', '.join(COMPOSED)}; got {','.join(methods)}")
    config = SegmentationConfig(k=args.k, methods=methods or COMPOSED, max_test=args.test_examples)
    results = run_segmentation_eval(args.base, args.domains, args.out, config)
    print("mean Dice: " + "  ".join(f"{row} {dice:.3f}" for row, dice in results["mean"].items()))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _parse_counts(text: str | None, flag: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers ('' or None: none)."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LoradbError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None


def _parse_numbers(text: str | None, flag: str) -> tuple[float, ...] | None:
    """A comma-separated list of numbers (None: the flag was not given)."""
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LoradbError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise LoradbError(f"{flag} needs at least one number")
    return values


def _parse_shots(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    shots = _parse_counts(text, "--shots")
    if not shots or any(not 1 <= n <= 32 for n in shots):
        raise LoradbError(f"--shots counts must be between 1 and 32 examples per label, got {text!r}")
    return shots


def _data_flags(p) -> None:
    p.add_argument("name", nargs="*", help="collection to write (see --list); with --check: collections, packaged models "
                   "(minilm, smollm2, litemedsam) or demo (what `loradb demo` needs); default everything")
    p.add_argument("--list", action="store_true", help="list the collections and their families")
    p.add_argument("--check", action="store_true", help="ask the registries whether every pinned file of NAME... is still "
                   "offered, without downloading it: one line per file (ok / gone / hash changed); exit 1 if any is not ok")
    p.add_argument("--out", help="domains folder to write (new or empty)")
    p.add_argument("--domains", help="comma-separated domains of the collection to write (default all): only their "
                   "sources are fetched")


@command("data", "the packaged dataset collections: list them, check their sources, or write one as a domains folder",
         flags=_data_flags, db=False, json_flag=True)
def cmd_data(args) -> int:
    from loradb.evaluate.datasets import COLLECTIONS

    if args.check:
        return _check_sources(args.name, args.json)
    if args.list == bool(args.name) or len(args.name) > 1:
        raise LoradbError("give --list, --check [NAME ...], or one collection NAME with --out DIR")
    if args.list:
        return _list_collections(list(COLLECTIONS), args.json)
    return _write_collection(args.name[0], args.out, args.domains, args.json)


def _list_collections(names: list[str], as_json: bool) -> int:
    from loradb.evaluate.datasets import describe

    infos = [describe(n) for n in names]
    if as_json:
        print_json(infos)
        return 0
    for i in infos:
        size = (f"{i['train']} train / {i['test']} test examples" if i["built"] else "examples counted once built")
        print(f"{i['name']:<15} {i['task']:<15} {i['domains']} domains, {size}\n"
              f"{'':<15} {i['summary']}\n{'':<15} sources: {', '.join(i['sources'])}; licence: {i['licence']}")
        if "families" in i:
            shared = " (siblings: one instruction)" if i["task"] == "generation" else " (siblings: one label set)"
            print(f"{'':<15} families: " + ", ".join(f"{f['family']} {f['domains']}" + (shared if f["siblings"] else "")
                                                      for f in i["families"]))
    return 0


def _write_collection(name: str, out: str | None, domains: str | None, as_json: bool) -> int:
    import sys

    from loradb.evaluate.datasets import describe, write_collection

    if not out:
        raise LoradbError(f"give --out DIR to write collection {name}")
    subset = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
    built = write_collection(name, out, domains=subset)
    written = sorted(p.name for p in built.folder.iterdir() if p.is_dir())
    info = describe(name)
    if as_json:
        print_json({**info, "out": str(built.folder), "domains": len(written), "missing": built.missing})
    else:
        print(f"wrote {len(written)} domain{'s' * (len(written) != 1)} of {name} to {built.folder}; {built.folder / 'SOURCE.md'} says where each "
              "comes from and under which licence")
    if built.missing:
        print(f"loradb: {name} is incomplete: {len(built.missing)} domains left out ({', '.join(sorted(built.missing))}) "
              "because a source could not be had", file=sys.stderr)
        return 1
    return 0


def check_targets() -> dict[str, tuple]:
    """Every name `loradb data --check` takes -> the pinned files it stands for."""
    from loradb.evaluate.datasets import COLLECTIONS
    from loradb.evaluate.demo import DEMO_DOMAINS
    from loradb.models.litemedsam import MEDSAM_LITE
    from loradb.models.packaged import MINILM, SMOLLM2

    zoo = COLLECTIONS["zoo"].recipes
    assert zoo is not None
    return {**{name: c.pinned for name, c in COLLECTIONS.items()}, "minilm": (MINILM,), "smollm2": (SMOLLM2,),
            "litemedsam": (MEDSAM_LITE,), "demo": (MINILM, *zoo.needs_of(DEMO_DOMAINS))}


def _check_sources(names: list[str], as_json: bool) -> int:
    from loradb.io.offered import offered

    targets = check_targets()
    unknown = [n for n in names if n not in targets]
    if unknown:
        raise LoradbError(f"--check takes {', '.join(targets)}; not {', '.join(unknown)}")
    pins = {p.requirement + " " + p.filename: p for n in (names or targets) for p in targets[n]}
    offers = [offered(p) for p in pins.values()]
    if as_json:
        print_json([{"requirement": o.pinned.requirement, "file": o.pinned.filename, "registry": o.pinned.registry,
                     "sha256": o.pinned.sha256, "status": o.status, "detail": o.detail} for o in offers])
    else:
        for o in offers:
            print(f"{o.status:<12} {o.pinned.requirement:<32} {o.pinned.registry:<5} {o.pinned.filename}"
                  + (f"  ({o.detail})" if o.detail else ""))
        bad = [o for o in offers if not o.ok]
        print(f"{len(offers) - len(bad)} of {len(offers)} pinned files are offered as pinned"
              + (f"; not ok: {', '.join(o.pinned.requirement for o in bad)}" if bad else ""))
    return 0 if all(o.ok for o in offers) else 1


@command("demo", "the main job: the library case on 16 zoo domains (adapt or abstain) with the packaged all-MiniLM-L6-v2", db=False,
         flags=lambda p: p.add_argument("--out", default="loradb-demo", help="report directory (default loradb-demo)"))
def cmd_demo(args) -> int:
    from loradb.evaluate.demo import run_demo

    run_demo(Path(args.out))
    return 0
