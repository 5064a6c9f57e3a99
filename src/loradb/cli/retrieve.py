"""Commands that turn data into adapters: represent, search, compose, and the retrieval keys."""

from __future__ import annotations

from loradb.cli.common import (BASE_NAMES, add_dp_flags, add_recipe_flags, add_task_flags, add_text_field_flag, base_dir,
                               command, data_of, dp_config, key_names, open_db, open_local, parse_weights, print_json, print_privacy,
                               task_of, vector_key_names)
import sys

from loradb.errors import Abstained, LoradbError
from loradb.lora.merges import MERGE_PARAMS, MERGES, MergeSpec
from loradb.weighting.registry import DEFAULT_METHOD, FEW_SHOT, METHODS, ZERO_SHOT, method_help


def _represent_flags(p) -> None:
    p.add_argument("data")
    add_text_field_flag(p)
    p.add_argument("--base", required=True, type=base_dir, help=f"base model directory or {BASE_NAMES}")
    p.add_argument("-o", "--output", required=True, help="output .npy (a .npy.json sidecar records its space)")
    add_recipe_flags(p, defaults=True)
    p.add_argument("--batch-size", type=int, default=32)
    add_task_flags(p, "the dataset's task, for the task keys")
    add_dp_flags(p)


@command("represent", "compute z for a dataset under a base model", flags=_represent_flags, db=False)
def cmd_represent(args) -> int:
    from loradb.retrieval.represent import save_representation
    from loradb.retrieval.targets import represent_file

    rep = represent_file(args.base, data_of(args), layer=args.layer, pooling=args.pooling, max_length=args.max_length,
                         batch_size=args.batch_size, dp=dp_config(args), task=task_of(args))
    save_representation(rep, args.output)
    print(f"wrote {args.output} (dim {rep.z.shape[0]}, {rep.n_samples} examples, space {rep.space.id})")
    print_privacy(rep.privacy)
    return 0


def _target_flags(p, *, required_data: bool):
    """The target (its data or z) and how to retrieve and weigh for it: search and compose.
    Returns the group of mutually exclusive targets (compose adds --weights to it)."""
    g = p.add_mutually_exclusive_group(required=required_data)
    g.add_argument("--data", help="target dataset (.jsonl/.csv/.parquet field 'text', or .txt lines); unlabeled")
    g.add_argument("--repr", help="target representation .npy made by `loradb represent`")
    add_text_field_flag(p)
    p.add_argument("-k", type=int, default=5, help="how many adapters to retrieve (default 5)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS), metavar="METHOD",
                   help=f"{method_help(ZERO_SHOT)} (default {DEFAULT_METHOD}); compose also takes "
                        f"{method_help(FEW_SHOT)} with --shots")
    p.add_argument("--temperature", type=float, help="lambda_1 of similarity (default: 1 / median squared distance)")
    p.add_argument("--l1", type=float, help="lambda_2 of sparse (default: 0.1 x median squared distance)")
    p.add_argument("--scale", type=float, help="s of theta0 + s * sum w_i delta_i: every retrieved weight times s "
                   "(default 1; the benchmark's leave-one-out chooses it per library, see docs)")
    p.add_argument("--key", choices=key_names(), help="retrieval key (default: the space's chosen key, else raw-l2; "
                   "`loradb key list` describes them)")
    p.add_argument("--base", type=base_dir, help=f"base model directory or {BASE_NAMES} (default: the database's only base model)")
    p.add_argument("--space", help="representation space id (default: the only one in use)")
    add_task_flags(p, "the target's task, for the task keys")
    add_dp_flags(p)
    return g


def _search_args(args) -> dict:
    return {"data": data_of(args), "repr": args.repr, "base": args.base, "space": args.space, "k": args.k,
            "method": args.method, "temperature": args.temperature, "l1": args.l1, "key": args.key,
            "task": task_of(args), "dp": dp_config(args), "scale": args.scale}


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
    print_privacy(result.privacy)
    print_fit(result.fit)
    if getattr(result, "lineage", None):
        from loradb.db.lineage import describe

        print(("composed: " if out else "a composition of these: ") + describe(result.lineage))
    if out:
        print(f"wrote {out}")


def print_fit(fit: dict | None) -> None:
    """The fit line of a search: does anything in the library fit the target, and so what."""
    if not fit:
        return
    if fit.get("score") is None:
        print(f"fit: not checked ({fit['reason']})")
    else:
        decision = fit["decision"].upper() + (" (overridden by --force)" if fit.get("forced") else "")
        print(f"fit {fit['score']:.2f} (composes at >= 0.50; nearest d2 {fit['d2_nearest']:.4g}, threshold {fit['tau']:.4g} "
              f"in key {fit['key']}): {decision}" + ("" if fit["decision"] == "compose" else f": {fit['reason']}"))


@command("search", "retrieve the nearest adapters and their weights", json_flag=True,
         flags=lambda p: _target_flags(p, required_data=True))
def cmd_search(args) -> int:
    with open_db(args.db) as db:
        result = db.search(**_search_args(args))
    print_json(result.to_dict()) if args.json else _print_result(result)
    return 0  # an abstaining fit is reported, not an error: search only looks


def _compose_flags(p) -> None:
    targets = _target_flags(p, required_data=False)
    targets.add_argument("--weights", nargs="+", metavar="ID=W", help="use these records with these weights (skips retrieval)")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--merged", action="store_true", help="write the base model with the delta merged in")
    p.add_argument("--rank", help="write the optimal rank-R approximation (R, or 'auto' with --max-error)")
    p.add_argument("--max-error", type=float, help="with --rank auto: relative Frobenius error allowed per module")
    p.add_argument("--merge", default="exact", choices=list(MERGES),
                   help="; ".join(f"{m.name}: {m.help}" for m in MERGES.values()) + " (default exact; element-wise "
                   "merges are re-factorised to --rank, default the stacked rank)")
    for param in MERGE_PARAMS.values():  # each merge mode's parameters, as declared in the registry
        users = "/".join(m.name for m in MERGES.values() if param.name in m.params)
        p.add_argument(f"--{param.name}", type=param.kind, default=param.default,
                       help=f"{users}: {param.help} (default {param.default})")
    p.add_argument("--shots", help=f"--method {'|'.join(FEW_SHOT)}: labeled .jsonl with 1-32 target examples per label")
    p.add_argument("--labels", help="with --shots: labels.json mapping each label to its prompt")
    p.add_argument("--force", action="store_true", help="compose even when nothing in the library fits the target "
                   "(the fit decision is to abstain: then, without --force, nothing is written and the exit code is 1)")


@command("compose", "merge retrieved (or given) adapters into one", flags=_compose_flags, json_flag=True)
def cmd_compose(args) -> int:
    rank, max_error = _parse_rank(args)
    spec = MergeSpec(args.merge, rank=rank, max_error=max_error, params={p: getattr(args, p) for p in MERGE_PARAMS})
    shape = {"spec": spec, "merged": args.merged, "shots": args.shots, "labels": args.labels}
    with open_db(args.db) as db:
        if args.weights:  # argparse refuses --weights beside --data or --repr
            result = db.compose(args.out, weights=parse_weights(args.weights), base=args.base, scale=args.scale, **shape)
        else:
            if not (args.data or args.repr):
                raise LoradbError("give one of --data FILE, --repr Z.npy or --weights ID=W ...")
            try:
                result = db.compose(args.out, force=args.force, **shape, **_search_args(args))
            except Abstained as e:  # a decision, not bad input: said plainly, exit 1, nothing written
                if args.json:
                    print_json({"fit": e.fit, "out": None})
                print(f"loradb: {e}", file=sys.stderr)
                return 1
    if args.json:
        print_json({**result.to_dict(), "out": str(args.out)})
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


@command("list", "the retrieval keys, and each space's chosen one", group="key", url=False, json_flag=True)
def cmd_key_list(args) -> int:
    from loradb.retrieval.keys import DATA_FREE_KEYS, KEYS

    with open_local(args.db, "key list") as db:
        spaces = [{"space": sp["id"], "records": sp["records"], "default_key": db.default_key(sp["id"])}
                  for sp in db.spaces()]
    helps = {**{k.name: k.help for k in KEYS.values()}, **DATA_FREE_KEYS}
    if args.json:
        print_json({"keys": helps, "spaces": spaces})
        return 0
    for name, help in helps.items():
        print(f"{name:<16} {help}")
    for sp in spaces:
        print(f"space {sp['space']} ({sp['records']} records): default key {sp['default_key'] or 'raw-l2 (none chosen)'}")
    return 0


def _key_choose_flags(p) -> None:
    p.add_argument("--by", default="family", metavar="META", help="metadata key naming each record's family (default family)")
    p.add_argument("-k", type=int, default=5, help="precision at this many retrieved (default 5)")
    p.add_argument("--space", help="representation space id (default: the only one in use)")


@command("choose", "choose a space's default key by leave-one-out over its records", group="key", url=False,
         json_flag=True, flags=_key_choose_flags)
def cmd_key_choose(args) -> int:
    with open_local(args.db, "key choose") as db:
        chosen = db.choose_key(family_meta=args.by, k=args.k, space=args.space)
    if args.json:
        print_json(chosen)
        return 0
    for name, p in chosen["precision"].items():
        print(f"{name:<16} family precision@{args.k} {p:.3f}" + ("   <- chosen" if name == chosen["key"] else ""))
    print(f"space {chosen['space']}: default retrieval key {chosen['key']} (leave-one-out over {chosen['records']} records)")
    if chosen.get("fit"):
        _print_threshold(chosen["fit"])
    return 0


def _print_threshold(t: dict) -> None:
    how = {"families": f"separates records with a relative from those without (balanced accuracy "
                       f"{t['balanced_accuracy']:.2f})" if t.get("balanced_accuracy") is not None else "families",
           "quantile": "the 95th percentile of the records' nearest-neighbour distances (no families)",
           "no-relatives": "no record has a relative: only a near-duplicate of a record fits"}[t["rule"]]
    print(f"space {t['space']}: fit threshold d2 {t['tau']:.4g} in key {t['key']}: {how}; searches whose nearest record "
          "is farther abstain (fit < 0.50)")


def _key_calibrate_flags(p) -> None:
    p.add_argument("--by", metavar="META", help="metadata key naming each record's family; every record must have it "
                   "(default: family where every record has it, else the nearest-neighbour spread)")
    p.add_argument("--key", choices=vector_key_names(), help="the key whose geometry the threshold is in (default: the "
                   "space's chosen key, else raw-l2; raw-l2's is calibrated too, for searches that fall back to it)")
    p.add_argument("--space", help="representation space id (default: the only one in use)")


@command("calibrate", "calibrate when a space abstains: the fit threshold, by leave-one-out over its records", group="key",
         url=False, json_flag=True, flags=_key_calibrate_flags)
def cmd_key_calibrate(args) -> int:
    with open_local(args.db, "key calibrate") as db:
        threshold = db.calibrate_fit(family_meta=args.by or "family", space=args.space, key=args.key,
                                     families_required=args.by is not None)
    print_json(threshold) if args.json else _print_threshold(threshold)
    return 0
