"""The embedded index's exact kNN: the screened fast path equals brute force, ties by id,
and its vector cache follows writes made through other connections."""

import secrets
import uuid

import numpy as np
import pytest

from loradb.retrieval.represent import Space
from loradb.db.store.protocol import Record
from loradb.db.store.sqlite import SqliteIndex, migrate


def make_index(tmp_path) -> SqliteIndex:
    index = SqliteIndex(tmp_path)
    migrate(index.conn)
    return index


def record(space: Space, z: np.ndarray) -> Record:
    rid = uuid.uuid4().hex
    return Record(id=rid, name=rid, base_name="b", base_fingerprint=space.base_fingerprint, space=space.to_dict(),
                  z=z.astype(np.float32), n_samples=1, rank=1, target_modules=[], adapter_config={}, blob_sha256="0" * 64)


def brute_force(index: SqliteIndex, space_id: str, q: np.ndarray, k: int, metric: str):
    rows = index.conn.execute("SELECT id, z FROM records WHERE space_id = ? ORDER BY id", (space_id,)).fetchall()
    Z = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float64)
    q = q.astype(np.float64)
    if metric == "l2":
        d = ((Z - q) ** 2).sum(1)
    else:
        d = 1 - (Z @ q) / (np.linalg.norm(Z, axis=1) * np.linalg.norm(q))
    order = np.lexsort((np.arange(len(rows)), d))[:k]
    return [(rows[i][0], float(d[i])) for i in order]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_fast_search_equals_brute_force_including_ties(tmp_path, metric):
    rng = np.random.default_rng(3)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, 24)
    index = make_index(tmp_path)
    centers = rng.normal(size=(5, 24)) * 50  # large norms: where |Z|^2 - 2Zq + |q|^2 loses digits
    vectors = centers[rng.integers(0, 5, 400)] + 1e-3 * rng.normal(size=(400, 24))
    vectors[100:110] = vectors[99]  # exact duplicates: ties broken by id
    for z in vectors:
        index.insert(record(space, z))
    for trial in range(40):
        q = vectors[99] if trial == 0 else centers[trial % 5] + 1e-3 * rng.normal(size=24)
        for k in (1, 5, 12, 500):
            got = [(h.record_id, h.distance) for h in index.nearest(space.id, q.astype(np.float32), k, metric)]
            want = brute_force(index, space.id, q.astype(np.float32), k, metric)
            assert [g[0] for g in got] == [w[0] for w in want]
            np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-12, atol=1e-12)


def test_cache_follows_writes_from_another_connection(tmp_path):
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, 4)
    reader, writer = make_index(tmp_path), SqliteIndex(tmp_path)
    first = record(space, np.array([1.0, 0, 0, 0]))
    writer.insert(first)
    assert [h.record_id for h in reader.nearest(space.id, np.zeros(4), 5)] == [first.id]
    closer = record(space, np.array([0.1, 0, 0, 0]))
    writer.insert(closer)
    assert [h.record_id for h in reader.nearest(space.id, np.zeros(4), 5)] == [closer.id, first.id]
    writer.delete(closer.id)
    assert [h.record_id for h in reader.nearest(space.id, np.zeros(4), 5)] == [first.id]


def test_large_spaces_use_the_graph_and_stay_exactly_scored(tmp_path):
    rng = np.random.default_rng(7)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, 32)
    index = SqliteIndex(tmp_path, ann_min_records=500)
    migrate(index.conn)
    centers = rng.normal(size=(20, 32)) * 3
    vectors = centers[rng.integers(0, 20, 3000)] + rng.normal(size=(3000, 32))
    index.insert_many([record(space, z) for z in vectors])
    queries = centers[rng.integers(0, 20, 50)] + rng.normal(size=(50, 32))
    [status] = index.build_index()  # ahead of time, as `loradb index build` does
    assert status["graph"] == "ready" and status["graph_records"] == 3000
    hits_total = 0
    for q in queries:
        got = index.nearest(space.id, q.astype(np.float32), 10)
        want = brute_force(index, space.id, q.astype(np.float32), 10, "l2")
        hits_total += len({g.record_id for g in got} & {w[0] for w in want})
        exact = dict(brute_force(index, space.id, q.astype(np.float32), 3000, "l2"))
        assert all(abs(g.distance - exact[g.record_id]) < 1e-9 for g in got)  # never an approximate distance
    assert (tmp_path / "ann" / f"{space.id}.usearch").is_file()  # the graph was built and saved
    assert hits_total / (10 * len(queries)) >= 0.95  # recall@10

    # rows added after the graph are found at once; deleted ones never come back
    newcomer = record(space, queries[0])
    index.insert(newcomer)
    assert index.nearest(space.id, queries[0].astype(np.float32), 1)[0].record_id == newcomer.id
    index.delete(newcomer.id)
    assert index.nearest(space.id, queries[0].astype(np.float32), 1)[0].record_id != newcomer.id
    # many additions are absorbed into the graph, and search stays exact
    extra = [record(space, z) for z in centers[rng.integers(0, 20, 200)] + rng.normal(size=(200, 32))]
    index.insert_many(extra)
    assert index.index_status()[0]["graph"] == "needs absorb"
    got = index.nearest(space.id, extra[5].z, 1)  # found by the exact scan of rows newer than the graph
    assert got[0].record_id == extra[5].id and got[0].distance == 0.0
    index.build_index(space.id)
    got = index.nearest(space.id, extra[5].z, 1)  # and through the graph once absorbed
    assert got[0].record_id == extra[5].id and got[0].distance == 0.0
    import json

    assert json.loads((tmp_path / "ann" / f"{space.id}.json").read_text())["size"] == 3200
