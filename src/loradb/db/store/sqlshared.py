"""The statements both SQL index backends run word for word: access tokens and a few
one-line reads. Only the parameter placeholder differs (SQLite `?`, psycopg `%s`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from loradb.db.store.protocol import KeyRow
from loradb.errors import LoradbError, NotFound, StoreError

if TYPE_CHECKING:
    from loradb.db.store.protocol import Record

# record ids are uuid4().hex: 32 lowercase hex digits; `list` shows the first 12
ID_PREFIX = re.compile(r"[0-9a-f]{4,32}")

# rows read and decoded at once by a scan of a whole space (bounded memory at any size)
ROWS_PER_CHUNK = 20_000

TOKEN_COLUMNS = ("id", "name", "scope", "secret_sha256", "created", "revoked")
_TOKEN_SELECT = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens"


class SharedStatements:
    """Mixed into an index class that has `conn` (with .execute(sql, params)) and PARAM."""

    PARAM = "?"
    if TYPE_CHECKING:  # what the index class provides
        conn: Any  # a sqlite3 or psycopg connection
        COLUMNS: str  # the record columns _row reads, in its order
        # the catalogue's filters in the backend's dialect: a metadata key equal to a value, a
        # metadata value LIKE a pattern (with {value} the value's folded text), and Unicode case
        # folding of an expression ({} the expression)
        META_EQUALS: str
        META_VALUE_LIKE: str
        META_VALUE: str  # a metadata value as text, inside META_VALUE_LIKE's subquery
        UNICODE_LOWER: str | None  # None: this database cannot fold non-ASCII letters
        Z_COLUMN: str  # how a record's z is selected, for _vector
        KEY_COLUMNS: str  # how z, z_var and task_z are selected, for _vector
        CODEPOINT_NAME: str  # the name column compared in code-point order (Python's string order)

        def _row(self, row) -> Record: ...
        def _vector(self, raw) -> np.ndarray: ...  # a selected Z_COLUMN as float32
        def _chunks(self, sql: str, params: tuple) -> Iterator[list]: ...  # a query's rows, a chunk at a time

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.PARAM)

    def in_space(self, space_id: str) -> list[Record]:
        """Every record of a space, by id (what retrieval keys other than raw L2 scan)."""
        rows = self.conn.execute(self._sql(f"SELECT {self.COLUMNS} FROM records WHERE space_id = ? ORDER BY id"),
                                 (space_id,)).fetchall()
        return [self._row(r) for r in rows]

    def key_rows(self, space_id: str) -> Iterator[list[KeyRow]]:
        """A space's KeyRows (what retrieval keys read), a chunk at a time, ordered by (name, id)
        as Python sorts them: an exact key scan of a million records needs neither whole
        records nor all of them in memory at once."""
        sql = self._sql(f"SELECT id, name, {self.KEY_COLUMNS} FROM records WHERE space_id = ? "
                        f"ORDER BY {self.CODEPOINT_NAME}, id")
        for rows in self._chunks(sql, (space_id,)):
            yield [KeyRow(r[0], r[1], self._vector(r[2]), None if r[3] is None else self._vector(r[3]),
                          None if r[4] is None else self._vector(r[4])) for r in rows]

    def get(self, ref: str) -> Record:
        """A record by full id, name, or unique id prefix (>= 4 hex digits), in that order.

        A full id always wins. A ref that is both a record's name and a prefix of another
        record's id (possible only in databases written before names like ids were refused)
        is refused as ambiguous rather than resolved either way: `compose --weights` and
        `export` must never act on an impostor."""
        if "\x00" in ref:  # no id or name holds NUL (PostgreSQL would refuse the query itself)
            raise NotFound(f"no record with id or name {ref!r}; `loradb list DB` shows them")
        select = f"SELECT {self.COLUMNS} FROM records WHERE "
        rows = self.conn.execute(self._sql(select + "id = ?"), (ref,)).fetchall()
        if rows:
            return self._row(rows[0])
        named = self.conn.execute(self._sql(select + "name = ?"), (ref,)).fetchall()
        # ids are lowercase hex, so "id starts with ref" is the range [ref, ref + "g")
        prefixed = (self.conn.execute(self._sql(select + "id >= ? AND id < ? LIMIT 2"), (ref, ref + "g")).fetchall()
                    if ID_PREFIX.fullmatch(ref) else [])
        if named and prefixed:
            raise StoreError(f"{ref!r} is both the name of record {named[0][0]} and a prefix of record id {prefixed[0][0]}; "
                             "use the full id")
        rows = named or prefixed
        if not rows:
            raise NotFound(f"no record with id or name {ref!r}; `loradb list DB` shows them")
        if len(rows) > 1:
            raise StoreError(f"{ref!r} matches {len(rows)} records; use the full id")
        return self._row(rows[0])

    def get_many(self, ids: list[str]) -> list[Record]:
        """Records by full id, in the order given, in one query (a search's hits)."""
        return [self._row(row) for row in self._rows_by_id(self.COLUMNS, ids)]

    def _rows_by_id(self, columns: str, ids: list[str]) -> list:
        """Rows of `columns` (the first being id) for full ids, in the order given, in one query;
        an id no longer there is refused."""
        rows = self.conn.execute(self._sql(f"SELECT {columns} FROM records WHERE id IN ({', '.join('?' * len(ids))})"),
                                 tuple(ids)).fetchall() if ids else []
        by_id = {row[0]: row for row in rows}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise NotFound(f"no record with id {missing[0]!r} (removed meanwhile?)")
        return [by_id[i] for i in ids]

    def _space_recipe(self, space_id: str) -> dict:
        """A space's recipe for a record read; cached, since a space id is the hash of its recipe."""
        cache = self.__dict__.setdefault("_recipes", {})
        if space_id not in cache:
            row = self.conn.execute(self._sql("SELECT recipe FROM spaces WHERE id = ?"), (space_id,)).fetchone()
            if row is None:
                return {"id": space_id}
            cache[space_id] = json.loads(row[0]) if isinstance(row[0], str) else row[0]  # SQLite text, PostgreSQL JSONB
        return dict(cache[space_id])

    def find(self, *, base: str | None = None, space: str | None = None, meta: tuple[str, str] | None = None,
             text: str | None = None, offset: int = 0, limit: int = 50) -> tuple[int, list[Record]]:
        """(how many records match, `limit` of them from `offset`), newest first: the catalogue's
        table. `base` is a base model's name or fingerprint, `meta` a (key, value) pair, and
        `text` a case-insensitive substring of the name, owner or a metadata value, or an id prefix."""
        where, params = [], []
        if base:
            where.append("(base_name = ? OR base_fingerprint = ?)")
            params += [base, base]
        if space:
            where.append("space_id = ?")
            params.append(space)
        if meta:
            where.append(self.META_EQUALS)
            params += list(meta)
        if text:  # '!' escapes LIKE's wildcards: the same in both dialects, whatever PostgreSQL's string settings
            pattern = "%" + re.sub(r"([!%_])", r"!\1", text.lower()) + "%"
            lower = "lower({})" if text.isascii() else self.UNICODE_LOWER  # the built-in is the faster where it is enough
            if lower is None:
                raise LoradbError("this PostgreSQL database folds case in ASCII letters only (its locale is C and the "
                                  "server has no Unicode collation): a text filter with other letters is refused rather "
                                  "than half matched; filter with ASCII text, or use PostgreSQL 17+ or a UTF-8 locale")
            name, owner, value = (lower.format(e) for e in ("name", "coalesce(owner, '')", self.META_VALUE))
            where.append(f"({name} LIKE ? ESCAPE '!' OR {owner} LIKE ? ESCAPE '!' "
                         f"OR {self.META_VALUE_LIKE.format(value=value)} OR id LIKE ? ESCAPE '!')")
            params += [pattern, pattern, pattern, pattern[1:]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self.conn.execute(self._sql(f"SELECT count(*) FROM records{clause}"), tuple(params)).fetchone()[0]
        rows = self.conn.execute(self._sql(f"SELECT {self.COLUMNS} FROM records{clause} "
                                           "ORDER BY created DESC, id DESC LIMIT ? OFFSET ?"),
                                 (*params, limit, offset)).fetchall()
        return total, [self._row(r) for r in rows]

    def ids_in_space(self, space_id: str) -> list[str]:
        """A space's record ids (from an index, without reading the records)."""
        return [r[0] for r in self.conn.execute(self._sql("SELECT id FROM records WHERE space_id = ?"), (space_id,)).fetchall()]

    def prototypes(self, ids: list[str]) -> list[tuple[str, str, dict, np.ndarray]]:
        """(id, name, meta, z) of records by full id, in that order: what the catalogue's map reads
        (not the rest of a record, which a 100k-point map would decode for nothing)."""
        return [(rid, name, json.loads(meta) if isinstance(meta, str) else meta, self._vector(z))  # SQLite text, PostgreSQL JSONB
                for rid, name, meta, z in self._rows_by_id(f"id, name, meta, {self.Z_COLUMN}", ids)]

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM records").fetchone()[0]

    def name_taken(self, name: str) -> bool:
        return self.conn.execute(self._sql("SELECT 1 FROM records WHERE name = ?"), (name,)).fetchone() is not None

    def blob_refs(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT blob_sha256 FROM records").fetchall()}

    def generation(self) -> int:
        return self.conn.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()[0]

    def insert_token(self, token: dict) -> None:
        self.conn.execute(self._sql(f"INSERT INTO tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ({', '.join('?' * len(TOKEN_COLUMNS))})"),
                          tuple(token[c] for c in TOKEN_COLUMNS))

    def tokens(self) -> list[dict]:
        return [dict(zip(TOKEN_COLUMNS, row)) for row in self.conn.execute(f"{_TOKEN_SELECT} ORDER BY created, id").fetchall()]

    def token_by_secret(self, secret_sha256: str) -> dict | None:
        row = self.conn.execute(self._sql(f"{_TOKEN_SELECT} WHERE secret_sha256 = ? AND revoked IS NULL"),
                                (secret_sha256,)).fetchone()
        return dict(zip(TOKEN_COLUMNS, row)) if row else None

    def revoke_tokens(self, ids: list[str], when: str) -> None:
        """One statement, so every id is revoked or none."""
        if ids:
            self.conn.execute(self._sql(f"UPDATE tokens SET revoked = ? WHERE revoked IS NULL AND id IN ({', '.join('?' * len(ids))})"),
                              (when, *ids))
