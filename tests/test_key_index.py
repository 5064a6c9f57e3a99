"""Every retrieval key is searched through an index in a large space (db/keysearch.py,
graphs.py for the embedded store, postgres.py for PostgreSQL): the indexed answer equals the
exact scan's (recall), ranks the planted nearest family first, keeps working past writes, and
a record lacking what the key reads is counted, never silently mixed in."""

import secrets
import tracemalloc
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

from loradb.db import keysearch
from loradb.db.store import ann, graphs, pgkeys, pgtypes, postgres
from loradb.db.store import sqlite as sqlite_store
from loradb.db.store.postgres import PgIndex
from loradb.db.store.protocol import Record
from loradb.db.store.sqlite import SqliteIndex, migrate
from loradb.errors import LoradbError
from loradb.retrieval.keys import KEYS, RAW_L2, KeyInputs, key_distances
from loradb.retrieval.represent import Space

THRESHOLD = 500  # records from which a space is searched through its graphs
KEY_NAMES = [k for k in KEYS if k != RAW_L2]


def keyed_record(space: Space, z, var=None, task_z=None, name=None) -> Record:
    rid = uuid.uuid4().hex
    return Record(id=rid, name=name or rid, base_name="b", base_fingerprint=space.base_fingerprint, space=space.to_dict(),
                  z=np.asarray(z, np.float32), n_samples=1, rank=1, target_modules=[], adapter_config={}, blob_sha256="0" * 64,
                  var=None if var is None else np.asarray(var, np.float32),
                  task_z=None if task_z is None else np.asarray(task_z, np.float32))


class Families:
    """n records of 40 families: each family's z, spread and task embedding about its centre."""

    def __init__(self, dim=16, seed=5):
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.z_centres = self.rng.normal(size=(40, dim)) * 2 + 5  # off the origin: centering matters
        self.var_centres = self.rng.uniform(0.2, 3.0, size=(40, dim))
        self.task_centres = self.rng.normal(size=(40, dim))

    def draw(self, family: int):
        rng, d = self.rng, self.dim
        return (self.z_centres[family] + 0.3 * rng.normal(size=d), self.var_centres[family] * rng.uniform(0.8, 1.2, d),
                self.task_centres[family] + 0.1 * rng.normal(size=d))

    def target(self, family: int, space: Space):
        z, var, task_z = self.draw(family)
        return SimpleNamespace(space=space, z=z, var=var, task_z=task_z)


def filled(tmp_path, n=3000, *, backend="embedded", request=None, **kw):
    """A store of one space of n records of 40 families, searched through indexes from THRESHOLD
    records: (a LoraDB-like handle, the space, the families)."""
    fam = Families(**kw)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, fam.dim)
    if backend == "embedded":
        index, location = SqliteIndex(tmp_path, ann_min_records=THRESHOLD), str(tmp_path)
        migrate(index.conn)
    else:
        pg, _ = request.getfixturevalue("servers")
        request.getfixturevalue("monkeypatch").setattr(postgres, "EXACT_BELOW", THRESHOLD)
        location = pg.create_database("k" + uuid.uuid4().hex[:12])
        PgIndex.create(location, "s3://unused/x")
        index = PgIndex(location)
        request.addfinalizer(index.close)
    families = fam.rng.integers(0, 40, n)
    index.insert_many([keyed_record(space, *fam.draw(f), name=f"f{f}-{i:05d}") for i, f in enumerate(families)])
    return SimpleNamespace(index=index, location=location), space, fam


def ask_for_builds(monkeypatch) -> list:
    """Background builds asked for, recorded instead of started."""
    asked: list = []
    monkeypatch.setattr(graphs, "refresh_in_background", lambda root, sid, key: asked.append((sid, key)))
    monkeypatch.setattr(pgkeys, "build_in_background", lambda store, sid, key: asked.append((sid, key)))
    return asked


def exact(db, space, key, target, k):
    """The exact answer: every record of the space mapped under References of all of them."""
    records = sorted(db.index.in_space(space.id), key=lambda r: r.name)
    d2 = key_distances(key, KeyInputs.stacked([target]), KeyInputs.stacked(records))
    order = np.lexsort((np.arange(len(records)), d2))[:k]
    return [records[i].name for i in order]


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
@pytest.mark.parametrize("key", KEY_NAMES)
def test_every_key_is_searched_through_its_index_with_the_recall_of_the_exact_scan(tmp_path, key, backend, monkeypatch, request):
    db, space, fam = filled(tmp_path, backend=backend, request=request)
    asked = ask_for_builds(monkeypatch)
    target = fam.target(0, space)
    assert db.index.nearest_by_key(space.id, key, KeyInputs.stacked([target]), 10) is None  # no index yet: exact
    assert asked == [(space.id, key)]  # and its build was asked for, in the background
    db.index.build_index(space.id, keys=(key,))
    if backend == "postgres":  # the walk goes through the key's own index
        found = pgkeys.entry(db.index, space.id, key)
        plan = explain_key_walk(db.index, found)
        assert f"Index Scan using {found['name']}" in plan and "Sort" not in plan, plan
    else:
        assert ann.load(graphs.graph_file(tmp_path, space.id, key)) is not None
    hits, recall = 0, []
    for trial in range(20):
        family = trial * 2
        target = fam.target(family, space)
        through_index = db.index.nearest_by_key(space.id, key, KeyInputs.stacked([target]), 10)
        assert through_index is not None and through_index.lacking == 0
        found = keysearch.nearest_by_key(db, key, target, 10, fallback=False)
        names = [r.name for r in found.records]
        recall.append(len(set(names) & set(exact(db, space, key, target, 10))) / 10)
        hits += names[0].startswith(f"f{family}-")  # the planted family comes first
        np.testing.assert_allclose(found.distances, ((found.phi_records - found.phi_target) ** 2).sum(axis=1))
    assert np.mean(recall) >= 0.95, (key, np.mean(recall))
    assert hits >= 19, (key, hits)


def test_small_spaces_are_scanned_exactly_and_the_scan_follows_writes(tmp_path):
    db, space, fam = filled(tmp_path, n=300)
    target = fam.target(3, space)
    first = keysearch.nearest_by_key(db, "task", target, 5, fallback=False)
    assert [r.name for r in first.records] == exact(db, space, "task", target, 5)
    planted = keyed_record(space, target.z, target.var, target.task_z, name="planted")  # the target itself
    db.index.insert(planted)
    again = keysearch.nearest_by_key(db, "task", target, 5, fallback=False)
    assert again.records[0].name == "planted" and again.distances[0] < 1e-9


def test_rows_added_after_the_build_are_found_and_drift_asks_for_a_rebuild(tmp_path):
    db, space, fam = filled(tmp_path, n=1000)
    for key in ("task", "centered-cosine"):
        db.index.build_index(space.id, keys=(key,))
    target = fam.target(7, space)
    planted = keyed_record(space, target.z, target.var, target.task_z, name="planted")
    db.index.insert(planted)  # after the build: a pending row, scanned exactly
    for key in ("task", "centered-cosine"):
        found = db.index.nearest_by_key(space.id, key, KeyInputs.stacked([target]), 3)
        assert found.hits[0].record_id == planted.id, key
    size = 1001
    db.index.insert_many([keyed_record(space, *fam.draw(1)) for _ in range(150)])  # past REFERENCES_DRIFT of 1000
    graph = graphs.graph_file(tmp_path, space.id, "centered-cosine")
    assert graphs.plan(db.index.conn, space.id, ann.load(graph), size + 150, fam.dim) == "build"
    task_graph = ann.load(graphs.graph_file(tmp_path, space.id, "task"))
    assert task_graph[1]["refs"] is None  # task reads no references: no snapshot, no drift rebuild
    assert graphs.plan(db.index.conn, space.id, task_graph, size + 150, fam.dim) == "absorb"


def test_a_record_lacking_what_the_key_reads_is_counted_not_mixed_in(tmp_path):
    db, space, fam = filled(tmp_path, n=800)
    legacy = keyed_record(space, fam.draw(2)[0], name="legacy")  # no variance, no task
    db.index.insert(legacy)
    db.index.build_index(space.id, keys=("task",))
    target = fam.target(2, space)
    assert db.index.nearest_by_key(space.id, "task", KeyInputs.stacked([target]), 5).lacking == 1
    assert keysearch.nearest_by_key(db, "task", target, 5, fallback=True) is None  # the space's key: raw-l2 instead
    with pytest.raises(LoradbError, match="needs a task embedding.*1 records here lack"):
        keysearch.nearest_by_key(db, "task", target, 5, fallback=False)


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_the_exact_scan_streams_key_rows_and_a_space_too_large_to_keep_is_mapped_a_chunk_at_a_time(
        tmp_path, backend, monkeypatch, request):
    """A large space before its key index exists is scanned exactly without whole records (at 1M
    they took 20 GB); past KEPT_PHI_BYTES no phi matrix is kept and each search streams, with
    the kept scan's answer and a fraction of its memory."""
    db, space, fam = filled(tmp_path, backend=backend, request=request)
    ask_for_builds(monkeypatch)
    records = sorted(db.index.in_space(space.id), key=lambda r: r.name)  # for the independent answer
    monkeypatch.setattr(type(db.index), "in_space", lambda *a: pytest.fail("the scan read whole records"))
    monkeypatch.setattr(sqlite_store, "ROWS_PER_CHUNK", 100)
    monkeypatch.setattr(pgtypes, "ROWS_PER_CHUNK", 100)
    for key in ("centered-cosine", "task+centered", "task"):  # two read the References, one does not
        for trial in range(3):
            family = 5 + 11 * trial
            target = fam.target(family, space)
            keysearch._SCANS.clear()
            tracemalloc.start()
            kept = keysearch.nearest_by_key(db, key, target, 10, fallback=False)
            kept_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert keysearch._SCANS[(db.location, space.id, key)].phi is not None
            keysearch._SCANS.clear()
            with monkeypatch.context() as small:
                small.setattr(keysearch, "KEPT_PHI_BYTES", 1000)
                tracemalloc.start()
                streamed = keysearch.nearest_by_key(db, key, target, 10, fallback=False)
                streamed_peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert keysearch._SCANS[(db.location, space.id, key)].phi is None  # nothing of the space kept
            names = [r.name for r in streamed.records]
            assert names == [r.name for r in kept.records]
            np.testing.assert_array_equal(streamed.distances, kept.distances)
            d2 = key_distances(key, KeyInputs.stacked([target]), KeyInputs.stacked(records))
            assert names == [records[i].name for i in np.lexsort((np.arange(len(records)), d2))[:10]]
            assert all(n.startswith(f"f{family}-") for n in names[:3]), (key, names)  # the planted family first
            assert streamed_peak < kept_peak / 3, (key, streamed_peak, kept_peak)


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_key_rows_come_in_pythons_name_order_whatever_the_collation(tmp_path, backend, monkeypatch, request):
    """The scan's References and its ties follow Python's sort of the names, a chunk at a time. A
    locale collation would put "b" before "Z" (PostgreSQL's key_rows asks for COLLATE "C"; the
    test servers here have C locales only, so that override itself is not exercised)."""
    db, space, fam = filled(tmp_path, n=0, backend=backend, request=request)
    names = ["b", "Z", "é", "e", "zz", "Ä", "a-1", "a_1", "a1", "日本"]
    db.index.insert_many([keyed_record(space, *fam.draw(0), name=n) for n in names])
    monkeypatch.setattr(sqlite_store, "ROWS_PER_CHUNK", 3)
    monkeypatch.setattr(pgtypes, "ROWS_PER_CHUNK", 3)
    chunks = list(db.index.key_rows(space.id))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [r.name for c in chunks for r in c] == sorted(names)
    assert all(r.var is not None and r.task_z is not None and r.z.dtype == np.float32 for c in chunks for r in c)


def test_status_lists_key_graphs_and_gc_removes_those_of_gone_spaces(tmp_path):
    db, space, fam = filled(tmp_path, n=600)
    db.index.build_index(space.id, keys=(RAW_L2, "whitened"))
    rows = {(r["space"], r["key"]): r for r in db.index.index_status()}
    assert rows[(space.id, "whitened")]["graph"] == "ready" and rows[(space.id, RAW_L2)]["graph"] == "ready"
    assert rows[(space.id, "whitened")]["graph_records"] == 600
    assert graphs.stale_files(tmp_path, {space.id}) == []
    assert graphs.graph_file(tmp_path, space.id, "whitened") in graphs.stale_files(tmp_path, {"another"})


def explain_key_walk(store, found: dict) -> str:
    width = found["width"]
    with store.conn.transaction():
        store.conn.execute(*postgres._hnsw_settings(10))
        sql = (f"EXPLAIN SELECT id FROM records WHERE {found['predicate']} "
               f"ORDER BY ({found['expression']})::vector({width}) <-> %s::vector({width}) LIMIT 40")
        return "\n".join(r[0] for r in store.conn.execute(sql, (str([0.5] * width).replace(" ", ""),)).fetchall())


@pytest.mark.parametrize("key", KEY_NAMES)
def test_the_postgres_expressions_are_the_keys_maps(tmp_path, key, request):
    """pgvector computes phi as retrieval/keys.py does (so the walk ranks what the re-rank ranks)."""
    db, space, fam = filled(tmp_path, n=50, backend="postgres", request=request)
    from loradb.retrieval.keys import References, key_map

    records = sorted(db.index.in_space(space.id), key=lambda r: r.id)
    refs = References.of(KeyInputs.stacked(records))
    expr, width = pgkeys.expression(key, fam.dim, refs)
    rows = db.index.conn.execute(f"SELECT id, (({expr})::vector({width}))::real[] FROM records ORDER BY id").fetchall()
    np.testing.assert_allclose(np.array([r[1] for r in rows]), key_map(key, KeyInputs.stacked(records), refs), rtol=2e-5, atol=2e-5)


def test_postgres_counts_rows_lacking_what_the_key_reads_and_rebuilds_on_drift(tmp_path, request, monkeypatch):
    db, space, fam = filled(tmp_path, n=800, backend="postgres", request=request)
    db.index.insert(keyed_record(space, fam.draw(2)[0], name="legacy"))  # no variance, no task
    db.index.build_index(space.id, keys=("task", "centered-cosine"))
    target = fam.target(2, space)
    assert db.index.nearest_by_key(space.id, "task", KeyInputs.stacked([target]), 5).lacking == 1
    assert db.index.nearest_by_key(space.id, "centered-cosine", KeyInputs.stacked([target]), 5).lacking == 0
    with pytest.raises(LoradbError, match="needs a task embedding.*1 records here lack"):
        keysearch.nearest_by_key(db, "task", target, 5, fallback=False)
    before = pgkeys.entry(db.index, space.id, "centered-cosine")
    db.index.insert_many([keyed_record(space, *fam.draw(1)) for _ in range(120)])  # past REFERENCES_DRIFT of 801
    asked = ask_for_builds(monkeypatch)
    assert db.index.nearest_by_key(space.id, "centered-cosine", KeyInputs.stacked([target]), 5) is not None  # answers meanwhile
    assert asked == [(space.id, "centered-cosine")]
    db.index.build_index(space.id, keys=("centered-cosine",))
    after = pgkeys.entry(db.index, space.id, "centered-cosine")
    assert after["name"] != before["name"] and after["refs"]["records"] == 921
    names = {r[0] for r in db.index.conn.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'records_key_%'")}
    assert after["name"] in names and before["name"] not in names  # the replaced index was dropped
    rows = {(r["space"], r["key"]): r for r in db.index.index_status()}
    assert rows[(space.id, "centered-cosine")]["graph"] == "ready" and rows[(space.id, "task")]["index"]


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_the_background_builders_build_a_keys_index(tmp_path, backend, request, monkeypatch):
    """What a search starts when a large space has no index under its key: the worker process's
    entry point, run here in the test's process."""
    from loradb.db.store import graph_worker, pg_key_worker

    db, space, fam = filled(tmp_path, n=700, backend=backend, request=request)
    target = KeyInputs.stacked([fam.target(4, space)])
    ask_for_builds(monkeypatch)
    assert db.index.nearest_by_key(space.id, "task+centered", target, 5) is None
    if backend == "postgres":
        monkeypatch.setenv(pgkeys.URL_ENV, db.location)
        assert pg_key_worker.main([space.id, "task+centered"]) == 0
    else:
        assert graph_worker.main([str(tmp_path), space.id, "task+centered"]) == 0
    found = db.index.nearest_by_key(space.id, "task+centered", target, 5)
    assert found is not None and all(h.record_id for h in found.hits)
    nearest = db.index.get_many([found.hits[0].record_id])[0]
    assert nearest.name.startswith("f4-")
