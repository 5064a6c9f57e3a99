"""The embedded graph is built in the background, never by the search that needs it: searches
stay exact until it is ready; `loradb index build` builds it ahead of time and `index status`
shows it; `gc` removes the graphs of spaces that are gone."""

import json
import os
import secrets
import time

import numpy as np
import pytest
from test_cli import run
from test_index_search import brute_force, record

from loradb.db.store import ann, graphs
from loradb.db.store.sqlite import SqliteIndex, migrate
from loradb.retrieval.represent import Space

THRESHOLD = 500  # records from which a space is searched through a graph


def filled_index(root, n=3000, dim=32, seed=11):
    rng = np.random.default_rng(seed)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 16, dim)
    index = SqliteIndex(root, ann_min_records=THRESHOLD)
    migrate(index.conn)
    centers = rng.normal(size=(20, dim)) * 3
    index.insert_many([record(space, z) for z in centers[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))])
    queries = (centers[rng.integers(0, 20, 30)] + rng.normal(size=(30, dim))).astype(np.float32)
    return index, space, queries


def assert_exact(index, space, queries, k=10):
    for q in queries:
        got = [(h.record_id, h.distance) for h in index.nearest(space.id, q, k)]
        want = brute_force(index, space.id, q, k, "l2")
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-12, atol=1e-12)


def test_a_search_during_a_build_is_exact_and_does_not_wait(tmp_path):
    index, space, queries = filled_index(tmp_path)
    graph = graphs.graph_file(tmp_path, space.id)
    with ann.build_lock(graph):  # held here, as a builder would hold it
        assert index.index_status()[0]["graph"] == "building"
        started = time.perf_counter()
        assert_exact(index, space, queries)  # no graph yet: every answer is the exact one
        assert time.perf_counter() - started < 30
        assert not graph.exists()  # the searches neither built a graph nor waited for one
        with pytest.raises(ann.BuildRunning, match=f"process {os.getpid()} is building"):
            index.build_index(space.id, wait=False)
    [status] = index.build_index()
    assert status["graph"] == "ready" and status["search"] == "graph" and status["graph_records"] == 3000


def test_the_first_search_starts_a_background_build(tmp_path):
    index, space, queries = filled_index(tmp_path)
    assert index.index_status()[0]["search"] == "exact (until the graph is built)"
    assert_exact(index, space, queries[:5])  # answered exactly, and a builder process started
    deadline = time.time() + 120
    while index.index_status()[0]["graph"] != "ready":
        assert time.time() < deadline, (tmp_path / "ann" / f"{space.id}.log").read_text()
        time.sleep(0.2)
    log = (tmp_path / "ann" / f"{space.id}.log").read_text()
    assert "graph of space" in log and "ready" in log
    assert ann.builder(graphs.graph_file(tmp_path, space.id)) is None  # its lock went with it
    hits = index.nearest(space.id, queries[0], 10)  # now through the graph, exactly scored
    exact = dict(brute_force(index, space.id, queries[0], 3000, "l2"))
    assert all(abs(h.distance - exact[h.record_id]) < 1e-9 for h in hits)


def leave_a_dead_builders_lock(graph) -> None:
    """The lock file as a builder that died left it: naming a pid no process has any more."""
    graph.parent.mkdir()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    ann.lock_path(graph).write_text(str(dead))


def _hold_lock(graph, seconds: float, log) -> None:
    """In a forked child: take the build lock if free, note when it was held, hold it a while."""
    try:
        with ann.build_lock(graph):
            start = time.time()
            time.sleep(seconds)
            with open(log, "a") as f:
                f.write(f"{start} {time.time()}\n")
    except ann.BuildRunning:
        pass


def test_racing_processes_never_hold_the_build_lock_at_once(tmp_path, monkeypatch):
    """Eight processes race for a lock a dead builder left, each checking liveness slowly (as
    a loaded machine would): at most one holds it at any time. The lock was a file made with
    link() and a stale one removed by whoever met it, so two processes could each remove the
    other's fresh lock and both build; now it is an flock the kernel gives to one."""
    graph = tmp_path / "ann" / "space.usearch"
    leave_a_dead_builders_lock(graph)
    real_alive = ann.alive
    monkeypatch.setattr(ann, "alive", lambda pid: (time.sleep(0.3), real_alive(pid))[1])
    log = tmp_path / "held.txt"
    children = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            try:
                _hold_lock(graph, 0.5, log)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert spans  # someone built
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans


def test_a_killed_builder_releases_the_lock(tmp_path):
    import signal
    import subprocess
    import sys

    graph = tmp_path / "ann" / "space.usearch"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from loradb.db.store import ann\n"
                               "with ann.build_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                               str(graph)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert ann.builder(graph) == holder.pid
    with pytest.raises(ann.BuildRunning, match=f"process {holder.pid} is building"):
        with ann.build_lock(graph):
            pass
    holder.send_signal(signal.SIGKILL)  # as the OOM killer would
    holder.wait()
    assert ann.builder(graph) is None
    with ann.build_lock(graph):
        assert ann.builder(graph) == os.getpid()


def test_a_failing_background_build_is_not_respawned_by_every_search(tmp_path, monkeypatch):
    """A background build that started and did not finish (usearch missing, an OOM kill) is not
    started again by the next searches for BUILD_BACKOFF_SECONDS; `index status` says so."""
    index, space, queries = filled_index(tmp_path)
    graph = graphs.graph_file(tmp_path, space.id)
    spawned = []

    class NoProcess:  # the worker that would crash: nothing runs, nothing is built
        def __init__(self, *a, **k):
            spawned.append(a)

        def poll(self):
            return 1

    monkeypatch.setattr(graphs.subprocess, "Popen", NoProcess)
    for q in queries[:5]:
        index.nearest(space.id, q, 3)
    assert len(spawned) == 1  # the first search started one; the failed attempt holds the others back
    status = index.index_status()[0]
    assert status["last_build"].startswith("failed") and "index build" in status["last_build"]
    monkeypatch.setattr(graphs, "BUILD_BACKOFF_SECONDS", 0)  # the back-off over: the next search tries again
    index.nearest(space.id, queries[0], 3)
    assert len(spawned) == 2
    monkeypatch.setattr(graphs, "BUILD_BACKOFF_SECONDS", 600)
    [status] = index.build_index()  # a build that finishes clears the failure
    assert status["graph"] == "ready" and "last_build" not in status and not graphs.attempt_file(graph).exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    index, space, _ = filled_index(tmp_path, n=600)
    leave_a_dead_builders_lock(graphs.graph_file(tmp_path, space.id))
    assert index.build_index(space.id, wait=False)[0]["graph"] == "ready"


def test_cli_index_build_status_and_gc_of_removed_spaces(tmp_path, monkeypatch):
    from loradb import LoraDB

    monkeypatch.setenv("LORADB_ANN_MIN_RECORDS", str(THRESHOLD))
    db_dir = tmp_path / "db"
    LoraDB.init(db_dir).close()
    blob = tmp_path / "blob.safetensors"
    blob.write_bytes(b"placeholder")
    with LoraDB(db_dir) as db:
        sha = db.blobs.put(blob)
        kept, _, _ = filled_index(db_dir, n=600, seed=1)
        gone, gone_space, _ = filled_index(db_dir, n=600, seed=2)
        for index in (kept, gone):
            index.conn.execute("UPDATE records SET blob_sha256 = ?", (sha,))
            index.conn.commit()

    code, out, err = run("index", "build", db_dir, "--json")
    assert code == 0, err
    assert [s["graph"] for s in json.loads(out)["spaces"]] == ["ready", "ready"]
    code, out, _ = run("index", "status", db_dir)
    assert out.count("searched graph; index ready") == 2

    for rid, in gone.conn.execute("SELECT id FROM records WHERE space_id = ?", (gone_space.id,)).fetchall():
        gone.delete(rid)  # the space goes with its last record; its graph files stay behind
    stale = {p.name for p in (db_dir / "ann").iterdir() if p.stem == gone_space.id}
    # the build lock's file stays with its space (an flock's file is never removed while in use)
    assert stale == {f"{gone_space.id}.usearch", f"{gone_space.id}.json", f"{gone_space.id}.building"}
    code, out, _ = run("check", db_dir)
    assert code == 0 and out.count("stray file:") == 3 and gone_space.id in out
    code, out, _ = run("gc", db_dir)
    assert code == 0 and "removed 3" in out
    left = {p.name for p in (db_dir / "ann").iterdir()}
    assert left and not any(gone_space.id in name for name in left)  # the live space's graph stays
    code, out, _ = run("index", "status", db_dir, "--json")
    assert json.loads(out)["spaces"][0]["graph"] == "ready"


def test_a_damaged_graph_file_is_rebuilt_not_fatal(tmp_path):
    index, space, queries = filled_index(tmp_path, n=800)
    index.build_index(space.id)
    graph = graphs.graph_file(tmp_path, space.id)
    graph.write_bytes(graph.read_bytes()[:1000])  # cut short, as by a full disk
    ann._LOADED.clear()  # as a new process would find it
    assert_exact(index, space, queries[:3])  # answered exactly while it is rebuilt
    assert index.build_index(space.id)[0]["graph"] == "ready"


def test_a_builders_probe_does_not_turn_a_free_lock_into_a_running_build(tmp_path):
    """`builder()` probes the lock by taking it shared for a moment; a build starting in that
    moment waits it out instead of reporting a build that is not running (and backing off)."""
    import fcntl
    import threading

    graph = tmp_path / "ann" / "space.usearch"
    graph.parent.mkdir()
    fd = os.open(ann.lock_path(graph), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the probe, held a little longer than a real one
    release = threading.Timer(0.15, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    release.start()
    with ann.build_lock(graph):
        assert ann.builder(graph) == os.getpid()
    release.join()
