"""The index on PostgreSQL with pgvector: the same records, spaces and tokens as the embedded
store, every write in a transaction, writers serialised by an advisory lock.

Vectors are stored as `vector` (any dimension); each dimension up to pgvector's HNSW limit
gets a partial expression index, HNSW over z::vector(dim) WHERE dim = dim, made when the
first space of that dimension arrives. Searches of small spaces are exact; larger ones
walk the HNSW index (iterative scan in strict order, so the space filter cannot starve it),
fetch only its nearest few neighbours and re-rank them exactly in float64, ties broken by
id as in the embedded store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from loradb.errors import StoreError, Unavailable
from loradb.db.store import pgkeys
from loradb.db.store.migrations import portable_base_names
from loradb.db.store.pgtypes import server_chunks, unpack_vector, vector_literal
from loradb.db.store.protocol import KeySearch, Record, SearchHit
from loradb.db.store.sqlshared import SharedStatements
from loradb.retrieval.keys import RAW_L2, KeyInputs, snapshot_drifted

MIGRATIONS: list[str | Callable] = [
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE spaces (
        id TEXT PRIMARY KEY,
        base_name TEXT NOT NULL,
        base_fingerprint TEXT NOT NULL,
        recipe JSONB NOT NULL,
        dim INTEGER NOT NULL
    );
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        base_name TEXT NOT NULL,
        base_fingerprint TEXT NOT NULL,
        space_id TEXT NOT NULL REFERENCES spaces(id),
        dim INTEGER NOT NULL,
        z vector NOT NULL,
        n_samples INTEGER,
        rank INTEGER NOT NULL,
        target_modules JSONB NOT NULL,
        adapter_config JSONB NOT NULL,
        meta JSONB NOT NULL,
        blob_sha256 TEXT NOT NULL,
        created TEXT NOT NULL,
        owner TEXT,
        privacy JSONB
    );
    CREATE INDEX records_space ON records(space_id);
    CREATE INDEX records_base ON records(base_fingerprint);
    CREATE INDEX records_blob ON records(blob_sha256);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL UNIQUE,
        created TEXT NOT NULL,
        revoked TEXT
    );
    CREATE TABLE state (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    -- from a random point: a database made again at the same URL must not match what a
    -- process cached of the one before it (caches are keyed by location and generation)
    INSERT INTO state VALUES ('generation', floor(random() * 281474976710656)::bigint);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: what retrieval keys other than raw L2 read (retrieval/keys.py); NULL for older records
    """
    ALTER TABLE records ADD COLUMN z_var vector;
    ALTER TABLE records ADD COLUMN task JSONB;
    ALTER TABLE records ADD COLUMN task_z vector;
    """,
    # 3: z kept in the row (pgvector's type is stored out of line once a row passes 2 KB, and an
    # exact search then read every vector through TOAST: 38 -> 13 ms at 3,000 records). Rows
    # written before keep their layout until rewritten (VACUUM FULL records).
    """
    ALTER TABLE records ALTER COLUMN z SET STORAGE MAIN;
    """,
    # 4: the catalogue's table pages newest first (db/catalogue.py)
    """
    CREATE INDEX records_created ON records(created, id);
    """,
    # 5: what the retrieval keys' indexes need (pgkeys.py): an element-wise square root of a vector
    # for the frechet key, and the rows lacking variance or task found without reading the table
    """
    CREATE FUNCTION loradb_sqrt(v vector) RETURNS vector IMMUTABLE STRICT PARALLEL SAFE LANGUAGE SQL
        SET search_path FROM CURRENT  -- an index build runs it with a search path that lacks pgvector's schema
        AS $$ SELECT array_agg(sqrt(greatest(x, 0)) ORDER BY i)::vector FROM unnest(v::real[]) WITH ORDINALITY AS t(x, i) $$;
    CREATE INDEX records_no_var ON records(space_id) WHERE z_var IS NULL;
    CREATE INDEX records_no_task ON records(space_id) WHERE task_z IS NULL;
    """,
]
MIGRATIONS.append(portable_base_names)  # base models named portably, not by a machine-local path
# 8: records added without their data (imported adapters) have no z: pgvector has no empty vector
MIGRATIONS.append("ALTER TABLE records ALTER COLUMN z DROP NOT NULL;")

HNSW_MAX_DIM = 2000  # pgvector indexes vectors up to this many dimensions
EXACT_BELOW = 20_000  # spaces smaller than this are searched exactly
# HNSW search breadth of a large space: the graph walk keeps max(EF_SEARCH, CANDIDATES_PER_RESULT * k)
# neighbours (hnsw.ef_search, at most pgvector's EF_SEARCH_MAX); the nearest RERANK_PER_RESULT * k
# of them by pgvector's float32 distance (at least RERANK_MIN) are fetched and re-ranked exactly in
# float64. Chosen by the settings sweep of benchmarks/retrieval_scale.py at 1M records
# (docs/scaling.md): only the fetched rows cost much, so a wide walk is cheap.
EF_SEARCH, CANDIDATES_PER_RESULT = 800, 80  # recall@10 0.974 at 1M, p50 12.3 ms (ef_search 200: 0.904)
EF_SEARCH_MAX = 1000
RERANK_MIN, RERANK_PER_RESULT = 40, 4
WRITE_LOCK = 0x10AD_DB  # advisory lock key shared by every loradb writer of a database
_COLUMNS = ("id, name, base_name, base_fingerprint, space_id, vector_send(z), n_samples, rank, target_modules, "
            "adapter_config, meta, blob_sha256, created, owner, privacy, vector_send(z_var), task, vector_send(task_z)")
_BUMP = "UPDATE state SET value = value + 1 WHERE key = 'generation'"


def _hnsw_index_sql(dim: int) -> str:
    """The HNSW index of one vector dimension: a partial expression index over z::vector(dim)."""
    return (f"CREATE INDEX IF NOT EXISTS records_hnsw_{dim} ON records USING hnsw "
            f"((z::vector({dim})) vector_l2_ops) WHERE dim = {dim}")


def _connect(url: str):
    try:
        import psycopg
    except ImportError:
        raise StoreError("PostgreSQL needs psycopg: pip install 'loradb[scale]'") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise Unavailable(f"cannot connect to {_safe(url)} ({str(e).strip().splitlines()[0]})") from None
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to {_safe(url)} ({str(e).strip().splitlines()[0]})") from None


def lost_connection(e: BaseException) -> bool:
    """Whether e is psycopg's "the server went away" (a restart, a network fault): the
    connection is unusable, and the same request may succeed on a new one."""
    import sys

    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(e, psycopg.OperationalError)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    return (head.split(":", 2)[0] + ":" + head.split(":", 2)[1] + ":***@" + tail) if at and head.count(":") >= 2 else url


# collations whose lower() maps all of Unicode's letters (PostgreSQL 18's, 17's built-in, ICU's), best first
UNICODE_COLLATIONS = ("pg_unicode_fast", "pg_c_utf8", "und-x-icu")


class PgIndex(SharedStatements):
    """Records, spaces and tokens in a PostgreSQL database."""

    COLUMNS = _COLUMNS
    PARAM = "%s"
    META_EQUALS = "meta ->> ? = ?"
    META_VALUE_LIKE = "EXISTS (SELECT 1 FROM jsonb_each_text(records.meta) WHERE {value} LIKE ? ESCAPE '!')"
    META_VALUE = "value"
    # PostgreSQL's lower() follows the database's locale, which folds ASCII only under C or
    # POSIX: a Unicode collation is used where the server has one (_unicode_lower)
    UNICODE_LOWER: str | None = "lower({})"
    Z_COLUMN = "vector_send(z)"
    KEY_COLUMNS = "vector_send(z), vector_send(z_var), vector_send(task_z)"
    CODEPOINT_NAME = 'name COLLATE "C"'  # the database's own collation may be a locale's

    def _vector(self, raw) -> np.ndarray:
        return np.zeros(0, dtype=np.float32) if raw is None else unpack_vector(raw)  # NULL: a record without data

    def _chunks(self, sql: str, params: tuple) -> Iterator[list]:
        return server_chunks(self.conn, sql, params)

    def _unicode_lower(self) -> str | None:
        """lower() of an expression with Unicode case mapping whatever the database's locale: under
        a Unicode collation the server has (the built-in ones of PostgreSQL 17+, or ICU's), else
        the locale's own lower() when it is not C/POSIX, else None: such filters are refused."""
        names = [r[0] for r in self.conn.execute(
            "SELECT collname FROM pg_collation WHERE collname = ANY(%s) AND collencoding IN (-1, "
            "pg_char_to_encoding(current_setting('server_encoding')))", (list(UNICODE_COLLATIONS),)).fetchall()]
        for name in UNICODE_COLLATIONS:
            if name in names:
                return f'lower(({{}}) COLLATE "{name}")'
        ctype = self.conn.execute("SELECT datctype FROM pg_database WHERE datname = current_database()").fetchone()[0]
        if str(ctype).upper() not in ("C", "POSIX"):
            return "lower({})"
        return None

    def __init__(self, url: str):
        self.url = url
        self._sizes: tuple[int, dict[str, int]] | None = None  # (generation, records per space)
        self.conn = _connect(url)
        try:
            version = self._version()
            if version is None:
                raise StoreError(f"{_safe(url)} is not a loradb database; create one with `loradb init URL --blobs s3://...`")
            if version > len(MIGRATIONS):
                raise StoreError(f"this database has schema version {version}, newer than this loradb ({len(MIGRATIONS)})")
            self._migrate(version)
            self.UNICODE_LOWER = self._unicode_lower()
        except BaseException:
            self.conn.close()
            raise

    @classmethod
    def create(cls, url: str, blobs: str) -> None:
        conn = _connect(url)
        try:
            if cls._version_of(conn) is not None:
                raise StoreError(f"{_safe(url)} is already a loradb database")
            if conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()[0]:
                raise StoreError(f"{_safe(url)} already holds tables; give loradb a database of its own")
            with conn.transaction():
                conn.execute("CREATE TABLE loradb_schema (version INTEGER NOT NULL)")
                conn.execute("INSERT INTO loradb_schema VALUES (0)")
        finally:
            conn.close()
        index = cls(url)
        index.set_setting("blobs", blobs)
        index.close()

    @staticmethod
    def _version_of(conn) -> int | None:
        exists = conn.execute("SELECT to_regclass('public.loradb_schema')").fetchone()[0]
        return None if exists is None else conn.execute("SELECT version FROM loradb_schema").fetchone()[0]

    def _version(self) -> int | None:
        return self._version_of(self.conn)

    def _migrate(self, version: int) -> None:
        for number in range(version + 1, len(MIGRATIONS) + 1):
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                current = self._version()  # not None: __init__ found the schema table
                if current is not None and current >= number:  # another process migrated meanwhile
                    continue
                step = MIGRATIONS[number - 1]
                if isinstance(step, str):
                    self.conn.execute(step)
                else:
                    step(self.conn, "%s")
                self.conn.execute("UPDATE loradb_schema SET version = %s", (number,))

    def connection_lost(self) -> bool:
        """True once the server closed or lost this connection: open a new PgIndex."""
        return bool(self.conn.broken or self.conn.closed)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write_lock(self):
        self.conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        try:
            yield
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))

    def setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM settings WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO settings VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                          (key, value))

    # ---- records -----------------------------------------------------------------------

    def _row(self, row) -> Record:
        return Record(id=row[0], name=row[1], base_name=row[2], base_fingerprint=row[3],
                      space=self._space_recipe(row[4]), z=self._vector(row[5]), n_samples=row[6], rank=row[7],
                      target_modules=row[8], adapter_config=row[9], meta=row[10], blob_sha256=row[11], created=row[12],
                      owner=row[13], privacy=row[14], var=unpack_vector(row[15]) if row[15] else None, task=row[16],
                      task_z=unpack_vector(row[17]) if row[17] else None)

    def insert(self, record: Record) -> None:
        self.insert_many([record])

    def insert_many(self, records: list[Record]) -> None:
        """Insert records (and their spaces if new) in one transaction: all or none."""
        import psycopg
        from psycopg.types.json import Jsonb

        try:
            with self.conn.transaction():
                for record in records:
                    dim = int(record.z.shape[0])
                    self.conn.execute(
                        "INSERT INTO spaces (id, base_name, base_fingerprint, recipe, dim) VALUES (%s, %s, %s, %s, %s) "
                        "ON CONFLICT (id) DO NOTHING",
                        (record.space_id, record.base_name, record.base_fingerprint, Jsonb(record.space), dim))
                    if 0 < dim <= HNSW_MAX_DIM:  # a record without data (dim 0) has no vector to index
                        self.conn.execute(_hnsw_index_sql(dim))
                    self.conn.execute(_BUMP)
                    self.conn.execute(
                        "INSERT INTO records (id, name, base_name, base_fingerprint, space_id, dim, z, n_samples, rank, "
                        "target_modules, adapter_config, meta, blob_sha256, created, owner, privacy, z_var, task, task_z) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s::vector, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::vector, %s, %s::vector)",
                        (record.id, record.name, record.base_name, record.base_fingerprint, record.space_id, dim,
                         vector_literal(record.z) if dim else None, record.n_samples, record.rank, Jsonb(record.target_modules),
                         Jsonb(record.adapter_config), Jsonb(record.meta), record.blob_sha256, record.created, record.owner,
                         Jsonb(record.privacy) if record.privacy else None,
                         None if record.var is None else vector_literal(record.var), Jsonb(record.task) if record.task else None,
                         None if record.task_z is None else vector_literal(record.task_z)))
        except psycopg.errors.UniqueViolation as e:
            raise StoreError(f"cannot add record {records[0].name if len(records) == 1 else 'batch'!r}: "
                             f"{str(e).splitlines()[0]}") from None

    def all(self) -> list[Record]:
        return [self._row(r) for r in self.conn.execute(f"SELECT {_COLUMNS} FROM records ORDER BY created, id").fetchall()]

    def page(self, offset: int, limit: int) -> list[Record]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records ORDER BY created, id LIMIT %s OFFSET %s", (limit, offset))
        return [self._row(r) for r in rows.fetchall()]

    def all_for_base(self, base_fingerprint: str, limit: int) -> list[Record]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records WHERE base_fingerprint = %s LIMIT %s", (base_fingerprint, limit))
        return [self._row(r) for r in rows.fetchall()]

    def delete(self, record_id: str) -> None:
        with self.conn.transaction():
            self.conn.execute(_BUMP)
            self.conn.execute("DELETE FROM records WHERE id = %s", (record_id,))
            self.conn.execute("DELETE FROM spaces s WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.space_id = s.id)")

    def spaces(self, with_counts: bool = True) -> list[dict]:
        """As SqliteIndex.spaces: not the spaces of records without data."""
        sizes = self.space_sizes() if with_counts else {}
        rows = self.conn.execute("SELECT id, recipe, base_name FROM spaces WHERE dim > 0 ORDER BY id").fetchall()
        return [{**recipe, "base_name": base, "records": sizes.get(sid, 0) if with_counts else None} for sid, recipe, base in rows]

    def space_sizes(self) -> dict[str, int]:
        """Records per space, recounted only when the generation moved (cached per connection)."""
        generation = self.generation()
        if self._sizes is None or self._sizes[0] != generation:
            self._sizes = (generation, dict(self.conn.execute("SELECT space_id, count(*) FROM records GROUP BY space_id").fetchall()))
        return self._sizes[1]

    def integrity_problems(self) -> list[str]:
        return []  # foreign keys and transactions hold the rows together; blobs are checked by LoraDB.check

    def nearest(self, space_id: str, z: np.ndarray, k: int, metric: str = "l2") -> list[SearchHit]:
        """The k records of a space closest to z (squared L2 or 1 - cos), exactly re-ranked."""
        from loradb.db.store.sqlite import METRICS

        if metric not in METRICS:
            raise StoreError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        q = np.asarray(z, dtype=np.float64)
        dim = q.shape[0]
        size = self.space_sizes().get(space_id, 0)
        if size == 0:
            return []
        rows = None
        if size >= EXACT_BELOW and metric == "l2" and dim <= HNSW_MAX_DIM:
            # one round trip: the settings, the walk and the commit travel together
            with self.conn.pipeline(), self.conn.transaction():
                self.conn.execute(*_hnsw_settings(k))
                cursor = self.conn.execute(*_hnsw_candidates(space_id, q, k))
            rows = cursor.fetchall()
            if len(rows) < min(k, size):  # the walk gave up first (a space that is a sliver of its index)
                rows = None
        if rows is None:  # exact: PostgreSQL ranks the space's rows, only the nearest few travel
            rows = self.conn.execute(*_exact_candidates(space_id, q, k, metric)).fetchall()
        return _exact_top(rows, q, k, metric)

    def nearest_by_key(self, space_id: str, key: str, target: KeyInputs, k: int) -> KeySearch | None:
        """The k records of a large space nearest to `target` under `key` (not raw-l2), through
        the space's index for that key (pgkeys.py); None when the space is searched exactly:
        below EXACT_BELOW, or its index is not built yet (a background build is started)."""
        size = self.space_sizes().get(space_id, 0)
        if size < EXACT_BELOW:
            return None
        dim = self.conn.execute("SELECT dim FROM spaces WHERE id = %s", (space_id,)).fetchone()[0]
        found = pgkeys.entry(self, space_id, key)
        usable = pgkeys.usable(self.conn, found, dim)
        if not usable or snapshot_drifted(found["refs"] if found else None, size):
            pgkeys.build_in_background(self, space_id, key)  # a drifted index still answers meanwhile
        if not usable:
            return None
        assert found is not None
        return pgkeys.search(self, space_id, key, found, target, k, _reranked(k), _hnsw_settings(k))

    def _index_rows(self) -> list[tuple[str, int, int]]:
        # the spaces of vectors: pgvector has no index of 0 dimensions for the records without data
        return self.conn.execute("SELECT id, dim, (SELECT count(*) FROM records r WHERE r.space_id = s.id) FROM spaces s "
                                 "WHERE dim > 0 ORDER BY id").fetchall()

    def index_status(self) -> list[dict]:
        """Each space's search path and its dimension's HNSW index (made with the first space
        of that dimension and kept up to date by PostgreSQL on every write)."""
        rows = []
        for space_id, dim, size in self._index_rows():
            name = f"records_hnsw_{dim}"
            found = self.conn.execute("SELECT pg_relation_size(c.oid), i.indisvalid FROM pg_class c "
                                      "JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = %s", (name,)).fetchone()
            hnsw = dim <= HNSW_MAX_DIM and size >= EXACT_BELOW
            rows.append({"space": space_id, "key": RAW_L2, "records": size, "search": "hnsw" if hnsw else "exact",
                         "index": name if found else None, "graph": "ready" if found and found[1] else "absent",
                         "bytes": int(found[0]) if found else 0})
            rows += [pgkeys.status(self, space_id, key, size, dim, EXACT_BELOW) for key in pgkeys.keys_indexed(self, space_id)]
        return rows

    def build_index(self, space_id: str | None = None, *, keys: tuple[str, ...] = (RAW_L2,)) -> list[dict]:
        """Make sure each space's dimension has its HNSW index (PostgreSQL maintains it
        afterwards, so there is nothing to rebuild), and each space (default: every space of
        EXACT_BELOW records or more) its index under each other key of `keys` (rebuilt when its
        references have drifted); returns the spaces' status."""
        known = {sid: (dim, size) for sid, dim, size in self._index_rows()}
        if space_id is not None and space_id not in known:
            raise StoreError(f"no representation space {space_id} in this database")
        for dim in sorted({d for sid, (d, _) in known.items() if space_id in (None, sid) and d <= HNSW_MAX_DIM}):
            with self.conn.transaction():
                self.conn.execute(_hnsw_index_sql(dim))
        chosen = [space_id] if space_id is not None else sorted(s for s, (_, n) in known.items() if n >= EXACT_BELOW)
        for sid in chosen:  # a space named explicitly is indexed whatever its size
            dim, size = known[sid]
            for key in (k for k in keys if k != RAW_L2):
                if size and pgkeys.needs_build(self.conn, pgkeys.entry(self, sid, key), size, dim):
                    pgkeys.build(self, sid, key, dim, HNSW_MAX_DIM)
        return [row for row in self.index_status() if space_id in (None, row["space"])]

    def stale_files(self) -> list:
        return []  # the index lives in the database: dropped with its rows

    def explain_nearest(self, space_id: str, z: np.ndarray, k: int, analyze: bool = False) -> str:
        """The plan PostgreSQL uses for a large space's candidate query (operations, tests)."""
        with self.conn.transaction():
            self.conn.execute(*_hnsw_settings(k))
            sql, params = _hnsw_candidates(space_id, np.asarray(z, dtype=np.float64), k)
            explain = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
            return "\n".join(r[0] for r in self.conn.execute(explain + sql, params).fetchall())


def _hnsw_settings(k: int) -> tuple[str, tuple]:
    """The settings of a large space's walk, local to its transaction. hnsw.ef_search neighbours
    are gathered (max(EF_SEARCH, CANDIDATES_PER_RESULT * k)); iterative scan in strict order, so
    the space filter cannot starve the walk and what it adds comes in distance order too; sorting
    is priced out so the planner walks the index: past EXACT_BELOW loradb, not the planner's row
    estimate, decides that a space is searched approximately (the planner would sort a small
    table instead, which is exact but grows linearly)."""
    breadth = min(EF_SEARCH_MAX, max(EF_SEARCH, CANDIDATES_PER_RESULT * k))
    return ("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'strict_order', true), "
            "set_config('enable_sort', 'off', true)", (str(breadth),))


def _hnsw_candidates(space_id: str, q: np.ndarray, k: int) -> tuple[str, tuple]:
    """The candidate query of a large space: the nearest `rerank` of the walk's neighbours by
    pgvector's float32 distance (the walk returns them in that order), with their vectors for
    the exact re-rank; only these rows are read from the table."""
    dim = q.shape[0]  # past ef_search, the strict-order iterative scan goes on
    return (f"SELECT id, vector_send(z) FROM records WHERE dim = {dim} AND space_id = %s "
            f"ORDER BY z::vector({dim}) <-> %s::vector({dim}) LIMIT %s", (space_id, vector_literal(q), _reranked(k)))


def _exact_candidates(space_id: str, q: np.ndarray, k: int, metric: str) -> tuple[str, tuple]:
    """Every row of the space ranked by pgvector's float32 distance (no index matches this
    expression: a scan of the space's rows), ties by id; the nearest RERANK_* rows are re-ranked
    in float64, so the top k is exact unless more rows than that tie within float32 rounding.
    Sending the whole space instead cost 15 MB and ~0.8 s a search at 10k records."""
    operator = "<->" if metric == "l2" else "<=>"
    return (f"SELECT id, vector_send(z) FROM records WHERE space_id = %s ORDER BY z {operator} %s::vector, id LIMIT %s",
            (space_id, vector_literal(q), _reranked(k)))


def _reranked(k: int) -> int:
    """How many candidate rows travel back for the exact float64 re-rank of a top k."""
    return max(RERANK_MIN, RERANK_PER_RESULT * k)


def _exact_top(rows, q: np.ndarray, k: int, metric: str) -> list[SearchHit]:
    """Exact distances of candidate rows (id, vector_send(z)), sorted by distance then id."""
    rows = sorted(rows, key=lambda r: r[0])
    Z = np.stack([unpack_vector(r[1]) for r in rows]).astype(np.float64)
    if metric == "l2":
        dist = ((Z - q) ** 2).sum(axis=1)
    else:
        norms = np.linalg.norm(Z, axis=1) * np.linalg.norm(q)
        dist = 1.0 - (Z @ q) / np.where(norms > 0, norms, 1.0)
    order = np.lexsort((np.arange(len(rows)), dist))[:k]
    return [SearchHit(rows[i][0], float(dist[i])) for i in order]
