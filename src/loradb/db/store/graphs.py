"""The graph of a large embedded space over its lifetime: when it needs work, doing that work
(in this process, or in a background one so that no search waits for it), searching through
it, its state for `loradb index status`, and the files of spaces that are gone.

A search never builds: when a space's graph is missing, of another dimension, thinned by
deletions or behind by many new rows, the search asks for a background refresh and answers
from what it has: exactly (no usable graph yet) or from the current graph plus an exact
scan of the rows added since it was saved.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from loradb.db.store import ann
from loradb.db.store.protocol import SearchHit

GRAPH_DIR = "ann"
GRAPH_SUFFIXES = (".usearch", ".json", ".building", ".log", ".attempt")
# a background build that started and did not finish (it failed, or was killed) is not tried
# again for this long: searches must not respawn a failing build one after another
BUILD_BACKOFF_SECONDS = 600
_SPAWNED: dict[str, subprocess.Popen] = {}  # graph file -> this process's background builder


def graph_file(root: Path, space_id: str) -> Path:
    return Path(root) / GRAPH_DIR / f"{space_id}.usearch"


def seq_vectors(conn, space_id: str, *, after: int) -> tuple[np.ndarray, np.ndarray]:
    """(seq keys, float32 vectors) of a space's rows with seq > after."""
    rows = conn.execute("SELECT seq, z FROM records WHERE space_id = ? AND seq > ? ORDER BY seq", (space_id, after)).fetchall()
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    dim = len(rows[0][1]) // 4 if rows else 0
    return keys, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)


def _recent(conn, space_id: str, max_seq: int) -> int:
    return conn.execute("SELECT count(*) FROM records WHERE space_id = ? AND seq > ?", (space_id, max_seq)).fetchone()[0]


def plan(conn, space_id: str, loaded, size: int, dim: int) -> str | None:
    """What a refresh of this graph would do: 'build' (no graph, another dimension, or
    thinned by deletions), 'absorb' (many rows added since it was saved), or None."""
    if loaded is None or loaded[1]["dim"] != dim:
        return "build"
    meta = loaded[1]
    recent = _recent(conn, space_id, meta["max_seq"])
    if meta["size"] - (size - recent) > ann.REBUILD_STALE_FRACTION * meta["size"]:
        return "build"
    if recent > ann.ABSORB_FRACTION * meta["size"]:
        return "absorb"
    return None


def refresh(root: Path, conn, space_id: str, size: int, dim: int, *, wait: bool) -> str | None:
    """Bring a space's graph up to date here and now, under its build lock. When another
    process holds the lock: with `wait`, wait for it and then do what is left; else
    ann.BuildRunning. Returns what was done: 'build', 'absorb' or None."""
    graph = graph_file(root, space_id)
    while True:
        try:
            with ann.build_lock(graph):
                loaded = ann.load(graph)
                work = plan(conn, space_id, loaded, size, dim)
                if work == "build":
                    keys, vectors = seq_vectors(conn, space_id, after=0)
                    ann.build(graph, keys, vectors)
                elif work == "absorb":
                    index, meta = loaded
                    keys, vectors = seq_vectors(conn, space_id, after=meta["max_seq"])
                    ann.absorb(graph, index, meta, keys, vectors)
                attempt_file(graph).unlink(missing_ok=True)  # done: no back-off for the next one
                return work
        except ann.BuildRunning:
            if not wait:
                raise
            time.sleep(0.2)


def refresh_in_background(root: Path, space_id: str) -> None:
    """Start a process that refreshes the graph (graph_worker.py), unless one is running.
    It outlives a short-lived caller such as one `loradb search`; its output goes to
    ann/<space>.log."""
    graph = graph_file(root, space_id)
    running = _SPAWNED.get(str(graph))
    if (running is not None and running.poll() is None) or ann.builder(graph) is not None:
        return
    if failed_attempt(graph) is not None:  # the last one failed a short while ago: back off
        return
    graph.parent.mkdir(parents=True, exist_ok=True)
    attempt_file(graph).write_text(str(time.time()))  # removed by the build when it is done
    with open(graph.with_suffix(".log"), "ab") as log:
        _SPAWNED[str(graph)] = subprocess.Popen(
            [sys.executable, "-m", "loradb.db.store.graph_worker", str(root), space_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)


def attempt_file(graph: Path) -> Path:
    return graph.with_suffix(".attempt")


def failed_attempt(graph: Path) -> dict | None:
    """The last background build, when it started within BUILD_BACKOFF_SECONDS, no process is
    building now and it left no marker of being done: it failed (its log says why)."""
    try:
        started = float(attempt_file(graph).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return None
    if ann.builder(graph) is not None:
        return None
    retry = started + BUILD_BACKOFF_SECONDS
    if time.time() >= retry:
        return None
    return {"started": started, "retry_after": retry, "log": str(graph.with_suffix(".log"))}


def search(conn, space_id: str, index, meta: dict, q: np.ndarray, k: int) -> list[SearchHit]:
    """Graph candidates plus the rows added since the graph was saved, re-ranked exactly."""
    # re-rank the graph's candidates with its own copy of their vectors (the same float32
    # values as the rows), then look up ids only for the front-runners: few random reads
    seqs = ann.candidates(index, q, k)
    dist = ((ann.vectors(index, seqs).astype(np.float64) - q) ** 2).sum(axis=1)
    ranked = sorted(zip(dist.tolist(), seqs.tolist()))
    scored: list[tuple[float, str]] = []
    for start in range(0, len(ranked), 2 * k):
        window = ranked[start:start + 2 * k]
        ids = dict(conn.execute(
            f"SELECT seq, id FROM records WHERE space_id = ? AND seq IN ({','.join('?' * len(window))})",
            (space_id, *[seq for _, seq in window])).fetchall())
        scored += [(d, ids[seq]) for d, seq in window if seq in ids]  # a missing seq was deleted
        if len(scored) >= k and (start + 2 * k >= len(ranked) or ranked[start + 2 * k][0] > sorted(scored)[k - 1][0]):
            break
    for rid, z in conn.execute("SELECT id, z FROM records WHERE space_id = ? AND seq > ?", (space_id, meta["max_seq"])):
        scored.append((float(((np.frombuffer(z, dtype="<f4").astype(np.float64) - q) ** 2).sum()), rid))
    return [SearchHit(rid, d) for d, rid in sorted(scored)[:k]]


def status(root: Path, conn, space_id: str, size: int, dim: int, threshold: int) -> dict:
    """One space's index state, as `loradb index status` shows it."""
    graph = graph_file(root, space_id)
    loaded = ann.load(graph)
    row: dict = {"space": space_id, "records": size, "search": "graph" if size >= threshold else "exact",
                 "graph": "absent", "graph_records": 0, "pending_rows": 0, "bytes": 0, "builder_pid": ann.builder(graph)}
    usable = loaded is not None and loaded[1]["dim"] == dim  # what a search would go through
    if usable:
        meta = loaded[1]
        work = plan(conn, space_id, loaded, size, dim)
        row.update(graph="ready" if work is None else f"needs {work}", graph_records=meta["size"],
                   pending_rows=_recent(conn, space_id, meta["max_seq"]), bytes=graph.stat().st_size)
    if row["builder_pid"] is not None:
        row["graph"] = "building"
    elif (failed := failed_attempt(graph)) is not None:
        row["last_build"] = (f"failed (started {_clock(failed['started'])}; see {failed['log']}); "
                             f"searches start another after {_clock(failed['retry_after'])}, `loradb index build` now")
    if row["search"] == "graph" and not usable:
        row["search"] = "exact (until the graph is built)"
    return row


def stale_files(root: Path, space_ids: set[str]) -> list[Path]:
    """Graph files of spaces that no longer exist, and temp files of graph saves whose
    process is gone (`.<space>.usearch.<pid>.tmp` and its `.json`). A build lock no process
    holds is stale with its space; one a process holds stays."""
    folder = Path(root) / GRAPH_DIR
    stale = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.name.startswith("."):
            pid = path.name.split(".")[-2]
            if not (pid.isdigit() and ann.alive(int(pid))):
                stale.append(path)
        elif path.suffix in GRAPH_SUFFIXES and path.stem not in space_ids:
            if path.suffix != ".building" or ann.builder(path.with_suffix(".usearch")) is None:  # a held lock stays
                stale.append(path)
    return stale


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
