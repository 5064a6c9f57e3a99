"""The client processes of benchmarks/service_load.py: searchers and uploaders that talk HTTP
to one or several `loradb serve` processes, and the synthetic data they send."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

from loradb.db.database import LoraDB
from loradb.lora.adapter import CONFIG_NAME, WEIGHTS_NAME, LoraAdapter, LoraModule, write_adapter
from loradb.retrieval.represent import Representation, Space

DIM, K = 384, 5


def synthetic_space() -> Space:
    return Space(base_fingerprint=secrets.token_hex(32), tokenizer=secrets.token_hex(32), layer=6, pooling="mean",
                 max_length=256, dim=DIM)


def clustered(rng, n: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    return (centers[picks] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)


def make_adapter(path: Path, rng) -> Path:
    """A small PEFT adapter (rank 4 on two 64x64 layers), distinct for every rng draw."""
    modules = {f"model.layers.0.self_attn.{m}": LoraModule(A=rng.normal(size=(4, 64)).astype(np.float32),
                                                          B=rng.normal(size=(64, 4)).astype(np.float32), scale=1.0)
               for m in ("q_proj", "v_proj")}
    return write_adapter(path, LoraAdapter(modules=modules, base_model_name_or_path="synthetic"))


def fill(db: LoraDB, adapters: list[Path], space: Space, vectors: np.ndarray, prefix: str) -> None:
    configs = [json.loads((a / CONFIG_NAME).read_text()) for a in adapters]
    for i, z in enumerate(vectors):
        a = i % len(adapters)
        rep = Representation(z=z, space=space, base_name="synthetic", n_samples=100)
        db.add_uploaded(configs[a], adapters[a] / WEIGHTS_NAME, rep, name=f"{prefix}{i}", meta={}, owner="bench")


def search_worker(urls: list[str], token: str, docs: list[dict], seconds: float, max_requests: int, out) -> None:
    """Searches for `seconds`, request i to urls[i % len(urls)]; puts its latencies on `out`."""
    import httpx

    latencies = []
    clients = [httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) for url in urls]
    end = time.monotonic() + seconds
    for i in range(max_requests):
        if time.monotonic() > end:
            break
        t = time.perf_counter()
        r = clients[i % len(clients)].post("/search", json={"representation": docs[i % len(docs)], "k": K,
                                                            "method": "similarity"})
        latencies.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"search failed: {r.status_code} {r.text}")
    for client in clients:
        client.close()
    out.put(latencies)


def upload_worker(urls: list[str], token: str, doc: dict, prefix: str, seconds: float, ack_file: str, out) -> None:
    """Uploads a new, distinct adapter after another for `seconds`, alternating over urls.
    A 201 is written to ack_file at once (acknowledged: it must survive any fault). A failed
    upload is not resent: its error is counted, the worker backs off and goes on with the next.
    Puts {"acknowledged", "failed", "errors": {first line: count}, "after_last_error"} on `out`."""
    import httpx

    rng = np.random.default_rng(abs(hash(prefix)) % (1 << 32))
    clients = [httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30) for url in urls]
    stats = {"acknowledged": 0, "failed": 0, "errors": {}, "after_last_error": 0}
    backoff, end = 0.1, time.monotonic() + seconds
    with open(ack_file, "a") as acks, tempfile.TemporaryDirectory() as tmp:
        i = 0
        while time.monotonic() < end:
            adapter = make_adapter(Path(tmp) / f"a{i}", rng)
            files = {"adapter_config": ("c", (adapter / CONFIG_NAME).read_bytes()),
                     "adapter_model": ("m", (adapter / WEIGHTS_NAME).read_bytes())}
            try:
                r = clients[i % len(clients)].post("/records", data={"representation": json.dumps(doc), "name": f"{prefix}{i}"},
                                                   files=files)
                error = None if r.status_code == 201 else f"HTTP {r.status_code}: {r.json().get('error', '')[:120]}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {str(e)[:120]}"
            if error is None:
                acks.write(f"{prefix}{i}\n")
                acks.flush()
                stats["acknowledged"] += 1
                stats["after_last_error"] += 1
                backoff = 0.1
            else:
                stats["failed"] += 1
                stats["after_last_error"] = 0
                stats["errors"][error] = stats["errors"].get(error, 0) + 1
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            i += 1
    for client in clients:
        client.close()
    out.put(stats)


def reader_worker(urls: list[str], token: str, seconds: float, out) -> None:
    """Lists records through loradb's own client (which retries reads with backoff) for
    `seconds`, alternating over urls; puts {"reads", "failed", "errors"} on `out`."""
    from loradb.errors import LoradbError
    from loradb.service.client import RemoteDB

    remotes = [RemoteDB(url, token=token) for url in urls]
    stats: dict = {"reads": 0, "failed": 0, "errors": {}}
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try:
            remotes[i % len(remotes)].spaces()
            stats["reads"] += 1
        except LoradbError as e:  # only once its retries are spent
            stats["failed"] += 1
            stats["errors"][str(e)[:160]] = stats["errors"].get(str(e)[:160], 0) + 1
        i += 1
        time.sleep(0.05)
    for remote in remotes:
        remote.close()
    out.put(stats)
