"""One contract for every storage backend: the embedded store (SQLite + local blobs) and
PostgreSQL + pgvector with S3 blobs (real servers on 127.0.0.1, started here). The same
commands, the same results, bad input changing nothing, concurrent writers and SIGKILL."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from models import make_adapter
from test_cli import TEXTS, run, write_jsonl


def embedded_db(tmp_path) -> str:
    db = str(tmp_path / "db")
    assert run("init", db)[0] == 0
    return db


def postgres_db(servers, monkeypatch) -> str:
    """A new PostgreSQL database initialised by loradb, its blobs in a new bucket; its URL."""
    pg, s3 = servers
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    name = "t" + uuid.uuid4().hex[:12]
    url = pg.create_database(name)
    code, _, err = run("init", url, "--blobs", f"s3://{name}/adapters")
    assert code == 0, err
    return url


@pytest.fixture
def adapters(bert, tmp_path):
    dirs = {}
    for i, domain in enumerate(TEXTS):
        dirs[domain] = make_adapter(bert, tmp_path / f"ad-{domain}", seed=i, r=2 + 2 * i)
        write_jsonl(tmp_path / f"{domain}.jsonl", TEXTS[domain])
    return dirs


def state(location) -> dict:
    """The database's logical content, backend-independent: every record's details and the blobs."""
    from loradb.db.database import LoraDB

    with LoraDB(location) as db:
        return {"records": sorted(json.dumps(r.details(), sort_keys=True) for r in db.list()),
                "blobs": sorted(db.blobs.list()), "tokens": db.index.tokens()}


def fill(location, adapters, tmp_path):
    for domain, adapter in adapters.items():
        code, _, err = run("add", location, adapter, "--data", tmp_path / f"{domain}.jsonl", "--name", domain)
        assert code == 0, err


def test_round_trip(location, adapters, tmp_path):
    fill(location, adapters, tmp_path)
    listed = json.loads(run("list", location, "--json")[1])
    assert [r["name"] for r in listed] == ["cooking", "finance", "sports"]
    target = write_jsonl(tmp_path / "target.jsonl", ["fry the onion and garlic", "bake bread with salt and pepper"])
    found = json.loads(run("search", location, "--data", target, "-k", 2, "--method", "linear", "--json")[1])
    assert found["results"][0]["name"] == "cooking" and len(found["results"]) == 2
    code, _, err = run("compose", location, "--data", target, "-k", 3, "--out", tmp_path / "out")
    assert code == 0, err
    assert run("export", location, "sports", "--out", tmp_path / "copy")[0] == 0
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "copy" / "adapter_model.safetensors") == digest(adapters["sports"] / "adapter_model.safetensors")
    assert run("remove", location, "sports")[0] == 0
    assert [r["name"] for r in json.loads(run("list", location, "--json")[1])] == ["cooking", "finance"]
    report = json.loads(run("check", location, "--json")[1])
    assert report["clean"] and report["records"] == 2 and report["orphans"] == []
    code, out, _ = run("token", "create", location, "--name", "ops", "--scope", "admin")
    assert code == 0 and out.startswith("ldb_")
    [space] = json.loads(run("index", "build", location, "--json")[1])["spaces"]
    assert space["records"] == 2 and space["search"] == "exact"  # far below either backend's approximate-search size
    assert space["graph"] == ("ready" if location.startswith("postgresql") else "absent")  # HNSW made with the space
    assert json.loads(run("index", "status", location, "--json")[1])["spaces"] == [space]


def test_the_s3_read_cache_stays_within_its_bound(servers, adapters, tmp_path, monkeypatch):
    """LORADB_BLOB_CACHE_MB bounds the local copies of S3 blobs: with room for about one
    adapter, reading a second evicts the first, and every read is still served whole."""
    from loradb.io.files import cache_dir

    location = postgres_db(servers, monkeypatch)
    fill(location, adapters, tmp_path)
    sizes = [(adapters[d] / "adapter_model.safetensors").stat().st_size for d in ("cooking", "finance")]
    monkeypatch.setenv("LORADB_BLOB_CACHE_MB", str(max(sizes) * 1.1 / 2**20))
    shutil.rmtree(cache_dir() / "blobs", ignore_errors=True)
    for domain in ("cooking", "finance"):
        assert run("export", location, domain, "--out", tmp_path / f"out-{domain}")[0] == 0
        cached = [p for p in (cache_dir() / "blobs").iterdir() if not p.name.startswith(".")]
        assert len(cached) == 1 and sum(p.stat().st_size for p in cached) <= max(sizes) * 1.1
        assert (tmp_path / f"out-{domain}" / "adapter_model.safetensors").read_bytes() == \
            (adapters[domain] / "adapter_model.safetensors").read_bytes()


def test_backends_give_identical_results(servers, adapters, tmp_path, monkeypatch):
    """The same adapters and queries on both backends: the same hits, weights and merged factors."""
    embedded, remote = embedded_db(tmp_path), postgres_db(servers, monkeypatch)
    target = write_jsonl(tmp_path / "target.jsonl", ["the bank raised rates", "the team won"])
    docs = []
    for location in (embedded, remote):
        fill(location, adapters, tmp_path)
        docs.append(json.loads(run("search", location, "--data", target, "-k", 3, "--method", "sparse", "--json")[1]))
        code, _, err = run("compose", location, "--data", target, "-k", 3, "--method", "linear",
                           "--out", tmp_path / f"out-{len(docs)}")
        assert code == 0, err
    assert [(r["name"], r["weight"], r["distance"]) for r in docs[0]["results"]] == \
           [(r["name"], r["weight"], r["distance"]) for r in docs[1]["results"]]
    from safetensors.numpy import load_file

    a, b = (load_file(tmp_path / f"out-{i}" / "adapter_model.safetensors") for i in (1, 2))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # (metadata key order is not stable)
    keyed = []  # records' variance and task keys round-trip through both stores: same key search, same answer
    # (a new dataset for the new record: two records with one z would tie, and ties go by random id)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", TEXTS["sports"] + TEXTS["finance"][:2])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"money": "about money", "games": "about games"}))
    for location in (embedded, remote):
        code, _, err = run("add", location, adapters["sports"], "--data", mixed, "--name", "sports-task",
                           "--prompts", labels, "--meta", "family=games")
        assert code == 0, err
        keyed.append(json.loads(run("search", location, "--data", target, "-k", 4, "--key", "frechet", "--json")[1]))
        assert json.loads(run("show", location, "sports-task", "--json")[1])["task"] == {"prompts": ["about games", "about money"]}
    assert [(r["name"], r["distance"]) for r in keyed[0]["results"]] == [(r["name"], r["distance"]) for r in keyed[1]["results"]]


def test_bad_input_changes_nothing(location, adapters, tmp_path, bert_other_weights):
    fill(location, adapters, tmp_path)
    before = state(location)
    bad = [("add", location, adapters["cooking"], "--data", tmp_path / "cooking.jsonl", "--name", "cooking"),  # name taken
           ("add", location, adapters["cooking"], "--data", tmp_path / "cooking.jsonl", "--name", "a/b"),
           ("add", location, adapters["cooking"], "--data", tmp_path / "missing.jsonl", "--name", "new"),
           ("add", location, adapters["cooking"], "--data", tmp_path / "cooking.jsonl", "--base", bert_other_weights),
           ("remove", location, "no-such-record"),
           ("search", location, "--data", tmp_path / "cooking.jsonl", "-k", 0),
           ("compose", location, "--weights", "cooking=nan", "--out", tmp_path / "x")]
    for argv in bad:
        code, _, err = run(*argv)
        assert code == 2 and err.count("\n") == 1, (argv, err)
    assert state(location) == before


def _cli(*argv, env):
    return subprocess.Popen([sys.executable, "-m", "loradb.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_concurrent_adds_keep_every_acknowledged_record(location, adapters, tmp_path):
    env = os.environ.copy()
    jobs = {}
    for i in range(6):
        domain = list(adapters)[i % 3]
        name = "same" if i >= 4 else f"r{i}"  # two processes race for one name
        jobs[(i, name)] = _cli("add", location, adapters[domain], "--data", tmp_path / f"{domain}.jsonl", "--name", name, env=env)
    acknowledged = [name for (i, name), p in jobs.items() if p.wait(300) == 0]
    for p in jobs.values():
        p.communicate()
    names = [r["name"] for r in json.loads(run("list", location, "--json")[1])]
    assert sorted(names) == sorted(acknowledged) and len(set(names)) == len(names)
    assert acknowledged.count("same") == 1  # exactly one of the racing pair won
    assert json.loads(run("check", location, "--json")[1])["clean"]


def test_sigkill_during_add_leaves_nothing_half_written(location, adapters, tmp_path, bert):
    from loradb.retrieval.represent import represent_texts, save_representation

    save_representation(represent_texts(bert, TEXTS["sports"], progress=False), tmp_path / "z.npy")
    env = os.environ.copy()
    rng = random.Random(5)

    def add(name):
        return _cli("add", location, adapters["sports"], "--repr", tmp_path / "z.npy", "--base", bert, "--name", name, env=env)

    start = time.perf_counter()
    assert add("warmup").wait() == 0
    duration = time.perf_counter() - start
    acknowledged, killed = {"warmup"}, 0
    for i in range(30):  # at least 12 rounds; more if too few of them caught an add still running
        if i >= 12 and killed >= 3:
            break
        proc = add(f"k{i}")
        time.sleep(rng.uniform(0.3 * duration, 1.0 * duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate()
        if proc.returncode == 0:
            acknowledged.add(f"k{i}")
        report = json.loads(run("check", location, "--json")[1])
        assert report["clean"], report["problems"]
        names = {r["name"] for r in json.loads(run("list", location, "--json")[1])}
        assert acknowledged <= names
    assert killed >= 3  # the test really interrupted adds
    assert run("gc", location)[0] == 0
    assert json.loads(run("check", location, "--json")[1])["orphans"] == []


def test_copy_from_embedded_to_postgres_and_s3(servers, adapters, tmp_path, monkeypatch):
    """`loradb copy DIR URL` moves everything: same records, same answers, tokens still valid."""
    embedded = embedded_db(tmp_path)
    fill(embedded, adapters, tmp_path)
    secret = run("token", "create", embedded, "--name", "site-a", "--scope", "write")[1].strip()
    url = postgres_db(servers, monkeypatch)
    code, out, err = run("copy", embedded, url)
    assert code == 0 and "copied 3 records" in out, err
    assert state(embedded)["records"] == state(url)["records"]
    target = write_jsonl(tmp_path / "target.jsonl", ["the bank raised rates"])
    results = [json.loads(run("search", loc, "--data", target, "-k", 3, "--json")[1])["results"] for loc in (embedded, url)]
    assert results[0] == results[1]
    from loradb.db.access import authenticate
    from loradb.db.database import LoraDB

    with LoraDB(url) as db:
        assert authenticate(db, secret).name == "site-a"
    assert json.loads(run("check", url, "--json")[1])["clean"]
    before = state(url)
    code, _, err = run("copy", embedded, url)  # again: every name is taken, nothing written
    assert code == 2 and "already holds records" in err and state(url) == before


def test_postgres_large_spaces_are_searched_through_hnsw(servers, monkeypatch):
    """Past the exact-search size, the plan walks the HNSW index (EXPLAIN says so, even on a
    table this small, where the planner alone would sort), filtered to the space, with recall
    against brute force measured; candidates are re-ranked exactly."""
    import secrets

    import numpy as np

    from loradb.retrieval.represent import Space
    from loradb.db.store import postgres
    from loradb.db.store.postgres import PgIndex
    from loradb.db.store.protocol import Record

    pg, _ = servers
    url = pg.create_database("t" + uuid.uuid4().hex[:12])
    PgIndex.create(url, "s3://unused/x")
    index = PgIndex(url)
    rng = np.random.default_rng(2)
    space, other = (Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, 24) for _ in range(2))
    vectors = rng.normal(size=(600, 24)).astype(np.float32)
    rows = [Record(id=f"{i:04d}", name=f"r{i}", base_name="b", base_fingerprint=(space if i % 3 else other).base_fingerprint,
                   space=(space if i % 3 else other).to_dict(), z=z, n_samples=1, rank=1, target_modules=[],
                   adapter_config={}, blob_sha256="0" * 64) for i, z in enumerate(vectors)]
    index.insert_many(rows)
    monkeypatch.setattr(postgres, "EXACT_BELOW", 100)  # 400 records in `space`: the HNSW path
    mine = [(r.id, r.z) for r in rows if r.space_id == space.id]
    plan = index.explain_nearest(space.id, vectors[0], 10)
    assert "Index Scan using records_hnsw_24" in plan and "Seq Scan" not in plan, plan
    assert "Sort" not in plan, plan  # the walk returns its neighbours in order: nothing is sorted
    found = 0
    for q in rng.normal(size=(40, 24)).astype(np.float32):
        d = np.array([((z.astype(np.float64) - q) ** 2).sum() for _, z in mine])
        want = [mine[i][0] for i in np.lexsort(([m[0] for m in mine], d))[:10]]
        got = index.nearest(space.id, q, 10)
        assert {h.record_id for h in got} <= {i for i, _ in mine}  # filtered to the space
        assert [h.distance for h in got] == sorted(h.distance for h in got)  # exactly re-ranked
        found += len({h.record_id for h in got} & set(want))
    recall = found / (40 * 10)
    assert recall >= 0.95, recall  # the nearest 40 of the default walk, from a 400-vector space
    # a large k: ef_search is capped at pgvector's maximum (1000) and the scan goes on past it
    wide = index.nearest(space.id, vectors[0], 300)
    assert len(wide) == 300 and len({h.record_id for h in wide}) == 300
    assert {h.record_id for h in wide} <= {i for i, _ in mine}
    # a walk that gives up before k rows of the space (as at hnsw.max_scan_tuples): exact instead
    settings = postgres._hnsw_settings
    monkeypatch.setattr(postgres, "_hnsw_settings", lambda k: (settings(k)[0] + ", set_config('hnsw.iterative_scan', "
                                                               "'off', true), set_config('hnsw.ef_search', '1', true)",
                                                               settings(k)[1]))
    d = np.array([((z.astype(np.float64) - vectors[0]) ** 2).sum() for _, z in mine])
    exact = [mine[i][0] for i in np.lexsort(([m[0] for m in mine], d))[:20]]
    assert [h.record_id for h in index.nearest(space.id, vectors[0], 20)] == exact
    index.close()


def test_check_reads_the_blob_store_itself_not_a_cached_copy(location, adapters, tmp_path):
    """A blob deleted or altered in the store is reported by `check`, naming the record and
    blob, even when this machine holds a good cached copy (S3's read cache)."""
    from loradb.db.database import LoraDB

    fill(location, adapters, tmp_path)
    assert run("export", location, "finance", "--out", tmp_path / "warm")[0] == 0  # caches the S3 object locally
    assert run("export", location, "sports", "--out", tmp_path / "warm2")[0] == 0
    with LoraDB(location) as db:
        records = {r.name: r for r in db.list()}
        gone, altered = records["finance"].blob_sha256, records["sports"].blob_sha256
        if hasattr(db.blobs, "client"):
            db.blobs.client.delete_object(Bucket=db.blobs.bucket, Key=db.blobs._key(gone))
            db.blobs.client.put_object(Bucket=db.blobs.bucket, Key=db.blobs._key(altered), Body=b"not the adapter")
        else:
            db.blobs.path(gone).unlink()
            db.blobs.path(altered).write_bytes(b"not the adapter")
    code, out, _ = run("check", location, "--json")
    report = json.loads(out)
    assert code == 1 and not report["clean"]
    problems = "\n".join(report["problems"])
    assert f"record finance ({records['finance'].id[:12]}): blob {gone[:12]} is missing" in problems, problems
    assert f"record sports ({records['sports'].id[:12]}): blob {altered[:12]}" in problems and "does not match" in problems
    assert "cooking" not in problems
