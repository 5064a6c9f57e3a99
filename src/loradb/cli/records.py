"""Commands that keep the database: init, add, list, show, remove, export, check, gc, copy."""

from __future__ import annotations

import json

from loradb.cli.common import (BASE_NAMES, add_dp_flags, add_recipe_flags, add_task_flags, add_text_field_flag, base_dir,
                               command, data_of, dp_config, local_only, open_db, open_local, parse_meta, print_json, print_privacy, task_of)


def _init_flags(p) -> None:
    p.add_argument("--blobs", metavar="s3://BUCKET/PREFIX", help="keep adapter files in S3-compatible object storage (required "
                   "with PostgreSQL; endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")


@command("init", "create an empty database (a directory, or a postgresql:// URL)", flags=_init_flags, url=False)
def cmd_init(args) -> int:
    from loradb.db.database import LoraDB

    local_only(args.db, "init")
    LoraDB.init(args.db, blobs=args.blobs).close()
    print(f"created an empty loradb database at {args.db}")
    return 0


def _add_flags(p) -> None:
    p.add_argument("adapter", help="PEFT LoRA adapter directory")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="the adapter's training texts (z computed here)")
    g.add_argument("--repr", help="z as a .npy vector")
    add_text_field_flag(p)
    p.add_argument("--name", help="unique record name (default: the directory name)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="free metadata (repeatable)")
    p.add_argument("--base", type=base_dir, help=f"base model directory or {BASE_NAMES} (default: the adapter's base_model_name_or_path)")
    add_recipe_flags(p, defaults=False)
    add_task_flags(p, "the adapter's task, stored as its task key (default: what `loradb train` recorded beside it)")
    add_dp_flags(p)


@command("add", "store an adapter with the representation of its training data", flags=_add_flags, json_flag=True)
def cmd_add(args) -> int:
    recipe = {k: v for k, v in (("layer", args.layer), ("pooling", args.pooling), ("max_length", args.max_length)) if v is not None}
    with open_db(args.db) as db:
        record = db.add(args.adapter, data=data_of(args), repr=args.repr, name=args.name, meta=parse_meta(args.meta),
                        base=args.base, recipe=recipe or None, dp=dp_config(args), task=task_of(args))
    if args.json:
        print_json(record.summary())
    else:
        print(f"added {record.name} as {record.id} (rank {record.rank}, space {record.space_id})")
        print_privacy(record.privacy)
    return 0


def _import_flags(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="PEFT adapter folders, folders of them, or hub-cache trees "
                   "(models--org--name/snapshots/REV/)")
    p.add_argument("--base", type=base_dir, help=f"the base model every adapter must fit: a directory or {BASE_NAMES} "
                   "(default: each adapter's stated base, which must be on this machine)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata for every record added (repeatable; wins over the model cards')")


@command("import", "add the adapters under folders or a hub cache, without their data (one line per adapter skipped)",
         flags=_import_flags, url=False, json_flag=True)
def cmd_import(args) -> int:
    import sys

    from tqdm.auto import tqdm

    def skipped(path, reason) -> None:
        if not args.json:
            tqdm.write(f"skipped {path}: {reason}", file=sys.stderr)  # above the progress bar, not through it

    with open_local(args.db, "import") as db:
        report = db.import_adapters(args.paths, base=args.base, meta=parse_meta(args.meta), on_skip=skipped)
    if args.json:
        print_json({"added": [r.summary() for r in report.added],
                    "skipped": [{"path": str(p), "reason": why} for p, why in report.skipped]})
        return 0
    for r in report.added:
        print(f"added {r.name} as {r.id} (rank {r.rank}, {r.meta.get('source', '')}; no data summary: found by name)")
    print(f"imported {len(report.added)} adapters, skipped {len(report.skipped)}")
    return 0


def _list_flags(p) -> None:
    p.add_argument("--base", help="records of this base model (its name or fingerprint)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="records with this metadata (repeatable: all)")
    p.add_argument("--fits", metavar="MODEL", help="records made for exactly this model: a folder, packaged name or cached hub id")


@command("list", "list records (all, or those matching --base, --meta, --fits)", flags=_list_flags, json_flag=True)
def cmd_list(args) -> int:
    filters = {"base": args.base, "meta": parse_meta(args.meta) or None,
               "fits": base_dir(args.fits) if args.fits is not None else None}
    with open_db(args.db) as db:
        records = db.list(**filters)  # no filter given: every record
    if args.json:
        print_json([r.summary() for r in records])
        return 0
    if not records:
        print("no records")
    for r in records:
        where = f"space {r.space_id}" if r.has_data else "no data summary"
        print(f"{r.id[:12]}  {r.name:<24} rank {r.rank:<4} n={r.n_samples if r.n_samples is not None else '?':<7} "
              f"{where}  {r.created[:19]}")
    return 0


@command("show", "show one record", flags=lambda p: p.add_argument("id", help="record id, unique id prefix, or name"),
         json_flag=True)
def cmd_show(args) -> int:
    with open_db(args.db) as db:
        details = db.get(args.id).details()
    if args.json:
        print_json(details)
    else:
        for key, value in details.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
        from loradb.db.lineage import record_line

        line = record_line(details.get("meta"))
        if line:
            print(f"lineage: {line}")
    return 0


@command("remove", "delete a record (and its blob if unshared)",
         flags=lambda p: p.add_argument("id", help="record id, unique id prefix, or name"))
def cmd_remove(args) -> int:
    with open_db(args.db) as db:
        record = db.remove(args.id)
    print(f"removed {record.name} ({record.id})")
    return 0


def _export_flags(p) -> None:
    p.add_argument("id", help="record id, unique id prefix, or name")
    p.add_argument("--out", required=True, help="the folder to write: the PEFT adapter, and loradb_record.json (the "
                   "record's name, base and metadata, which add and import read back, so its licence and source stay)")


@command("export", "write a stored adapter back out as a PEFT directory", flags=_export_flags)
def cmd_export(args) -> int:
    with open_db(args.db) as db:
        out = db.export(args.id, args.out)
    print(f"wrote {out}")
    return 0


@command("check", "verify every row and blob; report orphans (exit 1 if any problem)", json_flag=True)
def cmd_check(args) -> int:
    with open_db(args.db) as db:
        report = db.check()
    if args.json:
        print_json(report.to_dict())
    else:
        for p in report.problems:
            print(f"problem: {p}")
        for sha in report.orphans:
            print(f"orphan blob: {sha} (`loradb gc` removes it)")
        for t in report.temp_files:
            print(f"stray file: {t} (`loradb gc` removes it)")
        print(f"{report.records} records; " + ("clean" if report.clean else f"{len(report.problems)} problems"))
    return 0 if report.clean else 1


@command("gc", "remove orphan blobs and stray files (temp files, graphs of removed spaces)", url=False)
def cmd_gc(args) -> int:
    with open_db(args.db) as db:
        removed = db.gc()
    print(f"removed {len(removed)} orphan files")
    return 0


@command("copy", "copy every record, adapter and token into another (initialised) database", url=False,
         flags=lambda p: p.add_argument("target", help="the destination: a database directory or postgresql:// URL made "
                                        "by `loradb init`"))
def cmd_copy(args) -> int:
    from loradb.db.database import LoraDB

    local_only(args.db, "copy")
    local_only(args.target, "copy")
    with LoraDB(args.db) as source, LoraDB(args.target) as target:
        n = source.copy_into(target)
    print(f"copied {n} records with their adapters and tokens from {args.db} to {args.target}")
    return 0


def _print_index_status(rows: list[dict]) -> None:
    if not rows:
        print("no spaces yet")
    for row in rows:
        size = f", {row['bytes'] / 2**20:.1f} MiB" if row.get("bytes") else ""
        pending = f", {row['pending_rows']} newer rows scanned exactly" if row.get("pending_rows") else ""
        builder = f" (process {row['builder_pid']})" if row.get("builder_pid") else ""
        key = f" under {row['key']}" if row.get("key", "raw-l2") != "raw-l2" else ""
        print(f"space {row['space']}{key}: {row['records']} records, searched {row['search']}; "
              f"index {row['graph']}{builder}{size}{pending}"
              + (f"; last background build {row['last_build']}" if row.get("last_build") else ""))


@command("status", "each space's search path and its approximate index's state", group="index", url=False,
         json_flag=True)
def cmd_index_status(args) -> int:
    with open_local(args.db, "index status") as db:
        rows = db.index_status()
    if args.json:
        print_json({"spaces": rows})
    else:
        _print_index_status(rows)
    return 0


def _index_build_flags(p) -> None:
    p.add_argument("--space", help="representation space id (default: every space large enough)")
    p.add_argument("--key", action="append", dest="keys", metavar="KEY",
                   help="also build the index under this retrieval key (repeatable; default: each space's chosen key)")


@command("build", "build the approximate indexes now (else the first search starts each in the background)",
         group="index", url=False, json_flag=True, flags=_index_build_flags)
def cmd_index_build(args) -> int:
    import time

    started = time.perf_counter()
    with open_local(args.db, "index build") as db:
        rows = db.build_index(args.space, keys=tuple(args.keys) if args.keys else None)
    if args.json:
        print_json({"spaces": rows, "seconds": round(time.perf_counter() - started, 3)})
    else:
        _print_index_status(rows)
        print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
