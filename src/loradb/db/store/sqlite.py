"""The embedded index: one SQLite file with records, their spaces and representations.

The schema lives in numbered migrations applied in order (PRAGMA user_version holds the
number applied). Exact nearest-neighbour search ranks the vectors of one space with numpy; the
vectors are cached per process and reloaded when the database's generation counter
(bumped by every write) moves. Ties are broken by record id so results are deterministic.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from loradb.errors import StoreError
from loradb.db.store import ann, graphs
from loradb.db.store.migrations import portable_base_names
from loradb.db.store.protocol import KeySearch, Record, SearchHit
from loradb.db.store.sqlshared import ROWS_PER_CHUNK, SharedStatements
from loradb.retrieval.keys import RAW_L2, KeyInputs

MIGRATIONS: list[str | Callable] = [
    # 1: records, the representation spaces they live in
    """
    CREATE TABLE spaces (
        id TEXT PRIMARY KEY,
        base_name TEXT NOT NULL,
        base_fingerprint TEXT NOT NULL,
        recipe TEXT NOT NULL,
        dim INTEGER NOT NULL
    );
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        base_name TEXT NOT NULL,
        base_fingerprint TEXT NOT NULL,
        space_id TEXT NOT NULL REFERENCES spaces(id),
        z BLOB NOT NULL,
        n_samples INTEGER,
        rank INTEGER NOT NULL,
        target_modules TEXT NOT NULL,
        adapter_config TEXT NOT NULL,
        meta TEXT NOT NULL,
        blob_sha256 TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX records_space ON records(space_id);
    CREATE INDEX records_base ON records(base_fingerprint);
    CREATE INDEX records_blob ON records(blob_sha256);
    """,
    # 2: the shared service: who contributed a record, the privacy of its z, access tokens
    """
    ALTER TABLE records ADD COLUMN owner TEXT;
    ALTER TABLE records ADD COLUMN privacy TEXT;
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL,
        revoked TEXT
    );
    CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    -- from a random point: a database made again at the same path must not match what a
    -- process cached of the one before it (caches are keyed by path and generation)
    INSERT INTO state VALUES ('generation', abs(random() % 281474976710656));
    """,
]
MIGRATIONS.append(
    # 3: where the blobs live when not in the database directory (e.g. s3://bucket/prefix)
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
)
MIGRATIONS.append(
    # 4: seq, a per-record number never reused (the approximate index's keys); the generation
    # counter moves past every existing rowid so new seq values are fresh
    """
    ALTER TABLE records ADD COLUMN seq INTEGER;
    UPDATE records SET seq = rowid;
    UPDATE state SET value = max(value, (SELECT coalesce(max(rowid), 0) FROM records)) WHERE key = 'generation';
    CREATE INDEX records_space_seq ON records(space_id, seq, id);  -- covers seq -> id lookups
    """
)
MIGRATIONS.append(
    # 5: what retrieval keys other than raw L2 read (retrieval/keys.py): the data's per-feature variance,
    # the task it was trained for and that task's embedding; NULL for older records
    """
    ALTER TABLE records ADD COLUMN z_var BLOB;
    ALTER TABLE records ADD COLUMN task TEXT;
    ALTER TABLE records ADD COLUMN task_z BLOB;
    """
)
MIGRATIONS.append(
    # 6: the catalogue's table pages newest first (db/catalogue.py)
    "CREATE INDEX records_created ON records(created, id);"
)
MIGRATIONS.append(
    # 7: base models named portably (a hub id, a packaged name), not by a machine-local path
    portable_base_names
)
MIGRATIONS.append(
    # 8: records added without their data (imported adapters) live in a space of dimension 0 that
    # searches never read; the version moves so that an older loradb, which would take such a
    # space for a space of vectors, refuses the database instead
    "CREATE INDEX IF NOT EXISTS spaces_dim ON spaces(dim);"
)
# bumped inside every transaction that adds or deletes records: caches of the vectors
# compare it to know they are current, across connections and processes
_BUMP = "UPDATE state SET value = value + 1 WHERE key = 'generation'"

METRICS = ("l2", "cosine")
_VECTOR_CACHE: dict[tuple[str, str], tuple] = {}  # (database file, space id) -> (generation, ids, Z, |Z|)
_CACHE_LOCK = threading.Lock()
_COLUMNS = ("id, name, base_name, base_fingerprint, space_id, z, n_samples, rank, target_modules, "
            "adapter_config, meta, blob_sha256, created, owner, privacy, z_var, task, task_z")


def _blob_or_none(v: np.ndarray | None) -> bytes | None:
    return None if v is None else np.ascontiguousarray(v, dtype="<f4").tobytes()


def _unpack_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").copy()


def _vector_or_none(b: bytes | None) -> np.ndarray | None:
    return None if b is None else _unpack_vector(b)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)  # explicit transactions below
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
    conn.execute("PRAGMA foreign_keys=ON")
    # Unicode-aware lower() for the catalogue's text filter (SQLite's own folds ASCII only)
    conn.create_function("loradb_lower", 1, lambda v: v.lower() if isinstance(v, str) else v, deterministic=True)
    return conn


def migrate(conn: sqlite3.Connection, lock=None) -> int:
    """Apply pending migrations; returns the schema version now in force.

    `lock` (the database's writer lock) is held while migrating, and the version read again
    under it: two processes opening an old database at once would otherwise both see it old
    and the second apply a migration the first had applied (and fail on it)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"this database has schema version {version}, newer than this loradb ({len(MIGRATIONS)}); upgrade loradb")
    if version == len(MIGRATIONS):
        return version
    with lock() if lock is not None else nullcontext():
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
        for number in range(version + 1, len(MIGRATIONS) + 1):
            step = MIGRATIONS[number - 1]
            if isinstance(step, str):
                conn.executescript(f"BEGIN IMMEDIATE; {step}; PRAGMA user_version = {number}; COMMIT;")
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                step(conn, "?")
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    return len(MIGRATIONS)


class SqliteIndex(SharedStatements):
    """Records and spaces in `root/index.sqlite`; writers lock `root/LORADB`."""

    COLUMNS = _COLUMNS
    # the catalogue's filters: SQLite's own lower() folds ASCII only, so a non-ASCII filter goes
    # through loradb_lower (Python's str.lower, registered by connect)
    META_EQUALS = "EXISTS (SELECT 1 FROM json_each(records.meta) WHERE key = ? AND CAST(value AS TEXT) = ?)"
    META_VALUE_LIKE = "EXISTS (SELECT 1 FROM json_each(records.meta) WHERE {value} LIKE ? ESCAPE '!')"
    META_VALUE = "CAST(value AS TEXT)"
    UNICODE_LOWER = "loradb_lower({})"
    Z_COLUMN = "z"
    KEY_COLUMNS = "z, z_var, task_z"
    CODEPOINT_NAME = "name"  # SQLite's BINARY collation compares UTF-8 bytes: code-point order
    FILE = "index.sqlite"
    MARKER = "LORADB"  # marks the directory as a loradb database; also the writers' lock file

    def __init__(self, root: Path, *, ann_min_records: int | None = None):
        from loradb.db.store.ann import ANN_MIN_RECORDS

        self.root = Path(root)
        self.path = self.root / self.FILE
        self.conn = connect(self.path)
        # spaces this large are searched through the approximate graph (ann.py), exactly re-ranked
        self.ann_min_records = ann_min_records or int(os.environ.get("LORADB_ANN_MIN_RECORDS", ANN_MIN_RECORDS))

    @contextmanager
    def write_lock(self):
        """Exclusive among writers in every process (flock on the marker file)."""
        with open(self.root / self.MARKER, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.conn.close()

    def connection_lost(self) -> bool:
        return False  # a file: nothing to lose

    def _vector(self, raw: bytes) -> np.ndarray:
        return _unpack_vector(raw)

    def _chunks(self, sql: str, params: tuple) -> Iterator[list]:
        cursor = self.conn.execute(sql, params)
        try:
            while rows := cursor.fetchmany(ROWS_PER_CHUNK):
                yield rows
        finally:
            cursor.close()  # a cursor left open would hold its read snapshot

    def _row(self, row) -> Record:
        return Record(
            id=row[0], name=row[1], base_name=row[2], base_fingerprint=row[3], space=self._space_recipe(row[4]),
            z=self._vector(row[5]), n_samples=row[6], rank=row[7],
            target_modules=json.loads(row[8]), adapter_config=json.loads(row[9]), meta=json.loads(row[10]),
            blob_sha256=row[11], created=row[12], owner=row[13], privacy=json.loads(row[14]) if row[14] else None,
            var=_vector_or_none(row[15]), task=json.loads(row[16]) if row[16] else None, task_z=_vector_or_none(row[17]),
        )

    def insert(self, record: Record) -> None:
        """Insert a record (and its space if new) in one transaction."""
        self.insert_many([record])

    def insert_many(self, records: list[Record]) -> None:
        """Insert records (and their spaces if new) in one transaction: all or none."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            first = c.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()[0] + 1
            c.execute("UPDATE state SET value = value + ? WHERE key = 'generation'", (len(records),))
            for seq, record in enumerate(records, start=first):
                z = np.ascontiguousarray(record.z, dtype="<f4")
                c.execute("INSERT OR IGNORE INTO spaces (id, base_name, base_fingerprint, recipe, dim) VALUES (?, ?, ?, ?, ?)",
                          (record.space_id, record.base_name, record.base_fingerprint, json.dumps(record.space), int(z.shape[0])))
                c.execute(f"INSERT INTO records ({_COLUMNS}, seq) VALUES ({', '.join('?' * 19)})",
                          (record.id, record.name, record.base_name, record.base_fingerprint, record.space_id, z.tobytes(),
                           record.n_samples, record.rank, json.dumps(record.target_modules), json.dumps(record.adapter_config),
                           json.dumps(record.meta), record.blob_sha256, record.created, record.owner,
                           json.dumps(record.privacy) if record.privacy else None, _blob_or_none(record.var),
                           json.dumps(record.task) if record.task else None, _blob_or_none(record.task_z), seq))
            c.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            c.execute("ROLLBACK")
            raise StoreError(f"cannot add record {records[0].name if len(records) == 1 else 'batch'!r}: {e}") from None
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def all(self) -> list[Record]:
        return [self._row(r) for r in self.conn.execute(f"SELECT {_COLUMNS} FROM records ORDER BY created, id")]

    def page(self, offset: int, limit: int) -> list[Record]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records ORDER BY created, id LIMIT ? OFFSET ?", (limit, offset))
        return [self._row(r) for r in rows]

    def all_for_base(self, base_fingerprint: str, limit: int) -> list[Record]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records WHERE base_fingerprint = ? LIMIT ?",
                                 (base_fingerprint, limit))
        return [self._row(r) for r in rows]

    def delete(self, record_id: str) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(_BUMP)
            c.execute("DELETE FROM records WHERE id = ?", (record_id,))
            c.execute("DELETE FROM spaces WHERE id NOT IN (SELECT DISTINCT space_id FROM records)")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def spaces(self, with_counts: bool = True) -> list[dict]:
        """Every space of data summaries with its recipe, base name and (unless not wanted: it costs
        a scan) record count; not the spaces of records without data (protocol.no_data_space)."""
        sizes = self.space_sizes() if with_counts else {}
        rows = self.conn.execute("SELECT id, recipe, base_name FROM spaces WHERE dim > 0 ORDER BY id").fetchall()
        return [{**json.loads(recipe), "base_name": base, "records": sizes.get(sid, 0) if with_counts else None}
                for sid, recipe, base in rows]

    def _vectors(self, space_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids sorted, Z float64, row norms) of a space, from the process-wide cache if current."""
        key = (str(self.path.resolve()), space_id)
        generation = self.generation()
        with _CACHE_LOCK:
            cached = _VECTOR_CACHE.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1:]
        rows = self.conn.execute("SELECT id, z FROM records WHERE space_id = ? ORDER BY id", (space_id,)).fetchall()
        ids = [r[0] for r in rows]
        Z = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1).astype(np.float64)
        entry = (generation, ids, Z, np.linalg.norm(Z, axis=1))
        with _CACHE_LOCK:
            _VECTOR_CACHE[key] = entry
        return entry[1:]

    def nearest(self, space_id: str, z: np.ndarray, k: int, metric: str = "l2") -> list[SearchHit]:
        """The k records of a space closest to z: squared L2, or cosine distance (1 - cos).

        Squared L2 is screened as |Z|^2 - 2 Zq + |q|^2 (one matrix-vector product), then
        every candidate within that formula's rounding bound of the k-th is re-scored as
        sum((Z_i - q)^2): the result is the exact ranking, at the cost of the fast one.
        """
        if metric not in METRICS:
            raise StoreError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        q = np.asarray(z, dtype=np.float64)
        if metric == "l2" and self.space_sizes().get(space_id, 0) >= self.ann_min_records:
            return self._nearest_by_graph(space_id, q, k)
        return self._nearest_exact(space_id, q, k, metric)

    def _nearest_exact(self, space_id: str, q: np.ndarray, k: int, metric: str) -> list[SearchHit]:
        ids, Z, row_norms = self._vectors(space_id)
        if not ids:
            return []
        if metric == "l2":
            qq = float(q @ q)
            sqnorms = row_norms ** 2
            fast = sqnorms - 2.0 * (Z @ q) + qq
            kth = np.partition(fast, min(k, len(ids)) - 1)[min(k, len(ids)) - 1]
            slack = 4 * (Z.shape[1] + 2) * np.finfo(np.float64).eps * (float(sqnorms.max()) + qq)
            candidates = np.flatnonzero(fast <= kth + 2 * slack)
            dist = ((Z[candidates] - q) ** 2).sum(axis=1)
        else:
            candidates = np.arange(len(ids))
            norms = row_norms * np.linalg.norm(q)
            dist = 1.0 - (Z @ q) / np.where(norms > 0, norms, 1.0)
        order = np.lexsort((candidates, dist))[:k]  # by distance, then id (rows are id-sorted)
        return [SearchHit(ids[candidates[i]], float(dist[i])) for i in order]

    def space_sizes(self) -> dict[str, int]:
        """Records per space, recounted only when the generation moved (cached per process)."""
        key = (str(self.path.resolve()), "sizes")
        generation = self.generation()
        with _CACHE_LOCK:
            cached = _VECTOR_CACHE.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        sizes = dict(self.conn.execute("SELECT space_id, count(*) FROM records GROUP BY space_id").fetchall())
        with _CACHE_LOCK:
            _VECTOR_CACHE[key] = (generation, sizes)
        return sizes

    def _nearest_by_graph(self, space_id: str, q: np.ndarray, k: int) -> list[SearchHit]:
        """Through the space's graph, exactly re-ranked; a graph that needs work is refreshed
        in the background (graphs.py) while this search answers from what there is: exactly,
        until a graph of this dimension exists."""
        graph = graphs.graph_file(self.root, space_id)
        loaded = ann.load(graph)
        if graphs.plan(self.conn, space_id, loaded, self.space_sizes()[space_id], q.shape[0]) is not None:
            graphs.refresh_in_background(self.root, space_id)
        if loaded is None or loaded[1]["dim"] != q.shape[0]:
            return self._nearest_exact(space_id, q, k, "l2")
        index, meta = loaded
        return graphs.search(self.conn, space_id, index, meta, q, k)

    def nearest_by_key(self, space_id: str, key: str, target: KeyInputs, k: int) -> KeySearch | None:
        """The k records of a large space nearest to `target` under `key` (not raw-l2), through
        the key's graph (graphs.search_key); None when the space is searched exactly: below
        LORADB_ANN_MIN_RECORDS, or its graph is not built yet (a background build is started)."""
        size = self.space_sizes().get(space_id, 0)
        if size < self.ann_min_records:
            return None
        dim = self._space_dims()[space_id]
        graph = graphs.graph_file(self.root, space_id, key)
        loaded = ann.load(graph)
        if graphs.plan(self.conn, space_id, loaded, size, dim) is not None:
            graphs.refresh_in_background(self.root, space_id, key)
        if loaded is None or graphs._space_dim(loaded[1]) != dim:
            return None
        return graphs.search_key(self.conn, space_id, key, loaded[0], loaded[1], target, k)

    def _space_dims(self) -> dict[str, int]:
        """The spaces of vectors (a space of records without data has nothing to index)."""
        return dict(self.conn.execute("SELECT id, dim FROM spaces WHERE dim > 0").fetchall())

    def build_index(self, space_id: str | None = None, *, wait: bool = True, keys: tuple[str, ...] = (RAW_L2,)) -> list[dict]:
        """Build or bring up to date, here and now, the graphs for `keys` of `space_id`
        (default: every space large enough to be searched through one, LORADB_ANN_MIN_RECORDS);
        returns their index status. A build another process is running is waited for
        (`wait`), else ann.BuildRunning."""
        sizes, dims = self.space_sizes(), self._space_dims()
        if space_id is not None and space_id not in dims:
            raise StoreError(f"no representation space {space_id} in this database")
        chosen = [space_id] if space_id is not None else sorted(s for s in dims if sizes.get(s, 0) >= self.ann_min_records)
        for sid in chosen:  # a space named explicitly is built whatever its size
            for key in keys if sizes.get(sid, 0) > 0 else ():
                graphs.refresh(self.root, self.conn, sid, sizes[sid], dims[sid], wait=wait, key=key)
        return [row for row in self.index_status() if space_id in (None, row["space"])]

    def index_status(self) -> list[dict]:
        """Each space's search path and graph state, and that of its key graphs on disk (see graphs.status)."""
        sizes, dims = self.space_sizes(), self._space_dims()
        return [graphs.status(self.root, self.conn, sid, sizes.get(sid, 0), dims[sid], self.ann_min_records, key)
                for sid in sorted(dims) for key in (RAW_L2, *graphs.key_graphs(self.root, sid))]

    def stale_files(self) -> list[Path]:
        """Index files no space needs any more (graphs of removed spaces, unfinished saves)."""
        return graphs.stale_files(self.root, set(self._space_dims()))

    def integrity_problems(self) -> list[str]:
        result = self.conn.execute("PRAGMA integrity_check").fetchall()
        return [] if result == [("ok",)] else [f"sqlite: {r[0]}" for r in result]

