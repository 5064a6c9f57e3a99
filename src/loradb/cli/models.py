"""Commands that run a base model on their own: train a LoRA, generate with one."""

from __future__ import annotations

from pathlib import Path

from loradb.cli.common import BASE_NAMES, add_training_flags, base_dir, command, train_config
from loradb.errors import LoradbError


def _train_flags(p) -> None:
    p.add_argument("--base", required=True, type=base_dir, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("--data", required=True, help="training .jsonl/.csv/.parquet (fields text, label; with --task "
                   "generation input, target)")
    p.add_argument("--text-field", metavar="NAME", help="the field holding each example's text (default text; "
                   "generation: input)")
    p.add_argument("--label-field", metavar="NAME", help="the field holding each example's label (default label; "
                   "generation: its target, default target)")
    p.add_argument("--out", required=True, help="output adapter directory (new or empty)")
    p.add_argument("--task", choices=("classification", "generation"), default="classification", help="default classification")
    p.add_argument("--labels", help="labels.json mapping each label to its prompt (default: 'This text is LABEL.')")
    p.add_argument("--instruction", help="generation: the instruction put before every input (default: "
                   "'Write a short summary of this text.')")
    add_training_flags(p)


@command("train", "train a LoRA: label-prompt classification, or (input -> target) generation on a causal LM",
         flags=_train_flags, db=False)
def cmd_train(args) -> int:
    from loradb.lora.base import load_base
    from loradb.models.generate import is_causal_lm

    causal = is_causal_lm(load_base(args.base).config)
    if args.task == "generation" and not causal:
        raise LoradbError(f"--task generation needs a causal language model; {args.base} is not one")
    if args.task == "classification" and causal:
        raise LoradbError(f"{args.base} is a causal language model; train it with --task generation (fields input, target)")
    if args.task == "generation":
        from loradb.io.data import read_pairs
        from loradb.models.prompts import DEFAULT_INSTRUCTION
        from loradb.models.train import train_causal_lora

        if args.labels:
            raise LoradbError("--labels is for classification; generation takes --instruction")
        inputs, targets = read_pairs(args.data, args.text_field or "input", args.label_field or "target")
        result = train_causal_lora(args.base, inputs, targets, args.out, train_config(args, "generation"),
                                   instruction=args.instruction or DEFAULT_INSTRUCTION)
    else:
        from loradb.io.data import read_labeled
        from loradb.models.classify import default_prompts
        from loradb.models.prompts import read_prompts
        from loradb.models.train import train_lora

        if args.instruction:
            raise LoradbError("--instruction is for --task generation")
        texts, labels = read_labeled(args.data, args.text_field or "text", args.label_field or "label")
        prompts = read_prompts(Path(args.labels), sorted(set(labels))) if args.labels else default_prompts(sorted(set(labels)))
        result = train_lora(args.base, texts, labels, prompts, args.out, train_config(args))
    print(f"wrote {result.out} ({result.examples} examples, {result.seconds:.1f} s, loss per epoch "
          + ", ".join(f"{x:.3f}" for x in result.losses) + ")")
    if result.validation:
        v = result.validation
        print(f"held-out {v['metric']} on {v['examples']} examples: base {v['base']:.3f}, adapter {v['best']:.3f} "
              f"(gain {v['gain']:+.3f}; best epoch {v['best_epoch']} of {v['epochs_run']} run)")
    return 0


def _generate_flags(p) -> None:
    p.add_argument("--base", required=True, type=base_dir, help=f"base causal LM directory or {BASE_NAMES}")
    p.add_argument("--data", required=True, help="inputs: .jsonl/.csv/.parquet (field --field) or .txt (one a line)")
    p.add_argument("--out", required=True, help="output .jsonl (fields input, output), in input order")
    p.add_argument("--adapter", help="a PEFT LoRA adapter directory, e.g. one `loradb compose` wrote (default: none)")
    p.add_argument("--instruction", help="default: the adapter's training instruction, else 'Write a short summary of this text.'")
    p.add_argument("--field", default="input", help="the input field of .jsonl/.csv/.parquet (default input)")
    p.add_argument("--max-input-tokens", type=int, default=128, help="input tokens kept (default 128, as training)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest output (default 32 tokens)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per batch (default 8)")


@command("generate", "greedy generation with a causal LM, with or without an adapter", flags=_generate_flags, db=False)
def cmd_generate(args) -> int:
    from loradb.models.generate import run_generate

    n = run_generate(args.base, args.data, args.out, adapter=args.adapter, instruction=args.instruction,
                     field=args.field, max_input_tokens=args.max_input_tokens, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size)
    print(f"wrote {args.out} ({n} generations)")
    return 0


def _run_flags(p, *, scoring: bool) -> None:
    """What predict and score share: the base, the file, the adapters, the task's prompts."""
    p.add_argument("--base", required=True, type=base_dir, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("--data", required=True, help=("labeled .jsonl/.csv/.parquet (fields text, label; a causal LM: input, "
                                                  "target; LiteMedSAM: a folder of images with masks/)" if scoring
                                                  else "inputs: .jsonl/.csv/.parquet or .txt (one a line)"))
    p.add_argument("--adapter", action="append" if scoring else "store", default=[] if scoring else None,
                   help="a PEFT LoRA adapter directory, e.g. one `loradb compose` wrote" + (" (repeatable)" if scoring else ""))
    p.add_argument("--db", help="a database: the adapter composed for this file's texts by its search "
                   "(-k, --method; as `loradb compose --data`)")
    p.add_argument("-k", type=int, default=5, help="with --db: adapters retrieved (default 5)")
    p.add_argument("--method", help="with --db: the weighting method (default: the database's default)")
    p.add_argument("--force", action="store_true", help="with --db: compose even when nothing in the library fits")
    p.add_argument("--labels", help="labels.json mapping each label to its prompt (default: the prompts the adapter "
                   "was trained with, else 'This text is LABEL.')")
    p.add_argument("--instruction", help="a causal LM's instruction (default: the adapter's training instruction)")
    p.add_argument("--text-field", metavar="NAME", help="the field holding the texts (default text; a causal LM: input)")
    if scoring:
        p.add_argument("--label-field", metavar="NAME", help="the field holding the labels (default label; a causal LM: target)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="a causal LM's longest output (default 32 tokens)")


def _from_db(args, tmp: Path) -> tuple[Path | None, str]:
    """The adapter --db composes for the file's texts (None when it abstains), and its row's name."""
    import sys

    from loradb.cli.common import open_db
    from loradb.errors import Abstained
    from loradb.io.data import data_file

    options = {"k": args.k, **({"method": args.method} if args.method else {})}
    with open_db(args.db) as db:
        try:
            result = db.compose(tmp / "composed", data=data_file(args.data, args.text_field), base=args.base, force=args.force,
                                **options)
        except Abstained as e:
            print(f"loradb: {e}; the base model is kept", file=sys.stderr)
            return None, "database: abstained"
    parts = ", ".join(f"{h.record.name} {h.weight:+.2f}" for h in result.hits if h.weight)
    return tmp / "composed", f"database: {result.method} ({parts})"


def _adapters_and_names(args, tmp: Path) -> tuple[list, list[str], list[str]]:
    """The adapters to run (given ones, then the database's), their row names, and notes."""
    given = args.adapter if isinstance(args.adapter, list) else [args.adapter] if args.adapter else []
    if not isinstance(args.adapter, list) and given and args.db is not None:
        raise LoradbError("predict runs one model: give --adapter or --db, not both")
    adapters, names = list(given), [str(a) for a in given]
    abstained = []
    if args.db is not None:
        composed, name = _from_db(args, tmp)
        if composed is None:
            abstained.append(name)
        else:
            adapters.append(composed)
            names.append(name)
    elif args.force or args.method:
        raise LoradbError("--method and --force choose how --db composes; give --db DB")
    return adapters, names, abstained


@command("score", "score the base model and it with adapters on a labeled file: accuracy and macro-F1, or ROUGE",
         flags=lambda p: _run_flags(p, scoring=True), db=False, json_flag=True)
def cmd_score(args) -> int:
    import tempfile

    from loradb.cli.common import print_json
    from loradb.evaluate.scoring import Scored, score

    with tempfile.TemporaryDirectory(prefix="loradb-score-") as tmp:
        adapters, names, abstained = _adapters_and_names(args, Path(tmp))
        report = score(args.base, args.data, adapters=adapters, names=names, labels=args.labels, instruction=args.instruction,
                       text_field=args.text_field, label_field=args.label_field, max_new_tokens=args.max_new_tokens)
    for name in abstained:  # nothing composed: the model is the base model, and scores as it
        report.rows.append(Scored(name, report.rows[0].predictions, dict(report.rows[0].scores), note="(the base model kept)"))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.table())
    return 0


def _predict_flags(p) -> None:
    _run_flags(p, scoring=False)
    p.add_argument("--out", required=True, help="output .jsonl (fields text and label, or input and output), in input order")


@command("predict", "the base model's (or an adapted one's) label or output for each text of a file",
         flags=_predict_flags, db=False)
def cmd_predict(args) -> int:
    import json
    import tempfile

    from loradb.io.files import atomic_write_text
    from loradb.evaluate.scoring import run_models

    with tempfile.TemporaryDirectory(prefix="loradb-predict-") as tmp:
        adapters, names, _ = _adapters_and_names(args, Path(tmp))
        report = run_models(args.base, args.data, adapters=adapters, names=names, labeled=False, labels=args.labels,
                            instruction=args.instruction, text_field=args.text_field, max_new_tokens=args.max_new_tokens,
                            with_base=not adapters)
    row = report.rows[0]
    key, value = ("input", "output") if report.task == "generation" else ("text", "label")
    atomic_write_text(Path(args.out), "".join(json.dumps({key: t, value: p}) + "\n" for t, p in zip(report.texts, row.predictions)))
    print(f"wrote {args.out} ({report.examples} {'outputs' if report.task == 'generation' else 'labels'} from {row.name})")
    return 0
