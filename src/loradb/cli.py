"""The `loradb` command: thin argument parsing over the library, one function per command.

Bad input prints one line on stderr and exits 2; `--json` prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import LoradbError

EXIT_BAD_INPUT = 2
DEFAULT_DP_DELTA = 1e-5


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise LoradbError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _print_json(doc) -> None:
    from .export import to_json

    print(to_json(doc))


def _open(target):
    """A database directory, or a server URL (http://host:port) used through the client."""
    from .client import RemoteDB, is_url

    if is_url(target):
        return RemoteDB(target)
    from .db import LoraDB

    return LoraDB(target)


def _local_only(target, command: str) -> None:
    from .client import is_url

    if is_url(target):
        raise LoradbError(f"`loradb {command}` works on a database directory, on the machine that holds it, not on a URL")


def _dp_config(args):
    """--dp-epsilon E [--dp-delta D] --dp-clip C as a privacy.DPConfig (None without --dp-epsilon)."""
    from .privacy import DPConfig

    if args.dp_epsilon is None:
        if args.dp_delta is not None or args.dp_clip is not None:
            raise LoradbError("--dp-delta and --dp-clip go with --dp-epsilon")
        return None
    if args.dp_clip is None:
        raise LoradbError("--dp-epsilon needs --dp-clip C, the bound on each example's feature norm (fix it without "
                          "looking at the private data; the README gives values for the packaged model)")
    return DPConfig(args.dp_epsilon, args.dp_delta if args.dp_delta is not None else DEFAULT_DP_DELTA, args.dp_clip).validate()


def _task(args):
    """--prompts labels.json or --instruction TEXT: the task whose embedding the task keys compare."""
    from .represent import task_spec

    prompts = getattr(args, "prompts", None)
    if prompts is None:
        return task_spec(instruction=getattr(args, "instruction", None))
    from .evaluate.domains import read_prompts

    return task_spec(prompts=read_prompts(Path(prompts)), instruction=getattr(args, "instruction", None))


def _print_privacy(privacy) -> None:
    if privacy:
        from .privacy import statement

        print("z released " + statement(privacy))


# ---- commands ------------------------------------------------------------------------

def cmd_init(args) -> int:
    from .db import LoraDB

    _local_only(args.db, "init")
    LoraDB.init(args.db, blobs=args.blobs).close()
    print(f"created an empty loradb database at {args.db}")
    return 0


def cmd_add(args) -> int:
    from .db import parse_meta

    recipe = {k: v for k, v in (("layer", args.layer), ("pooling", args.pooling), ("max_length", args.max_length)) if v is not None}
    with _open(args.db) as db:
        record = db.add(args.adapter, data=args.data, repr=args.repr, name=args.name, meta=parse_meta(args.meta),
                        base=args.base, recipe=recipe or None, dp=_dp_config(args), task=_task(args))
    if args.json:
        _print_json(record.summary())
    else:
        print(f"added {record.name} as {record.id} (rank {record.rank}, space {record.space_id})")
        _print_privacy(record.privacy)
    return 0


def cmd_list(args) -> int:
    with _open(args.db) as db:
        records = db.list()
    if args.json:
        _print_json([r.summary() for r in records])
        return 0
    if not records:
        print("no records")
    for r in records:
        print(f"{r.id[:12]}  {r.name:<24} rank {r.rank:<4} n={r.n_samples if r.n_samples is not None else '?':<7} "
              f"space {r.space_id}  {r.created[:19]}")
    return 0


def cmd_show(args) -> int:
    with _open(args.db) as db:
        details = db.get(args.id).details()
    if args.json:
        _print_json(details)
    else:
        for key, value in details.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


def cmd_remove(args) -> int:
    with _open(args.db) as db:
        record = db.remove(args.id)
    print(f"removed {record.name} ({record.id})")
    return 0


def cmd_export(args) -> int:
    with _open(args.db) as db:
        out = db.export(args.id, args.out)
    print(f"wrote {out}")
    return 0


def cmd_represent(args) -> int:
    from .represent import save_representation
    from .targets import represent_file

    rep = represent_file(args.base, args.data, layer=args.layer, pooling=args.pooling, max_length=args.max_length,
                         batch_size=args.batch_size, dp=_dp_config(args), task=_task(args))
    save_representation(rep, args.output)
    print(f"wrote {args.output} (dim {rep.z.shape[0]}, {rep.n_samples} examples, space {rep.space.id})")
    _print_privacy(rep.privacy)
    return 0


def _search_args(args) -> dict:
    return {"data": args.data, "repr": args.repr, "base": args.base, "space": args.space, "k": args.k,
            "method": args.method, "temperature": args.temperature, "l1": args.l1, "key": args.key,
            "task": _task(args), "dp": _dp_config(args)}


def _print_result(result, out: str | None = None) -> None:
    print(f"method {result.method}" + (f", residual {result.residual:.6g}" if result.residual is not None else "")
          + "".join(f", {k} {v:.6g}" if isinstance(v, float) else f", {k} {v}" for k, v in result.params.items()))
    for h in result.hits:
        print(f"  {h.record.id[:12]}  {h.record.name:<24} distance {h.distance:<12.6g} weight {h.weight:+.6f}")
    if getattr(result, "compression", None):
        ranks = sorted({m["rank"] for m in result.compression["modules"].values()})
        what = result.compression.get("merge")
        print((f"{what} merge, factorised" if what else "compressed") + f" to rank {ranks[0]}"
              + (f"..{ranks[-1]}" if len(ranks) > 1 else "") + f", relative Frobenius error {result.compression['rel_error']:.3g}"
              + (" against the dense merge" if what else " against the exact merge"))
    _print_privacy(result.privacy)
    if out:
        print(f"wrote {out}")


def cmd_search(args) -> int:
    with _open(args.db) as db:
        result = db.search(**_search_args(args))
    _print_json(result.to_dict()) if args.json else _print_result(result)
    return 0


def cmd_compose(args) -> int:
    from .db import parse_weights

    rank, max_error = _parse_rank(args)
    shape = {"merged": args.merged, "rank": rank, "max_error": max_error, "merge": args.merge, "density": args.density,
             "seed": args.seed, "shots": args.shots, "labels": args.labels}
    with _open(args.db) as db:
        if args.weights:
            if args.data or args.repr:
                raise LoradbError("give either --weights or --data/--repr, not both")
            result = db.compose(args.out, weights=parse_weights(args.weights), base=args.base, **shape)
        else:
            if not (args.data or args.repr):
                raise LoradbError("give one of --data FILE, --repr Z.npy or --weights ID=W ...")
            result = db.compose(args.out, **shape, **_search_args(args))
    if args.json:
        _print_json({**result.to_dict(), "out": str(args.out)})
    else:
        _print_result(result, str(args.out))
    return 0


def _parse_rank(args) -> tuple[int | None, float | None]:
    """--rank R, or --rank auto with --max-error E."""
    if args.rank is None:
        if args.max_error is not None:
            raise LoradbError("--max-error goes with --rank auto")
        return None, None
    if args.rank == "auto":
        if args.max_error is None:
            raise LoradbError("--rank auto needs --max-error E (the relative Frobenius error allowed per module)")
        return None, args.max_error
    if args.max_error is not None:
        raise LoradbError("--max-error goes with --rank auto, not with a fixed rank")
    try:
        return int(args.rank), None
    except ValueError:
        raise LoradbError(f"--rank takes a whole number or 'auto', got {args.rank!r}") from None


def cmd_key_list(args) -> int:
    from .keys import KEYS

    _local_only(args.db, "key list")
    with _open(args.db) as db:
        spaces = [{"space": sp["id"], "records": sp["records"], "default_key": db.default_key(sp["id"])}
                  for sp in db.index.spaces()]
    if args.json:
        _print_json({"keys": {k.name: k.help for k in KEYS.values()}, "spaces": spaces})
        return 0
    for k in KEYS.values():
        print(f"{k.name:<16} {k.help}")
    for sp in spaces:
        print(f"space {sp['space']} ({sp['records']} records): default key {sp['default_key'] or 'raw-l2 (none chosen)'}")
    return 0


def cmd_key_choose(args) -> int:
    _local_only(args.db, "key choose")
    with _open(args.db) as db:
        chosen = db.choose_key(family_meta=args.by, k=args.k, space=args.space)
    if args.json:
        _print_json(chosen)
        return 0
    for name, p in chosen["precision"].items():
        print(f"{name:<16} family precision@{args.k} {p:.3f}" + ("   <- chosen" if name == chosen["key"] else ""))
    print(f"space {chosen['space']}: default retrieval key {chosen['key']} (leave-one-out over {chosen['records']} records)")
    return 0


def cmd_check(args) -> int:
    with _open(args.db) as db:
        report = db.check()
    if args.json:
        _print_json(report.to_dict())
    else:
        for p in report.problems:
            print(f"problem: {p}")
        for sha in report.orphans:
            print(f"orphan blob: {sha} (`loradb gc` removes it)")
        for t in report.temp_files:
            print(f"stray temp file: {t} (`loradb gc` removes it)")
        print(f"{report.records} records; " + ("clean" if report.clean else f"{len(report.problems)} problems"))
    return 0 if report.clean else 1


def cmd_token_create(args) -> int:
    from .access import create_token

    _local_only(args.db, "token create")
    with _open(args.db) as db:
        secret, row = create_token(db, args.name, args.scope)
    if args.json:
        _print_json({**row, "token": secret})
    else:
        print(secret)
        print(f"token {row['id']} for {row['name']} with scope {row['scope']}: shown this once, stored only hashed; "
              "clients send it from LORADB_TOKEN", file=sys.stderr)
    return 0


def cmd_token_list(args) -> int:
    from .access import list_tokens

    _local_only(args.db, "token list")
    with _open(args.db) as db:
        rows = list_tokens(db)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tokens")
    for r in rows:
        print(f"{r['id']}  {r['name']:<24} {r['scope']:<6} created {r['created'][:19]}"
              + (f"  revoked {r['revoked'][:19]}" if r["revoked"] else ""))
    return 0


def cmd_token_revoke(args) -> int:
    from .access import revoke_tokens

    _local_only(args.db, "token revoke")
    with _open(args.db) as db:
        rows = revoke_tokens(db, args.ref)
    for r in rows:
        print(f"revoked token {r['id']} of {r['name']} ({r['scope']})")
    return 0


def cmd_serve(args) -> int:
    from .server import serve

    _local_only(args.db, "serve")
    serve(args.db, host=args.host, port=args.port, bases=args.base, max_upload_mb=args.max_upload_mb, max_dim=args.max_dim,
          public_read=args.public_read, max_k=args.max_k, max_compose_mb=args.max_compose_mb,
          rate_limit=args.rate_limit, log_level=args.log_level)
    return 0


def cmd_copy(args) -> int:
    from .db import LoraDB

    _local_only(args.db, "copy")
    _local_only(args.target, "copy")
    with LoraDB(args.db) as source, LoraDB(args.target) as target:
        n = source.copy_into(target)
    print(f"copied {n} records with their adapters and tokens from {args.db} to {args.target}")
    return 0


def cmd_gc(args) -> int:
    with _open(args.db) as db:
        removed = db.gc()
    print(f"removed {len(removed)} orphan files")
    return 0


def _train_config(args, task: str = "classification"):
    """The task's default training settings with the flags the user gave on top."""
    from dataclasses import replace

    from .train import GENERATION_TRAIN, TrainConfig

    given = {k: getattr(args, k) for k in ("r", "alpha", "epochs", "lr", "batch_size", "max_length", "max_examples", "seed")
             if getattr(args, k) is not None}
    if args.targets is not None:
        given["targets"] = tuple(t for t in args.targets.split(",") if t)
    return replace(GENERATION_TRAIN if task == "generation" else TrainConfig(), **given).validate()


def cmd_train(args) -> int:
    from .base import load_base
    from .generate import is_causal_lm

    causal = is_causal_lm(load_base(args.base).config)
    if args.task == "generation" and not causal:
        raise LoradbError(f"--task generation needs a causal language model; {args.base} is not one")
    if args.task == "classification" and causal:
        raise LoradbError(f"{args.base} is a causal language model; train it with --task generation (fields input, target)")
    if args.task == "generation":
        from .data import read_pairs
        from .train import DEFAULT_INSTRUCTION, train_causal_lora

        if args.labels:
            raise LoradbError("--labels is for classification; generation takes --instruction")
        inputs, targets = read_pairs(args.data)
        result = train_causal_lora(args.base, inputs, targets, args.out, _train_config(args, "generation"),
                                   instruction=args.instruction or DEFAULT_INSTRUCTION)
    else:
        from .classify import default_prompts
        from .data import read_labeled
        from .evaluate.domains import read_prompts
        from .train import train_lora

        if args.instruction:
            raise LoradbError("--instruction is for --task generation")
        texts, labels = read_labeled(args.data)
        prompts = read_prompts(Path(args.labels), sorted(set(labels))) if args.labels else default_prompts(sorted(set(labels)))
        result = train_lora(args.base, texts, labels, prompts, args.out, _train_config(args))
    print(f"wrote {result.out} ({result.examples} examples, {result.seconds:.1f} s, loss per epoch "
          + ", ".join(f"{x:.3f}" for x in result.losses) + ")")
    return 0


def cmd_generate(args) -> int:
    from .generate import run_generate

    n = run_generate(args.base, args.data, args.out, adapter=args.adapter, instruction=args.instruction,
                     field=args.field, max_input_tokens=args.max_input_tokens, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size)
    print(f"wrote {args.out} ({n} generations)")
    return 0


def cmd_eval(args) -> int:
    from .evaluate.harness import COMPOSED, EvalConfig, run_eval
    from .evaluate.report import summary_lines

    methods = tuple(m for m in args.methods.split(",") if m) if args.methods else COMPOSED
    config = EvalConfig(k=args.k, methods=methods, task=args.task, train=_train_config(args, args.task),
                        tune=False if args.no_tune else None, layer=args.layer, pooling=args.pooling,
                        shots=_parse_shots(args.shots), max_new_tokens=args.max_new_tokens,
                        folds=tuple(f for f in args.folds.split(",") if f) if args.folds else None, key=args.key,
                        compare_keys=not args.no_compare_keys, k_sweep=_parse_counts(args.k_sweep, "--k-sweep"),
                        transfer=args.transfer, test_examples=args.test_examples)
    results = run_eval(args.base, args.domains, args.out, config)
    print("\n".join(summary_lines(results)))
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


def _parse_shots(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    shots = _parse_counts(text, "--shots")
    if not shots or any(not 1 <= n <= 32 for n in shots):
        raise LoradbError(f"--shots counts must be between 1 and 32 examples per label, got {text!r}")
    return shots


def cmd_data(args) -> int:
    from .evaluate.datasets import COLLECTIONS, describe, write_collection

    if args.list == bool(args.name):
        raise LoradbError("give --list, or a collection NAME with --out DIR")
    if args.list:
        infos = [describe(n) for n in COLLECTIONS]
        if args.json:
            _print_json(infos)
            return 0
        for i in infos:
            size = (f"{i['train']} train / {i['test']} test examples" if i["built"] else "examples counted once built")
            print(f"{i['name']:<15} {i['task']:<15} {i['domains']} domains, {size}\n"
                  f"{'':<15} {i['summary']}\n{'':<15} sources: {', '.join(i['sources'])}; licence: {i['licence']}")
        return 0
    if not args.out:
        raise LoradbError(f"give --out DIR to write collection {args.name}")
    out = write_collection(args.name, args.out)
    info = describe(args.name)
    if args.json:
        _print_json({**info, "out": str(out)})
    else:
        print(f"wrote {info['domains']} domains ({info['train']} train / {info['test']} test examples) to {out}; "
              f"{out / 'SOURCE.md'} says where each comes from")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out))
    return 0


# ---- parser --------------------------------------------------------------------------

def _add_target(p, *, required_data: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required_data)
    g.add_argument("--data", help="target dataset (.jsonl/.csv/.parquet field 'text', or .txt lines); unlabeled")
    g.add_argument("--repr", help="target representation .npy made by `loradb represent`")
    p.add_argument("-k", type=int, default=5, help="how many adapters to retrieve (default 5)")
    p.add_argument("--method", default="similarity",
                   help="uniform | nearest | similarity | linear | sparse (default similarity); compose also takes "
                        "learned | lorahub with --shots")
    p.add_argument("--temperature", type=float, help="lambda_1 of similarity (default: 1 / median squared distance)")
    p.add_argument("--l1", type=float, help="lambda_2 of sparse (default: 0.1 x median squared distance)")
    p.add_argument("--key", choices=_key_names(), help="retrieval key (default: the space's chosen key, else raw-l2; "
                   "`loradb key list` describes them)")
    p.add_argument("--base", type=_base, help=f"base model directory or {BASE_NAMES} (default: the database's only base model)")
    p.add_argument("--space", help="representation space id (default: the only one in use)")
    _add_task(p, "the target's task, for the task keys")
    _add_dp(p)


def _key_names() -> list[str]:
    from .keys import KEYS

    return list(KEYS)


def _add_task(p, what: str) -> None:
    g = p.add_argument_group(what)
    g.add_argument("--prompts", metavar="LABELS_JSON", help="labels.json mapping each label to its prompt")
    g.add_argument("--instruction", help="the task's instruction (generation)")


def _add_dp(p) -> None:
    g = p.add_argument_group("differential privacy of z computed from --data (see README: privacy model)")
    g.add_argument("--dp-epsilon", type=float, help="release z with (epsilon, delta)-differential privacy per example")
    g.add_argument("--dp-delta", type=float, help=f"delta of the guarantee (default {DEFAULT_DP_DELTA:g}; must be below 1/n)")
    g.add_argument("--dp-clip", type=float, help="clip each example's feature vector to this L2 norm (required with --dp-epsilon)")


def _add_recipe(p, *, defaults: bool) -> None:
    p.add_argument("--layer", type=int, default=-1 if defaults else None, help="hidden-state index (0 = embeddings, -1 = last)")
    p.add_argument("--pooling", default="mean" if defaults else None, choices=("mean", "cls", "last"), help="token pooling (default mean)")
    p.add_argument("--max-length", type=int, default=256 if defaults else None, help="tokens per example (default 256)")


BASE_NAMES = "a packaged model: minilm | smollm2"


def _base(value: str) -> str:
    """--base: a directory, or the name of a packaged model (made ready on first use)."""
    from .models import resolve_base

    return resolve_base(value)


def _command(sub, name: str, fn, help: str, *, db: bool = True, url: bool = True, json_flag: bool = False):
    """A subcommand: its DB argument (most take one; `url` if a server URL will do), its function, optional --json."""
    p = sub.add_parser(name, help=help)
    if db:
        p.add_argument("db", help="database directory or postgresql:// URL" + (", or a loradb server URL (http://host:port)" if url else ""))
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(fn=fn)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loradb", description="A database of LoRA adapters: retrieve and merge adapters for new, unlabeled data.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _command(sub, "init", cmd_init, "create an empty database (a directory, or a postgresql:// URL)", url=False).add_argument(
        "--blobs", metavar="s3://BUCKET/PREFIX", help="keep adapter files in S3-compatible object storage (required with "
        "PostgreSQL; endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")

    p = _command(sub, "add", cmd_add, "store an adapter with the representation of its training data", json_flag=True)
    p.add_argument("adapter", help="PEFT LoRA adapter directory")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="the adapter's training texts (z computed here)")
    g.add_argument("--repr", help="z as a .npy vector")
    p.add_argument("--name", help="unique record name (default: the directory name)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="free metadata (repeatable)")
    p.add_argument("--base", type=_base, help=f"base model directory or {BASE_NAMES} (default: the adapter's base_model_name_or_path)")
    _add_recipe(p, defaults=False)
    _add_task(p, "the adapter's task, stored as its task key (default: what `loradb train` recorded beside it)")
    _add_dp(p)

    _command(sub, "list", cmd_list, "list records", json_flag=True)
    _command(sub, "show", cmd_show, "show one record", json_flag=True).add_argument(
        "id", help="record id, unique id prefix, or name")
    _command(sub, "remove", cmd_remove, "delete a record (and its blob if unshared)").add_argument("id")

    p = _command(sub, "export", cmd_export, "write a stored adapter back out as a PEFT directory")
    p.add_argument("id")
    p.add_argument("--out", required=True)

    p = _command(sub, "represent", cmd_represent, "compute z for a dataset under a base model", db=False)
    p.add_argument("data")
    p.add_argument("--base", required=True, type=_base, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("-o", "--output", required=True, help="output .npy (a .npy.json sidecar records its space)")
    _add_recipe(p, defaults=True)
    p.add_argument("--batch-size", type=int, default=32)
    _add_task(p, "the dataset's task, for the task keys")
    _add_dp(p)

    _add_target(_command(sub, "search", cmd_search, "retrieve the nearest adapters and their weights", json_flag=True),
                required_data=True)

    p = _command(sub, "compose", cmd_compose, "merge retrieved (or given) adapters into one", json_flag=True)
    _add_target(p, required_data=False)
    p.add_argument("--weights", nargs="+", metavar="ID=W", help="use these records with these weights (skips retrieval)")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--merged", action="store_true", help="write the base model with the delta merged in")
    p.add_argument("--rank", help="write the optimal rank-R approximation (R, or 'auto' with --max-error)")
    p.add_argument("--max-error", type=float, help="with --rank auto: relative Frobenius error allowed per module")
    p.add_argument("--merge", default="exact", choices=("exact", "ties", "dare"),
                   help="exact weighted sum (default), or TIES / DARE on each module's deltas, re-factorised")
    p.add_argument("--density", type=float, default=0.5, help="ties/dare: fraction of entries kept (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="dare: seed of the random masks")
    p.add_argument("--shots", help="--method learned|lorahub: labeled .jsonl with 1-32 target examples per label")
    p.add_argument("--labels", help="with --shots: labels.json mapping each label to its prompt")

    _command(sub, "check", cmd_check, "verify every row and blob; report orphans (exit 1 if any problem)", json_flag=True)
    _command(sub, "gc", cmd_gc, "remove orphan blobs and stray temp files", url=False)

    p = _command(sub, "copy", cmd_copy, "copy every record, adapter and token into another (initialised) database",
                 url=False)
    p.add_argument("target", help="the destination: a database directory or postgresql:// URL made by `loradb init`")

    p = _command(sub, "serve", cmd_serve, "serve the database over HTTP (contribute, search, compose, download)", url=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    p.add_argument("--base", action="append", default=[], metavar="DIR", type=_base,
                   help="accept only adapters for this base model, checked layer by layer (repeatable; default any)")
    p.add_argument("--max-upload-mb", type=float, default=256, help="largest request body in MiB (default 256)")
    p.add_argument("--max-dim", type=int, default=16384, help="largest representation dimension (default 16384)")
    p.add_argument("--public-read", action="store_true", help="allow reads (list, search, compose, download) without a token")
    p.add_argument("--max-k", type=int, default=100, help="most adapters one search or compose may use (default 100)")
    p.add_argument("--max-compose-mb", type=float, default=1024,
                   help="working memory one compose may use, in MiB; larger ones are refused before work (default 1024)")
    p.add_argument("--rate-limit", metavar="N/s", help="requests per token (anonymous reads: per address), e.g. 20/s or "
                   "600/min; beyond it 429 with Retry-After (default unlimited)")
    p.add_argument("--log-level", default="warning", choices=("warning", "info", "debug"), help="server log (info logs requests)")

    keys = sub.add_parser("key", help="retrieval keys: list them, or choose a space's default on its records")
    key_sub = keys.add_subparsers(dest="key_command", required=True, parser_class=_Parser)
    _command(key_sub, "list", cmd_key_list, "the retrieval keys, and each space's chosen one", url=False, json_flag=True)
    p = _command(key_sub, "choose", cmd_key_choose, "choose a space's default key by leave-one-out over its records",
                 url=False, json_flag=True)
    p.add_argument("--by", default="family", metavar="META", help="metadata key naming each record's family (default family)")
    p.add_argument("-k", type=int, default=5, help="precision at this many retrieved (default 5)")
    p.add_argument("--space", help="representation space id (default: the only one in use)")

    tokens = sub.add_parser("token", help="access tokens for `loradb serve` (create, list, revoke)")
    token_sub = tokens.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    p = _command(token_sub, "create", cmd_token_create, "make a token; prints it once", url=False, json_flag=True)
    p.add_argument("--name", required=True, help="who holds it; records they contribute are owned by this name")
    p.add_argument("--scope", required=True, choices=("read", "write", "admin"),
                   help="read: list/search/compose/download; write: + upload, delete own; admin: + delete any")
    _command(token_sub, "list", cmd_token_list, "list tokens (never their secrets)", url=False, json_flag=True)
    _command(token_sub, "revoke", cmd_token_revoke, "revoke tokens by id or name", url=False).add_argument("ref", help="token id or name")

    p = _command(sub, "train", cmd_train, "train a LoRA: label-prompt classification, or (input -> target) generation "
                 "on a causal LM", db=False)
    p.add_argument("--base", required=True, type=_base, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("--data", required=True, help="training .jsonl (fields text, label; with --task generation input, target)")
    p.add_argument("--out", required=True, help="output adapter directory (new or empty)")
    p.add_argument("--task", choices=("classification", "generation"), default="classification", help="default classification")
    p.add_argument("--labels", help="labels.json mapping each label to its prompt (default: 'This text is LABEL.')")
    p.add_argument("--instruction", help="generation: the instruction put before every input (default: "
                   "'Write a short summary of this text.')")
    _add_training(p)

    p = _command(sub, "generate", cmd_generate, "greedy generation with a causal LM, with or without an adapter", db=False)
    p.add_argument("--base", required=True, type=_base, help=f"base causal LM directory or {BASE_NAMES}")
    p.add_argument("--data", required=True, help="inputs: .jsonl/.csv/.parquet (field --field) or .txt (one a line)")
    p.add_argument("--out", required=True, help="output .jsonl (fields input, output), in input order")
    p.add_argument("--adapter", help="a PEFT LoRA adapter directory, e.g. one `loradb compose` wrote (default: none)")
    p.add_argument("--instruction", help="default: the adapter's training instruction, else 'Write a short summary of this text.'")
    p.add_argument("--field", default="input", help="the input field of .jsonl/.csv/.parquet (default input)")
    p.add_argument("--max-input-tokens", type=int, default=128, help="input tokens kept (default 128, as training)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest output (default 32 tokens)")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per batch (default 8)")

    p = _command(sub, "eval", cmd_eval, "leave-one-domain-out benchmark with a report", db=False)
    p.add_argument("--base", required=True, type=_base, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("--domains", required=True, help="folder with one folder per domain (train.jsonl, test.jsonl)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--methods", help="comma-separated subset of nearest,uniform,similarity,linear,sparse (default all)")
    p.add_argument("-k", type=int, default=5, help="adapters retrieved per held-out domain (default 5)")
    p.add_argument("--no-tune", action="store_true", help="use the automatic lambda_1 / lambda_2 instead of leave-one-out "
                   "tuning (generation never tunes: it would cost thousands of generations per fold)")
    p.add_argument("--shots", help="few-shot rows at these examples per label, e.g. 1,4,16,32 (learned, lorahub, scratch)")
    p.add_argument("--layer", type=int, default=-1, help="hidden state for z (default -1, the last)")
    p.add_argument("--pooling", default="mean", choices=("mean", "cls", "last"), help="token pooling for z (default mean)")
    p.add_argument("--task", choices=("classification", "generation"), default="classification",
                   help="classification (accuracy; domains with text, label) or generation (ROUGE-L on a causal LM; "
                   "domains with input, target and an optional task.json instruction); default classification")
    p.add_argument("--max-new-tokens", type=int, default=32, help="generation: longest output (default 32 tokens)")
    p.add_argument("--folds", help="hold out only these domains, comma-separated (default: every domain); "
                   "every other domain stays a reference")
    p.add_argument("--key", choices=_key_names(), help="retrieval key for every fold (default: each fold chooses "
                   "by leave-one-out over its references, by domain.json families)")
    p.add_argument("--no-compare-keys", action="store_true", help="skip scoring every retrieval key on each fold")
    p.add_argument("--test-examples", type=int, help="score on a seeded sample of at most this many test examples per domain")
    p.add_argument("--k-sweep", help="also run uniform, similarity and sparse at these k, e.g. 1,3,5,10")
    p.add_argument("--transfer", action=argparse.BooleanOptionalAction, default=None,
                   help="every single adapter on every domain (N^2 evaluations; default: only up to "
                        "8 domains); needed for the Spearman figure")
    _add_training(p)

    p = _command(sub, "data", cmd_data, "the packaged dataset collections: list them, or write one as a domains folder",
                 db=False, json_flag=True)
    p.add_argument("name", nargs="?", help="collection to write (see --list)")
    p.add_argument("--list", action="store_true", help="list the collections")
    p.add_argument("--out", help="domains folder to write (new or empty)")

    p = _command(sub, "demo", cmd_demo, "the main job: the benchmark on the packaged all-MiniLM-L6-v2 and VADER domains", db=False)
    p.add_argument("--out", default="loradb-demo", help="report directory (default loradb-demo)")
    return parser


def _add_training(p) -> None:
    """Training flags; unset ones take the task's defaults (classification / generation)."""
    from .train import GENERATION_TRAIN, TrainConfig

    c, g = TrainConfig(), GENERATION_TRAIN

    def both(name, show=lambda v: v):
        a, b = getattr(c, name), getattr(g, name)
        return f"default {show(a)}" if a == b else f"default {show(a)}; generation {show(b)}"

    p.add_argument("--r", type=int, help=f"LoRA rank ({both('r')})")
    p.add_argument("--alpha", type=float, help=f"LoRA alpha ({both('alpha', lambda v: f'{v:g}')})")
    p.add_argument("--targets", help=f"target modules ({both('targets', ','.join)})")
    p.add_argument("--epochs", type=int, help=both("epochs"))
    p.add_argument("--lr", type=float, help=both("lr", lambda v: f"{v:g}"))
    p.add_argument("--batch-size", type=int, help=both("batch_size"))
    p.add_argument("--max-length", type=int, help=f"tokens per example, for generation of the input ({both('max_length')})")
    p.add_argument("--max-examples", type=int, help="train on a seeded sample of at most this many examples")
    p.add_argument("--seed", type=int, help=both("seed"))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except LoradbError as e:
        print(f"loradb: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # an unwritable --out, a full disk: the user's to fix, not a loradb bug
        print(f"loradb: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("loradb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
