"""The graphs of a large embedded space over their lifetime: when one needs work, doing that
work (in this process, or in a background one so that no search waits for it), searching
through it, its state for `loradb index status`, and the files of spaces that are gone.

A space has one graph per retrieval key it is searched by: over raw z (`<space>.usearch`)
and over each other key's map phi (`<space>@<key>.usearch`, retrieval/keys.py). A key whose
map reads the space's References (mean prototype, pooled variance) uses a snapshot of them
taken when its graph was built and kept in the graph's sidecar; the graph is rebuilt when the
space has grown or shrunk by keys.REFERENCES_DRIFT since. Rows lacking what a key reads (records
added before keys needed variance or task) are left out of its graph and counted.

A search never builds: when a graph is missing, of another dimension, thinned by deletions,
behind by many new rows or (for a key) its references have drifted, the search asks for a
background refresh and answers from what it has: exactly (no usable graph yet) or from the
current graph plus an exact scan of the rows added since it was saved.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from loradb.db.store import ann
from loradb.db.store.protocol import KeySearch, SearchHit
from loradb.db.store.sqlshared import ROWS_PER_CHUNK
from loradb.retrieval.keys import RAW_L2, KeyInputs, References, get_key, key_map, lacking_parts, snapshot_drifted

GRAPH_DIR = "ann"
GRAPH_SUFFIXES = (".usearch", ".json", ".building", ".log", ".attempt")
KEY_SEPARATOR = "@"  # <space>@<key>.usearch: space ids are hex, key names have no "@"
# a background build that started and did not finish (it failed, or was killed) is not tried
# again for this long: searches must not respawn a failing build one after another
BUILD_BACKOFF_SECONDS = 600
_SPAWNED: dict[str, subprocess.Popen] = {}  # graph file -> this process's background builder


def graph_file(root: Path, space_id: str, key: str = RAW_L2) -> Path:
    name = space_id if key == RAW_L2 else f"{space_id}{KEY_SEPARATOR}{key}"
    return Path(root) / GRAPH_DIR / f"{name}.usearch"


def seq_vectors(conn, space_id: str, *, after: int) -> tuple[np.ndarray, np.ndarray]:
    """(seq keys, float32 vectors) of a space's rows with seq > after."""
    rows = conn.execute("SELECT seq, z FROM records WHERE space_id = ? AND seq > ? ORDER BY seq", (space_id, after)).fetchall()
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    dim = len(rows[0][1]) // 4 if rows else 0
    return keys, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)


def _key_rows(conn, space_id: str, key: str, *, after: int):
    """Chunks of (seqs, ids, KeyInputs or None, lacking, last seq) of a space's rows with seq >
    after, by seq: the rows that have what `key` reads, how many of the chunk lack it, and the
    chunk's highest seq (lacking rows included: a graph has read past them too)."""
    needs = get_key(key)
    cursor = conn.execute("SELECT seq, id, z, z_var, task_z FROM records WHERE space_id = ? AND seq > ? ORDER BY seq",
                          (space_id, after))
    while rows := cursor.fetchmany(ROWS_PER_CHUNK):
        kept = [r for r in rows if lacking_parts(needs, has_var=r[3] is not None, has_task=r[4] is not None) is None]

        def column(i: int, needed: bool = True):
            return np.stack([np.frombuffer(r[i], dtype="<f4") for r in kept]) if needed else None

        inputs = KeyInputs.of(column(2), column(3, needs.needs_var), column(4, needs.needs_task)) if kept else None
        yield [r[0] for r in kept], [r[1] for r in kept], inputs, len(rows) - len(kept), rows[-1][0]


def _references(conn, space_id: str, key: str) -> tuple[References | None, int]:
    """(the References of the space's rows that `key` can map, how many rows that is); (None, 0)
    for a key whose map does not read them."""
    if not get_key(key).reads_references:
        return None, 0
    chunks = [inputs for _, _, inputs, _, _ in _key_rows(conn, space_id, key, after=0) if inputs is not None]
    return References.streamed(chunks)


def key_vectors(conn, space_id: str, key: str, *, after: int, refs: References | None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(seq keys, float32 phi vectors, rows lacking what the key reads, the highest seq read)
    of a space's rows with seq > after, mapped by `key` under `refs`."""
    seqs: list[int] = []
    parts: list[np.ndarray] = []
    lacking, top = 0, after
    for chunk_seqs, _, inputs, lack, last in _key_rows(conn, space_id, key, after=after):
        lacking, top = lacking + lack, max(top, last)
        if inputs is not None:
            seqs += chunk_seqs
            parts.append(key_map(key, inputs, refs).astype(np.float32))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    return np.array(seqs, dtype=np.int64), vectors, lacking, int(top)


def _recent(conn, space_id: str, max_seq: int) -> int:
    return conn.execute("SELECT count(*) FROM records WHERE space_id = ? AND seq > ?", (space_id, max_seq)).fetchone()[0]


def _space_dim(meta: dict) -> int:
    """The dimension of the space's z a graph was built for (a key's phi may be wider)."""
    return meta.get("space_dim", meta["dim"])


def plan(conn, space_id: str, loaded, size: int, dim: int) -> str | None:
    """What a refresh of this graph would do: 'build' (no graph, another dimension, thinned by
    deletions, or its key's references snapshot drifted), 'absorb' (many rows added since it
    was saved), or None."""
    if loaded is None or _space_dim(loaded[1]) != dim:
        return "build"
    meta = loaded[1]
    recent = _recent(conn, space_id, meta["max_seq"])
    read = meta["size"] + meta.get("lacking", 0)  # the rows the graph accounted for when saved
    if read - (size - recent) > ann.REBUILD_STALE_FRACTION * read:
        return "build"
    if snapshot_drifted(meta.get("refs"), size):
        return "build"
    if recent and meta["size"] == 0:  # an empty graph does not know the width of its vectors yet
        return "build"
    if recent > ann.ABSORB_FRACTION * meta["size"]:
        return "absorb"
    return None


def _build(graph: Path, conn, space_id: str, dim: int, key: str) -> None:
    if key == RAW_L2:
        keys, vectors = seq_vectors(conn, space_id, after=0)
        ann.build(graph, keys, vectors)
        return
    refs, counted = _references(conn, space_id, key)
    keys, vectors, lacking, top = key_vectors(conn, space_id, key, after=0, refs=refs)
    extra = {"key": key, "space_dim": dim, "lacking": lacking,
             "refs": None if refs is None else {"records": counted, **refs.to_json()}}
    ann.build(graph, keys, vectors, extra=extra, max_seq=top)


def _absorb(graph: Path, conn, space_id: str, loaded, key: str) -> None:
    index, meta = loaded
    if key == RAW_L2:
        keys, vectors = seq_vectors(conn, space_id, after=meta["max_seq"])
        ann.absorb(graph, index, meta, keys, vectors)
        return
    keys, vectors, lacking, top = key_vectors(conn, space_id, key, after=meta["max_seq"], refs=_snapshot(meta))
    ann.absorb(graph, index, {**meta, "lacking": meta.get("lacking", 0) + lacking}, keys, vectors, max_seq=top)


def _snapshot(meta: dict) -> References | None:
    return None if meta.get("refs") is None else References.from_json(meta["refs"])


def refresh(root: Path, conn, space_id: str, size: int, dim: int, *, wait: bool, key: str = RAW_L2) -> str | None:
    """Bring a space's graph for `key` up to date here and now, under its build lock. When
    another process holds the lock: with `wait`, wait for it and then do what is left; else
    ann.BuildRunning. Returns what was done: 'build', 'absorb' or None."""
    graph = graph_file(root, space_id, key)
    while True:
        try:
            with ann.build_lock(graph):
                loaded = ann.load(graph)
                work = plan(conn, space_id, loaded, size, dim)
                if work == "build":
                    _build(graph, conn, space_id, dim, key)
                elif work == "absorb":
                    _absorb(graph, conn, space_id, loaded, key)
                attempt_file(graph).unlink(missing_ok=True)  # done: no back-off for the next one
                return work
        except ann.BuildRunning:
            if not wait:
                raise
            time.sleep(0.2)


def refresh_in_background(root: Path, space_id: str, key: str = RAW_L2) -> None:
    """Start a process that refreshes the graph (graph_worker.py), unless one is running.
    It outlives a short-lived caller such as one `loradb search`; its output goes to
    ann/<graph>.log."""
    graph = graph_file(root, space_id, key)
    running = _SPAWNED.get(str(graph))
    if (running is not None and running.poll() is None) or ann.builder(graph) is not None:
        return
    if failed_attempt(graph) is not None:  # the last one failed a short while ago: back off
        return
    graph.parent.mkdir(parents=True, exist_ok=True)
    attempt_file(graph).write_text(str(time.time()))  # removed by the build when it is done
    with open(graph.with_suffix(".log"), "ab") as log:
        _SPAWNED[str(graph)] = subprocess.Popen(
            [sys.executable, "-m", "loradb.db.store.graph_worker", str(root), space_id, key],
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
    pending = [(float(((np.frombuffer(z, dtype="<f4").astype(np.float64) - q) ** 2).sum()), rid)
               for rid, z in conn.execute("SELECT id, z FROM records WHERE space_id = ? AND seq > ?", (space_id, meta["max_seq"]))]
    return _ranked(conn, space_id, index, q, k, pending)


def search_key(conn, space_id: str, key: str, index, meta: dict, target: KeyInputs, k: int) -> KeySearch:
    """Through a key's graph: phi(target) under the graph's references snapshot, the graph's
    candidates plus the rows added since it was saved, re-ranked exactly in that geometry."""
    refs = _snapshot(meta)
    q = key_map(key, target, refs)[0].astype(np.float64)
    pending, lacking = [], meta.get("lacking", 0)
    for _, ids, inputs, lack, _ in _key_rows(conn, space_id, key, after=meta["max_seq"]):
        lacking += lack
        if inputs is not None:
            pending += [(float(d), rid) for rid, d in zip(ids, ((key_map(key, inputs, refs) - q) ** 2).sum(axis=1))]
    return KeySearch(_ranked(conn, space_id, index, q, k, pending), refs, lacking)


def _ranked(conn, space_id: str, index, q: np.ndarray, k: int, pending: list[tuple[float, str]]) -> list[SearchHit]:
    """The k nearest of the graph's candidates and the `pending` (distance, id) rows."""
    # re-rank the graph's candidates with its own copy of their vectors (the same float32
    # values as the rows), then look up ids only for the front-runners: few random reads
    if len(index) == 0:
        return [SearchHit(rid, d) for d, rid in sorted(pending)[:k]]
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
    return [SearchHit(rid, d) for d, rid in sorted(scored + pending)[:k]]


def key_graphs(root: Path, space_id: str) -> list[str]:
    """The keys other than raw-l2 whose graph of this space is on disk."""
    folder = Path(root) / GRAPH_DIR
    prefix = f"{space_id}{KEY_SEPARATOR}"
    return sorted(p.stem[len(prefix):] for p in folder.glob(f"{prefix}*.usearch")) if folder.is_dir() else []


def status(root: Path, conn, space_id: str, size: int, dim: int, threshold: int, key: str = RAW_L2) -> dict:
    """One graph's state (a space's, for `key`), as `loradb index status` shows it."""
    graph = graph_file(root, space_id, key)
    loaded = ann.load(graph)
    row: dict = {"space": space_id, "key": key, "records": size, "search": "graph" if size >= threshold else "exact",
                 "graph": "absent", "graph_records": 0, "pending_rows": 0, "bytes": 0, "builder_pid": ann.builder(graph)}
    usable = loaded is not None and _space_dim(loaded[1]) == dim  # what a search would go through
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
        elif path.suffix in GRAPH_SUFFIXES and path.stem.split(KEY_SEPARATOR)[0] not in space_ids:
            if path.suffix != ".building" or ann.builder(path.with_suffix(".usearch")) is None:  # a held lock stays
                stale.append(path)
    return stale


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
