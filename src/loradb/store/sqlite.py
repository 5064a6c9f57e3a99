"""The embedded index: one SQLite file with records, their spaces and representations.

The schema lives in numbered migrations applied in order (PRAGMA user_version holds the
number applied). Exact nearest-neighbour search loads the vectors of one space and
ranks them with numpy; ties are broken by record id so results are deterministic.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .protocol import Record, SearchHit

MIGRATIONS: list[str] = [
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
]

METRICS = ("l2", "cosine")
_COLUMNS = ("id, name, base_name, base_fingerprint, space_id, z, n_samples, rank, target_modules, "
            "adapter_config, meta, blob_sha256, created")


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)  # explicit transactions below
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version now in force."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"this database has schema version {version}, newer than this loradb ({len(MIGRATIONS)}); upgrade loradb")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[number - 1]}; PRAGMA user_version = {number}; COMMIT;")
    return len(MIGRATIONS)


class SqliteIndex:
    """Records and spaces in `root/index.sqlite`."""

    FILE = "index.sqlite"

    def __init__(self, root: Path):
        self.path = root / self.FILE
        self.conn = connect(self.path)

    def close(self) -> None:
        self.conn.close()

    def _row(self, row) -> Record:
        space_row = self.conn.execute("SELECT recipe FROM spaces WHERE id = ?", (row[4],)).fetchone()
        space = json.loads(space_row[0]) if space_row else {"id": row[4]}
        return Record(
            id=row[0], name=row[1], base_name=row[2], base_fingerprint=row[3], space=space,
            z=np.frombuffer(row[5], dtype="<f4").copy(), n_samples=row[6], rank=row[7],
            target_modules=json.loads(row[8]), adapter_config=json.loads(row[9]), meta=json.loads(row[10]),
            blob_sha256=row[11], created=row[12],
        )

    def insert(self, record: Record) -> None:
        """Insert a record (and its space if new) in one transaction."""
        z = np.ascontiguousarray(record.z, dtype="<f4")
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT OR IGNORE INTO spaces (id, base_name, base_fingerprint, recipe, dim) VALUES (?, ?, ?, ?, ?)",
                      (record.space_id, record.base_name, record.base_fingerprint, json.dumps(record.space), int(z.shape[0])))
            c.execute(f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (record.id, record.name, record.base_name, record.base_fingerprint, record.space_id, z.tobytes(),
                       record.n_samples, record.rank, json.dumps(record.target_modules), json.dumps(record.adapter_config),
                       json.dumps(record.meta), record.blob_sha256, record.created))
            c.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            c.execute("ROLLBACK")
            raise StoreError(f"cannot add record {record.name!r}: {e}") from None
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def get(self, ref: str) -> Record:
        """A record by id, unique id prefix (>= 4 characters) or name."""
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records WHERE id = ? OR name = ?", (ref, ref)).fetchall()
        if not rows and len(ref) >= 4:
            rows = self.conn.execute(f"SELECT {_COLUMNS} FROM records WHERE id LIKE ? ESCAPE '\\'",
                                     (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",)).fetchall()
        if not rows:
            raise StoreError(f"no record with id or name {ref!r}; `loradb list DB` shows them")
        if len(rows) > 1:
            raise StoreError(f"{ref!r} matches {len(rows)} records; use the full id")
        return self._row(rows[0])

    def all(self) -> list[Record]:
        return [self._row(r) for r in self.conn.execute(f"SELECT {_COLUMNS} FROM records ORDER BY created, id")]

    def delete(self, record_id: str) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM records WHERE id = ?", (record_id,))
            c.execute("DELETE FROM spaces WHERE id NOT IN (SELECT DISTINCT space_id FROM records)")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM records WHERE name = ?", (name,)).fetchone() is not None

    def spaces(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT s.recipe, s.base_name, COUNT(r.id) FROM spaces s LEFT JOIN records r ON r.space_id = s.id "
            "GROUP BY s.id ORDER BY s.id").fetchall()
        return [{**json.loads(recipe), "base_name": base, "records": n} for recipe, base, n in rows]

    def blob_refs(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT blob_sha256 FROM records")}

    def nearest(self, space_id: str, z: np.ndarray, k: int, metric: str = "l2") -> list[SearchHit]:
        """The k records of a space closest to z: squared L2, or cosine distance (1 - cos)."""
        if metric not in METRICS:
            raise StoreError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        rows = self.conn.execute("SELECT id, z FROM records WHERE space_id = ? ORDER BY id", (space_id,)).fetchall()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        Z = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1).astype(np.float64)
        q = np.asarray(z, dtype=np.float64)
        if metric == "l2":
            dist = ((Z - q) ** 2).sum(axis=1)
        else:
            norms = np.linalg.norm(Z, axis=1) * np.linalg.norm(q)
            dist = 1.0 - (Z @ q) / np.where(norms > 0, norms, 1.0)
        order = np.lexsort((np.arange(len(ids)), dist))[:k]  # by distance, then id (rows are id-sorted)
        return [SearchHit(ids[i], float(dist[i])) for i in order]

    def integrity_problems(self) -> list[str]:
        result = self.conn.execute("PRAGMA integrity_check").fetchall()
        return [] if result == [("ok",)] else [f"sqlite: {r[0]}" for r in result]
