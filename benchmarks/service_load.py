"""Load test of `loradb serve` on loopback, and SIGKILL of the server during uploads.

Part 1 (throughput): a database of --records synthetic records (dimension 384, vectors in
clusters, small placeholder adapters), served on 127.0.0.1; --clients processes search
for --seconds each (a bounded loop). Prints searches per second and p50/p99 latency, and
the same search called in this process through the library (the baseline), with ratios.

Part 2 (durability): --clients processes upload adapters while the server is SIGKILLed
after a random delay, --kills times (restarting it in between). Every upload the server
acknowledged (201) must be in the database afterwards and `loradb check` must be clean.

Run: python benchmarks/service_load.py [--records 10000] [--clients 4] [--seconds 20] [--kills 3]
Only 127.0.0.1 is contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_helpers import start_server, stop_server  # noqa: E402

from loradb.db.access import create_token  # noqa: E402
from loradb.lora.adapter import LoraAdapter, LoraModule, write_adapter  # noqa: E402
from loradb.db.database import LoraDB  # noqa: E402
from loradb.retrieval.represent import Representation, Space  # noqa: E402
from loradb.service.wire import representation_doc  # noqa: E402

DIM, CLUSTERS, ADAPTERS, K = 384, 50, 8, 5


def synthetic_space() -> Space:
    return Space(base_fingerprint=secrets.token_hex(32), tokenizer=secrets.token_hex(32), layer=6, pooling="mean",
                 max_length=256, dim=DIM)


def clustered(rng, n: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    return (centers[picks] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)


def make_adapters(root: Path, rng) -> list[Path]:
    """Small distinct PEFT adapters (rank 4 on two 64x64 layers) to stand in for real ones."""
    dirs = []
    for i in range(ADAPTERS):
        modules = {f"model.layers.0.self_attn.{m}": LoraModule(A=rng.normal(size=(4, 64)).astype(np.float32),
                                                              B=rng.normal(size=(64, 4)).astype(np.float32), scale=1.0)
                   for m in ("q_proj", "v_proj")}
        dirs.append(write_adapter(root / f"adapter-{i}", LoraAdapter(modules=modules, base_model_name_or_path="synthetic")))
    return dirs


def fill(db: LoraDB, adapters: list[Path], space: Space, vectors: np.ndarray, prefix: str) -> None:
    from loradb.lora.adapter import CONFIG_NAME, WEIGHTS_NAME

    configs = [json.loads((a / CONFIG_NAME).read_text()) for a in adapters]
    for i, z in enumerate(vectors):
        a = i % len(adapters)
        rep = Representation(z=z, space=space, base_name="synthetic", n_samples=100)
        db.add_uploaded(configs[a], adapters[a] / WEIGHTS_NAME, rep, name=f"{prefix}{i}", meta={}, owner="bench")


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000, q))


# ---- part 1: search throughput --------------------------------------------------------

def search_worker(url: str, token: str, docs: list[dict], seconds: float, max_requests: int, out) -> None:
    import httpx

    latencies = []
    with httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        end = time.monotonic() + seconds
        for i in range(max_requests):
            if time.monotonic() > end:
                break
            t = time.perf_counter()
            r = http.post("/search", json={"representation": docs[i % len(docs)], "k": K, "method": "similarity"})
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"search failed: {r.status_code} {r.text}")
    out.put(latencies)


def throughput(args, root: Path) -> None:
    rng = np.random.default_rng(0)
    space = synthetic_space()
    centers = rng.normal(size=(CLUSTERS, DIM))
    db_path = root / "db"
    db = LoraDB.init(db_path)
    adapters = make_adapters(root, rng)
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
    print(f"in-process library search ({args.records} records, k={K}): p50 {local_p50:.2f} ms, "
          f"p99 {percentile_ms(local, 99):.2f} ms, {1000 / local_p50:.0f} searches/s on one core")

    proc, url = start_server(db_path, log=root / "server.log")
    try:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        workers = [ctx.Process(target=search_worker, args=(url, token, docs, args.seconds, args.max_requests, out))
                   for _ in range(args.clients)]
        t = time.perf_counter()
        for w in workers:
            w.start()
        latencies = [x for _ in workers for x in out.get(timeout=args.seconds + 120)]
        elapsed = time.perf_counter() - t
        for w in workers:
            w.join()
    finally:
        stop_server(proc)
    p50, p99 = percentile_ms(latencies, 50), percentile_ms(latencies, 99)
    print(f"HTTP search, {args.clients} concurrent clients, {len(latencies)} searches in {elapsed:.1f} s: "
          f"{len(latencies) / elapsed:.1f} searches/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"ratio HTTP p50 / in-process p50: {p50 / local_p50:.2f}x")


# ---- part 2: SIGKILL during uploads -----------------------------------------------------

def upload_worker(url: str, token: str, adapter: str, doc: dict, prefix: str, count: int, ack_file: str) -> None:
    import httpx

    config = (Path(adapter) / "adapter_config.json").read_bytes()
    weights = (Path(adapter) / "adapter_model.safetensors").read_bytes()
    with open(ack_file, "a") as acks, httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token}"},
                                                   timeout=30) as http:
        for i in range(count):
            try:
                r = http.post("/records", data={"representation": json.dumps(doc), "name": f"{prefix}{i}"},
                              files={"adapter_config": ("c", config), "adapter_model": ("m", weights)})
            except httpx.HTTPError:
                return  # the server is gone: whatever was not acknowledged may or may not be there
            if r.status_code == 201:
                acks.write(r.json()["name"] + "\n")
                acks.flush()


def durability(args, root: Path) -> None:
    rng = np.random.default_rng(1)
    space = synthetic_space()
    db_path = root / "kill-db"
    db = LoraDB.init(db_path)
    adapters = make_adapters(root / "kill-adapters", rng)
    fill(db, adapters, space, rng.normal(size=(100, DIM)).astype(np.float32), "seed")
    token, _ = create_token(db, "uploader", "write")
    db.close()
    doc = representation_doc(Representation(z=rng.normal(size=DIM).astype(np.float32), space=space, base_name="synthetic",
                                            n_samples=10))
    ack_file = root / "acknowledged.txt"
    pick = random.Random(7)
    ctx = mp.get_context("spawn")
    for round_ in range(args.kills):
        proc, url = start_server(db_path, log=root / "kill-server.log")
        workers = [ctx.Process(target=upload_worker, args=(url, token, str(adapters[w % ADAPTERS]), doc, f"k{round_}-{w}-",
                                                           args.max_requests, str(ack_file)))
                   for w in range(args.clients)]
        for w in workers:
            w.start()
        time.sleep(pick.uniform(1.0, 4.0))
        stop_server(proc, signal.SIGKILL)
        for w in workers:
            w.join(timeout=120)
        acknowledged = set(ack_file.read_text().split())
        with LoraDB(db_path) as db:
            names = [r.name for r in db.list()]
            report = db.check()
        missing = acknowledged - set(names)
        print(f"kill {round_ + 1}: {len(acknowledged)} uploads acknowledged so far, {len(names) - 100} stored, "
              f"missing {len(missing)}, duplicates {len(names) - len(set(names))}, check "
              f"{'clean' if report.clean else report.problems}, orphan blobs {len(report.orphans)}, "
              f"stray temp files {len(report.temp_files)}")
        if missing or not report.clean or len(names) != len(set(names)):
            raise SystemExit("FAILED: an acknowledged upload was lost or the database is inconsistent")
    print(f"durability: {args.kills} SIGKILLs during uploads, no acknowledged upload lost, check clean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each search client runs")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap on requests per client")
    parser.add_argument("--baseline-queries", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loradb-load-") as tmp:
        throughput(args, Path(tmp))
        durability(args, Path(tmp))


if __name__ == "__main__":
    main()
