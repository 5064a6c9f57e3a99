"""Load and faults of `loradb serve` on loopback: one server on the embedded store, or two
servers sharing one PostgreSQL + S3 (SeaweedFS), both started here on 127.0.0.1.

Part 1 (throughput): a database of --records synthetic records (dimension 384, vectors in
clusters, small placeholder adapters); --clients processes search for --seconds each (a
bounded loop). Printed: searches per second and p50/p99 latency, and the same search called
in this process through the library (the baseline). With --backend postgres the same records
are copied into PostgreSQL + S3 and served by one, then two `loradb serve` processes, clients
spread over both; the embedded single server is measured in the same run for comparison.

Part 2 (faults): --clients processes upload distinct adapters while
  embedded: the server is SIGKILLed after a random delay, --kills times (restarted in between);
  postgres: (a) one of the two servers is SIGKILLed and restarted on its port, (b) PostgreSQL
            itself is restarted (down --outage seconds); a reader lists through loradb's client
            (which retries reads with backoff) all along.
Every upload a server acknowledged (201) must be stored exactly once afterwards, `loradb check`
must be clean (no record without its adapter), and clients must be served again after a fault.

Run: python benchmarks/service_load.py [--backend embedded|postgres] [--records 10000] [--clients 4]
     [--seconds 20] [--kills 3] [--out DIR]
Only 127.0.0.1 is contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from load_clients import (DIM, K, clustered, fill, make_adapter, reader_worker, search_worker,  # noqa: E402
                          synthetic_space, upload_worker)
from server_helpers import start_server, stop_server  # noqa: E402

from loradb.db.access import create_token  # noqa: E402
from loradb.db.database import LoraDB  # noqa: E402
from loradb.retrieval.represent import Representation  # noqa: E402
from loradb.service.wire import representation_doc  # noqa: E402

CLUSTERS, ADAPTERS = 50, 8
RESULTS: dict = {}


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000, q))


def spawn(target, *args):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    return ctx.Process(target=target, args=(*args, out)), out


def collect(workers: list, timeout: float) -> list:
    for w, _ in workers:
        w.start()
    results = [out.get(timeout=timeout) for _, out in workers]
    for w, _ in workers:
        w.join()
    return results


# ---- part 1: search throughput --------------------------------------------------------

def http_searches(label: str, urls: list[str], token: str, docs: list[dict], args) -> dict:
    workers = [spawn(search_worker, urls, token, docs, args.seconds, args.max_requests) for _ in range(args.clients)]
    t = time.perf_counter()
    latencies = [x for batch in collect(workers, args.seconds + 120) for x in batch]
    elapsed = time.perf_counter() - t
    row = {"servers": len(urls), "clients": args.clients, "searches": len(latencies),
           "searches_per_s": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile_ms(latencies, 50), 2),
           "p99_ms": round(percentile_ms(latencies, 99), 2)}
    print(f"{label}: {args.clients} concurrent clients, {row['searches']} searches in {elapsed:.1f} s: "
          f"{row['searches_per_s']} searches/s, p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms")
    return row


def serving(db: str | Path, count: int, root: Path, env: dict):
    """`count` servers on db; returns their processes and URLs."""
    procs, urls = [], []
    for i in range(count):
        proc, url = start_server(db, log=root / f"server-{i}.log", env=env)
        procs.append(proc)
        urls.append(url)
    return procs, urls


def throughput(args, root: Path, shared=None) -> None:
    rng = np.random.default_rng(0)
    space = synthetic_space()
    centers = rng.normal(size=(CLUSTERS, DIM))
    db_path = root / "db"
    db = LoraDB.init(db_path)
    adapters = [make_adapter(root / f"adapter-{i}", rng) for i in range(ADAPTERS)]
    t = time.perf_counter()
    fill(db, adapters, space, clustered(rng, args.records, centers), "r")
    print(f"filled {args.records} records in {time.perf_counter() - t:.1f} s")
    token, _ = create_token(db, "bench", "read")
    queries = clustered(rng, 64, centers)
    docs = [representation_doc(Representation(z=q, space=space, base_name="synthetic", n_samples=10)) for q in queries]

    # baseline: the same search through the library, in this process
    local = []
    for i in range(args.baseline_queries):
        rep = Representation(z=queries[i % len(queries)], space=space, base_name="synthetic", n_samples=10)
        t = time.perf_counter()
        db.search(target=rep, k=K, method="similarity", progress=False)
        local.append(time.perf_counter() - t)
    db.close()
    local_p50 = percentile_ms(local, 50)
    RESULTS["in_process"] = {"p50_ms": round(local_p50, 2), "p99_ms": round(percentile_ms(local, 99), 2)}
    print(f"in-process library search ({args.records} records, k={K}): p50 {local_p50:.2f} ms, "
          f"p99 {percentile_ms(local, 99):.2f} ms, {1000 / local_p50:.0f} searches/s on one core")

    rows = RESULTS.setdefault("throughput", {})
    procs, urls = serving(db_path, 1, root, os.environ.copy())
    try:
        rows["embedded, 1 server"] = http_searches("HTTP search, embedded, 1 server", urls, token, docs, args)
    finally:
        for proc in procs:
            stop_server(proc)
    print(f"ratio HTTP p50 / in-process p50: {rows['embedded, 1 server']['p50_ms'] / local_p50:.2f}x")
    if shared is None:
        return
    url, env = shared
    t = time.perf_counter()
    copied = subprocess.run([sys.executable, "-m", "loradb.cli", "copy", str(db_path), url], env=env,
                            capture_output=True, text=True)
    if copied.returncode != 0:
        raise SystemExit(f"copy into PostgreSQL + S3 failed: {copied.stderr}")
    print(f"copied into PostgreSQL + S3 in {time.perf_counter() - t:.1f} s")  # tokens too: the same one works
    for count in (1, 2):
        procs, urls = serving(url, count, root, env)
        try:
            label = f"postgres+s3, {count} server{'s' if count > 1 else ''}"
            rows[label] = http_searches(f"HTTP search, {label}", urls, token, docs, args)
        finally:
            for proc in procs:
                stop_server(proc)
    for label, row in rows.items():
        row["p50_vs_embedded"] = round(row["p50_ms"] / rows["embedded, 1 server"]["p50_ms"], 2)
        row["throughput_vs_embedded"] = round(row["searches_per_s"] / rows["embedded, 1 server"]["searches_per_s"], 2)


# ---- part 2: faults during uploads --------------------------------------------------------

def seeded_database(location: str, root: Path, rng) -> tuple[dict, str, str]:
    """100 seed records in `location`; returns (a representation document, write token, read token)."""
    space = synthetic_space()
    with LoraDB(location) as db:
        fill(db, [make_adapter(root / f"seed-adapter-{i}", rng) for i in range(ADAPTERS)], space,
             rng.normal(size=(100, DIM)).astype(np.float32), "seed")
        writer, _ = create_token(db, "uploader", "write")
        reader, _ = create_token(db, "reader", "read")
    doc = representation_doc(Representation(z=rng.normal(size=DIM).astype(np.float32), space=space, base_name="synthetic",
                                            n_samples=10))
    return doc, writer, reader


def verify(location: str, ack_file: Path, label: str) -> dict:
    """Every acknowledged upload stored once, check clean; orphan blobs (adapters whose upload
    was cut before its row) are counted, then removed by gc."""
    acknowledged = set(ack_file.read_text().split()) if ack_file.exists() else set()
    with LoraDB(location) as db:
        names = [r.name for r in db.list()]
        report = db.check()
        removed = db.gc()
    missing = acknowledged - set(names)
    row = {"acknowledged": len(acknowledged), "stored": len(names) - 100, "missing": len(missing),
           "duplicates": len(names) - len(set(names)), "check_clean": report.clean, "problems": report.problems[:5],
           "orphan_blobs_removed_by_gc": len(removed), "stray_temp_files": len(report.temp_files)}
    print(f"{label}: {row['acknowledged']} uploads acknowledged so far, {row['stored']} stored, missing {row['missing']}, "
          f"duplicates {row['duplicates']}, check {'clean' if report.clean else report.problems[:3]}, "
          f"orphan blobs {row['orphan_blobs_removed_by_gc']} (removed by gc), stray temp files {row['stray_temp_files']}")
    if missing or not report.clean or row["duplicates"]:
        raise SystemExit(f"FAILED ({label}): an acknowledged upload was lost or the database is inconsistent")
    return row


def durability_embedded(args, root: Path) -> None:
    rng = np.random.default_rng(1)
    db_path = root / "kill-db"
    LoraDB.init(db_path).close()
    doc, writer, _ = seeded_database(str(db_path), root, rng)
    ack_file = root / "acknowledged.txt"
    pick = random.Random(7)
    rows = RESULTS.setdefault("faults", [])
    for round_ in range(args.kills):
        proc, url = start_server(db_path, log=root / "kill-server.log")
        workers = [spawn(upload_worker, [url], writer, doc, f"k{round_}-{w}-", args.fault_seconds, str(ack_file))
                   for w in range(args.clients)]
        for w, _ in workers:
            w.start()
        time.sleep(pick.uniform(1.0, 4.0))
        stop_server(proc, signal.SIGKILL)
        uploads = [out.get(timeout=args.fault_seconds + 120) for _, out in workers]
        for w, _ in workers:
            w.join()
        rows.append({"fault": f"SIGKILL of the only server ({round_ + 1})", "uploads": _sum(uploads),
                     **verify(str(db_path), ack_file, f"kill {round_ + 1}")})
    print(f"durability: {args.kills} SIGKILLs during uploads, no acknowledged upload lost, check clean")


def faults_postgres(args, root: Path, pg, url: str, env: dict) -> None:
    """Two servers on one PostgreSQL + S3; uploaders over both, one reader; (a) SIGKILL of one
    server, restarted on its port after --outage s; (b) PostgreSQL restarted, down --outage s."""
    from services import free_port

    rng = np.random.default_rng(1)
    doc, writer, reader = seeded_database(url, root, rng)
    ports = [free_port(), free_port()]
    procs = [start_server(url, log=root / f"fault-server-{i}.log", env=env, port=port)[0] for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    ack_file = root / "acknowledged-pg.txt"
    pick = random.Random(7)
    rows = RESULTS.setdefault("faults", [])
    try:
        for fault in ("SIGKILL of one of two servers", "PostgreSQL restart"):
            uploaders = [spawn(upload_worker, urls, writer, doc, f"{fault[:3]}-{w}-", args.fault_seconds, str(ack_file))
                         for w in range(args.clients)]
            readers = [spawn(reader_worker, urls, reader, args.fault_seconds)]
            for w, _ in uploaders + readers:
                w.start()
            time.sleep(pick.uniform(1.0, 3.0))
            if fault.startswith("SIGKILL"):
                stop_server(procs[0], signal.SIGKILL)
                time.sleep(args.outage)
                procs[0] = start_server(url, log=root / "fault-server-0.log", env=env, port=ports[0])[0]
            else:
                pg.restart(down_for=args.outage)
            uploads = [out.get(timeout=args.fault_seconds + 120) for _, out in uploaders]
            reads = [out.get(timeout=args.fault_seconds + 120) for _, out in readers]
            for w, _ in uploaders + readers:
                w.join()
            row = {"fault": fault, "outage_s": args.outage, "uploads": _sum(uploads), "reads": _sum(reads),
                   **verify(url, ack_file, fault)}
            print(f"  uploads: {row['uploads']['acknowledged']} acknowledged, {row['uploads']['failed']} failed "
                  f"({'; '.join(f'{n}x {e}' for e, n in list(row['uploads']['errors'].items())[:3])}); "
                  f"acknowledged after the last error: {row['uploads']['after_last_error']}")
            print(f"  reads (retried by the client): {row['reads']['reads']} answered, {row['reads']['failed']} failed")
            if not row["uploads"]["after_last_error"]:
                raise SystemExit(f"FAILED ({fault}): no upload succeeded after the fault")
            rows.append(row)
    finally:
        for proc in procs:
            stop_server(proc)


def _sum(stats: list[dict]) -> dict:
    """Worker statistics added up (errors merged by message; after_last_error: the least of them)."""
    total: dict = {}
    for s in stats:
        for key, value in s.items():
            if key == "errors":
                for message, n in value.items():
                    total.setdefault("errors", {})[message] = total.get("errors", {}).get(message, 0) + n
            elif key == "after_last_error":
                total[key] = min(total.get(key, value), value)
            else:
                total[key] = total.get(key, 0) + value
    total.setdefault("errors", {})
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each search client runs")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap on requests per client")
    parser.add_argument("--baseline-queries", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the embedded server")
    parser.add_argument("--fault-seconds", type=float, default=12.0, help="how long uploaders run around each fault")
    parser.add_argument("--outage", type=float, default=3.0, help="seconds a killed server or PostgreSQL stays down")
    parser.add_argument("--out", type=Path, help="write results.json, RUN.md and run.json here")
    args = parser.parse_args()
    started = time.perf_counter()
    RESULTS["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    with tempfile.TemporaryDirectory(prefix="loradb-load-") as tmp:
        root = Path(tmp)
        if args.backend == "embedded":
            throughput(args, root)
            durability_embedded(args, root)
        else:
            from services import Postgres, SeaweedS3

            pg, s3 = Postgres(root / "pg"), None
            try:
                s3 = SeaweedS3(root / "s3")
                env = {**os.environ, **s3.env}
                os.environ.update(s3.env)  # this process opens the database too (seeding, checks)
                urls = [pg.create_database(name) for name in ("load", "faults")]
                for name, url in zip(("load", "faults"), urls):
                    LoraDB.init(url, blobs=f"s3://{name}/adapters").close()
                throughput(args, root, shared=(urls[0], env))
                faults_postgres(args, root, pg, urls[1], env)
            finally:
                pg.stop()
                if s3:
                    s3.stop()
    from runinfo import write_results

    write_results(args.out, RESULTS, started)


if __name__ == "__main__":
    main()
