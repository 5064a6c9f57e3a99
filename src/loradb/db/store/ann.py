"""The approximate index of large embedded spaces: an HNSW graph (usearch) per space, whose
candidates are re-ranked exactly, so it can only cost recall, never correctness.

Keys are the records' `seq` numbers (unique, never reused). The graph lives in
`ann/<space>.usearch` with a sidecar saying up to which seq it holds; a search also
scans exactly the rows added since (by seq), and the graph absorbs them once they are
more than a few percent, or is rebuilt when deletions have thinned it. Files are
replaced atomically, so processes sharing a database see a whole graph or the old one.
One process at a time builds a space's graph: it holds an flock on `ann/<space>.building`
(which names its pid), released by the kernel however the holder exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from loradb.errors import StoreError

PROBE_RETRIES = 10  # a lock taken only by builder()'s probe is free again within microseconds
ANN_MIN_RECORDS = 50_000  # spaces at least this large are searched through the graph
ABSORB_FRACTION = 0.02  # fold recent rows into the graph past this share of its size
REBUILD_STALE_FRACTION = 0.2  # rebuild when this share of the graph's keys were deleted
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 64, 128
MIN_CANDIDATES, CANDIDATES_PER_RESULT = 600, 8  # graph neighbours re-ranked exactly (recall 0.97 at 1M, see docs/scaling.md)

_LOADED: dict[str, tuple[float, object, dict]] = {}  # graph file -> (mtime, index, meta), per process
_LOCK = threading.Lock()


def _meta_path(graph: Path) -> Path:
    return graph.with_suffix(".json")


def lock_path(graph: Path) -> Path:
    return graph.with_suffix(".building")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def builder(graph: Path) -> int | None:
    """The pid of the process building this graph, or None when none holds its lock."""
    try:
        fd = os.open(lock_path(graph), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a moment's probe: it fails while a builder holds it
        except BlockingIOError:
            return _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int:
    """The pid a lock file names (0 while its holder is writing it)."""
    try:
        return int(os.pread(fd, 32, 0).decode() or 0)
    except ValueError:
        return 0


class BuildRunning(StoreError):
    def __init__(self, graph: Path, pid: int):
        super().__init__(f"process {pid} is building the graph of space {graph.stem}; `loradb index status` shows "
                         "when it is done")
        self.pid = pid


@contextmanager
def build_lock(graph: Path):
    """Hold the graph's build lock; BuildRunning if another process (or open handle) holds it.

    An flock on `ann/<space>.building`: the kernel releases it when its holder exits, however
    it exits (a crash, an OOM kill), so there is no stale lock to take over and no window in
    which two processes can both believe they took one over. The file names the holder's pid
    (for `index status`) and is never removed: a removed lock file could be locked by one
    process through its old name while another locks a new file of the same name."""
    graph.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(graph), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(PROBE_RETRIES + 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # builder()'s probe holds the lock a moment (pid 0 in the file: nobody builds)
                if attempt == PROBE_RETRIES or _pid_in(fd):
                    raise BuildRunning(graph, _pid_in(fd)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _new_index(dim: int):
    try:
        from usearch.index import Index
    except ImportError:
        raise StoreError("searching a large embedded database needs usearch: pip install 'loradb[scale]'") from None
    return Index(ndim=dim, metric="l2sq", dtype="f32", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                 expansion_search=EXPANSION_SEARCH)


def load(graph: Path):
    """(index, meta) of a saved graph, or None; memory-mapped and cached per process."""
    if not graph.is_file() or not _meta_path(graph).is_file():
        return None
    mtime = graph.stat().st_mtime
    with _LOCK:
        cached = _LOADED.get(str(graph))
        if cached and cached[0] == mtime:
            return cached[1], cached[2]
    from usearch.index import Index

    try:
        meta = json.loads(_meta_path(graph).read_text())
        index = Index.restore(str(graph), view=False)
    except (OSError, ValueError, RuntimeError):  # cut short or damaged: rebuilt like a missing graph
        return None
    if index is None:  # usearch found no metadata in it: rebuilt like a missing graph
        return None
    index.expansion_search = EXPANSION_SEARCH  # type: ignore[misc]  # usearch's setter is apart from its getter: mypy sees it read-only
    with _LOCK:
        _LOADED[str(graph)] = (mtime, index, meta)
    return index, meta


def save(graph: Path, index, meta: dict) -> None:
    graph.parent.mkdir(parents=True, exist_ok=True)
    tmp = graph.with_name(f".{graph.name}.{os.getpid()}.tmp")
    index.save(str(tmp))
    meta_tmp = _meta_path(tmp)
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, _meta_path(graph))
    os.replace(tmp, graph)
    with _LOCK:
        _LOADED[str(graph)] = (graph.stat().st_mtime, index, meta)


def build(graph: Path, keys: np.ndarray, vectors: np.ndarray, threads: int = 0, *, extra: dict | None = None,
          max_seq: int | None = None):
    """A new graph over all of a space's rows (keys = seq); returns (index, meta). `extra` goes
    into the sidecar; `max_seq`: the highest seq read, when rows left out of the graph were newer."""
    index = _new_index(vectors.shape[1])
    if len(keys):
        index.add(keys.astype(np.uint64), np.ascontiguousarray(vectors, dtype=np.float32), threads=threads)
    top = max(int(keys.max()) if len(keys) else 0, max_seq or 0)
    meta = {**(extra or {}), "max_seq": top, "size": int(len(keys)), "dim": int(vectors.shape[1])}
    save(graph, index, meta)
    return index, meta


def absorb(graph: Path, index, meta: dict, keys: np.ndarray, vectors: np.ndarray, *, max_seq: int | None = None):
    """Add recent rows to a graph and save it (`max_seq` as in build)."""
    if len(keys):
        index.add(keys.astype(np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))
    top = max(meta["max_seq"], int(keys.max()) if len(keys) else 0, max_seq or 0)
    meta = {**meta, "max_seq": top, "size": meta["size"] + int(len(keys))}
    save(graph, index, meta)
    return index, meta


def candidates(index, q: np.ndarray, k: int) -> np.ndarray:
    """The keys of the graph's nearest neighbours of q: enough of them to re-rank for k."""
    count = max(MIN_CANDIDATES, CANDIDATES_PER_RESULT * k)
    index.expansion_search = max(EXPANSION_SEARCH, count)
    found = index.search(np.asarray(q, dtype=np.float32), count)
    return np.asarray(found.keys, dtype=np.int64)


def vectors(index, keys: np.ndarray) -> np.ndarray:
    """The graph's stored vectors for these keys (float32, as the rows hold them)."""
    return np.asarray(index.get(np.asarray(keys, dtype=np.uint64), dtype=np.float32), dtype=np.float32).reshape(len(keys), -1)
