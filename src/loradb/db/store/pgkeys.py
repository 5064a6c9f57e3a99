"""PostgreSQL's index of a large space under a retrieval key other than raw-l2: one partial
HNSW expression index per (space, key) over phi written in pgvector's own operators, so
PostgreSQL keeps it up to date on every write like the raw z index.

    cosine            l2_normalize(z)
    centered-cosine   l2_normalize(z - mean)
    whitened          (z - mean) * (1 / scale)
    frechet           z || loradb_sqrt(z_var)           (loradb_sqrt: an immutable SQL function)
    task              l2_normalize(task_z)
    task+centered     l2_normalize(task_z) || l2_normalize(z - mean)

`mean` and `scale` are the space's References when the index was built, written into the
expression as constants and kept in the settings row `keyindex:<space>:<key>` with the
expression itself (a query must repeat it to the byte to walk the index). Rows lacking what
the key reads are outside the index's predicate and counted at each search (a small partial
index on the NULLs makes that cheap). A new index replaces the old one when the space's size
has moved keys.REFERENCES_DRIFT from the size its References were taken at. The walk's candidates
are re-ranked exactly in float64 by retrieval/keys.py's own map, so the index can only cost
recall. Building takes minutes at a million records: a search that finds no index answers by
an exact scan and starts a background build (`python -m loradb.db.store.pg_key_worker`, the database's
URL in LORADB_PG_URL so that no password shows in the process list).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from loradb.db.store.pgtypes import server_chunks, unpack_vector, vector_literal
from loradb.db.store.protocol import KeySearch, SearchHit
from loradb.errors import StoreError
from loradb.retrieval.keys import KeyInputs, References, get_key, key_map, snapshot_drifted

SETTING = "keyindex:"
BUILD_BACKOFF_SECONDS = 600  # a background build this process started is not started again for this long
URL_ENV = "LORADB_PG_URL"
_STARTED: dict[tuple[str, str, str], float] = {}  # (database, space, key) -> when this process started its build
_SPACE_ID = re.compile(r"[0-9a-f]{1,128}")  # written into SQL as a constant: checked first

# phi in pgvector's operators; Z, V, T: the row's z, z_var, task_z at the space's dimension; M, W: constants
_EXPRESSIONS = {
    "cosine": ("l2_normalize({Z})", 1),
    "centered-cosine": ("l2_normalize({Z} - {M})", 1),
    "whitened": ("(({Z} - {M}) * {W})", 1),
    "frechet": ("({Z} || loradb_sqrt({V}))", 2),
    "task": ("l2_normalize({T})", 1),
    "task+centered": ("(l2_normalize({T}) || l2_normalize({Z} - {M}))", 2),
}


def _literal(v: np.ndarray, dim: int) -> str:
    return f"'{vector_literal(v)}'::vector({dim})"


def _whitening_scale(refs: References) -> np.ndarray:
    """keys._whitened's divisor (kept equal to it: tests/test_key_index.py compares the two maps)."""
    assert refs.within_var is not None
    return np.sqrt(refs.within_var + 1e-6 * float(refs.within_var.mean()) + 1e-12)


def expression(key: str, dim: int, refs: References | None) -> tuple[str, int]:
    """(phi of a row in SQL, its dimension) under `key` with constants from `refs`."""
    template, widen = _EXPRESSIONS[key]
    mean = "" if refs is None else _literal(refs.mean, dim)
    inverse = "" if refs is None or refs.within_var is None else _literal(1.0 / _whitening_scale(refs), dim)
    return (template.format(Z=f"z::vector({dim})", V=f"z_var::vector({dim})", T=f"task_z::vector({dim})", M=mean, W=inverse),
            widen * dim)


def predicate(space_id: str, key: str) -> str:
    """The rows of a space that `key` can map: the index's partial predicate, and the query's."""
    if not _SPACE_ID.fullmatch(space_id):
        raise StoreError(f"not a representation space id: {space_id!r}")
    needs = get_key(key)
    return (f"space_id = '{space_id}'" + (" AND z_var IS NOT NULL" if needs.needs_var else "")
            + (" AND task_z IS NOT NULL" if needs.needs_task else ""))


def lacking(conn, space_id: str, key: str) -> int:
    """The space's rows lacking what `key` reads (through the partial indexes on the NULLs)."""
    needs = get_key(key)
    nulls = [c for c, needed in (("z_var", needs.needs_var), ("task_z", needs.needs_task)) if needed]
    if not nulls:
        return 0
    return conn.execute(f"SELECT count(*) FROM records WHERE space_id = %s AND ({' OR '.join(f'{c} IS NULL' for c in nulls)})",
                        (space_id,)).fetchone()[0]


def entry(store, space_id: str, key: str) -> dict | None:
    """The settings row of the space's index under `key` (None: never built)."""
    stored = store.setting(f"{SETTING}{space_id}:{key}")
    return json.loads(stored) if stored else None


def _valid(conn, name: str) -> bool:
    row = conn.execute("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = %s",
                       (name,)).fetchone()
    return bool(row and row[0])


def _inputs(rows, key: str, first: int) -> KeyInputs:
    """KeyInputs of rows holding vector_send(z), vector_send(z_var), vector_send(task_z) from
    column `first` on: only what `key` reads is unpacked."""
    needs = get_key(key)

    def column(i: int, needed: bool = True):
        return np.stack([unpack_vector(r[first + i]) for r in rows]) if needed else None

    return KeyInputs.of(column(0), column(1, needs.needs_var), column(2, needs.needs_task))


def _rows(conn, space_id: str, key: str):
    """KeyInputs of the space's rows `key` can map, a chunk at a time."""
    sql = f"SELECT vector_send(z), vector_send(z_var), vector_send(task_z) FROM records WHERE {predicate(space_id, key)}"
    for rows in server_chunks(conn, sql):
        yield _inputs(rows, key, 0)


def build(store, space_id: str, key: str, dim: int, max_dim: int) -> dict:
    """Build the space's index under `key` now (CREATE INDEX CONCURRENTLY: writers go on),
    record it in the settings, drop the one it replaces; returns its settings row. `max_dim`:
    the widest vector pgvector's HNSW indexes."""
    reads_references = get_key(key).reads_references
    refs, counted = References.streamed(_rows(store.conn, space_id, key)) if reads_references else (None, 0)
    if reads_references and refs is None:
        raise StoreError(f"no record of space {space_id} has what retrieval key {key} reads")
    expr, width = expression(key, dim, refs)
    if width > max_dim:
        raise StoreError(f"retrieval key {key} maps this space to {width} dimensions, past pgvector's HNSW limit of "
                         f"{max_dim}: its searches stay exact")
    where = predicate(space_id, key)
    name = "records_key_" + hashlib.sha256(f"{where}|{expr}".encode()).hexdigest()[:20]
    store.conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON records USING hnsw "
                       f"((({expr})::vector({width})) vector_l2_ops) WHERE {where}")
    if not _valid(store.conn, name):  # a concurrent build that failed leaves an invalid index
        store.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        raise StoreError(f"building index {name} of space {space_id} under {key} failed; try again")
    old = entry(store, space_id, key)
    row = {"name": name, "expression": expr, "predicate": where, "width": width, "space_dim": dim,
           "refs": None if refs is None else {"records": counted, **refs.to_json()}}
    store.set_setting(f"{SETTING}{space_id}:{key}", json.dumps(row))
    if old and old["name"] != name:
        store.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {old['name']}")
    return row


def usable(conn, found: dict | None, dim: int) -> bool:
    """An index that a search can walk: recorded, built for this dimension, and valid."""
    return found is not None and found["space_dim"] == dim and _valid(conn, found["name"])


def needs_build(conn, found: dict | None, size: int, dim: int) -> bool:
    """No usable index, or one whose references have drifted."""
    return not usable(conn, found, dim) or snapshot_drifted(found["refs"] if found else None, size)


def build_in_background(store, space_id: str, key: str) -> None:
    """Start a process that builds the space's index under `key`, at most once per
    BUILD_BACKOFF_SECONDS from this process (the builder itself refuses a second build at
    once through an advisory lock)."""
    started = (store.url, space_id, key)
    if time.time() - _STARTED.get(started, 0.0) < BUILD_BACKOFF_SECONDS:
        return
    _STARTED[started] = time.time()
    subprocess.Popen([sys.executable, "-m", "loradb.db.store.pg_key_worker", space_id, key],
                     env={**os.environ, URL_ENV: store.url}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def search(store, space_id: str, key: str, found: dict, target: KeyInputs, k: int, rerank: int, walk_settings) -> KeySearch | None:
    """The k nearest through the index, re-ranked exactly under its References; None when the
    walk returned fewer rows than asked (the caller scans exactly)."""
    refs = None if found["refs"] is None else References.from_json(found["refs"])
    q = key_map(key, target, refs)[0]
    width = found["width"]
    with store.conn.pipeline(), store.conn.transaction():
        store.conn.execute(*walk_settings)
        cursor = store.conn.execute(
            f"SELECT id, vector_send(z), vector_send(z_var), vector_send(task_z) FROM records WHERE {found['predicate']} "
            f"ORDER BY ({found['expression']})::vector({width}) <-> %s::vector({width}) LIMIT %s",
            (vector_literal(q), rerank))
    rows = cursor.fetchall()
    if len(rows) < k:
        return None
    d2 = ((key_map(key, _inputs(rows, key, 1), refs) - q) ** 2).sum(axis=1)
    order = np.lexsort(([r[0] for r in rows], d2))[:k]
    return KeySearch([SearchHit(rows[i][0], float(d2[i])) for i in order], refs, lacking(store.conn, space_id, key))


def status(store, space_id: str, key: str, size: int, dim: int, exact_below: int) -> dict:
    """One key index's state, as `loradb index status` shows it."""
    found = entry(store, space_id, key)
    row: dict = {"space": space_id, "key": key, "records": size, "search": "hnsw" if size >= exact_below else "exact",
                 "index": None, "graph": "absent", "bytes": 0}
    if found is not None:
        valid = _valid(store.conn, found["name"])
        size_row = store.conn.execute("SELECT pg_relation_size(%s::regclass)", (found["name"],)).fetchone() if valid else None
        stale = found["space_dim"] != dim or snapshot_drifted(found["refs"], size)
        row.update(index=found["name"], bytes=int(size_row[0]) if size_row else 0,
                   graph=("needs build" if stale else "ready") if valid else "absent")
    if row["search"] == "hnsw" and row["graph"] == "absent":
        row["search"] = "exact (until the index is built)"
    return row


def keys_indexed(store, space_id: str) -> list[str]:
    """The keys with an index row for this space."""
    rows = store.conn.execute("SELECT key FROM settings WHERE key LIKE %s ORDER BY key", (f"{SETTING}{space_id}:%",)).fetchall()
    return [r[0].split(":", 2)[2] for r in rows]
