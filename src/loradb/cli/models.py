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
