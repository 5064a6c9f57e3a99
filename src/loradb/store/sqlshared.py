"""The statements both SQL index backends run word for word: access tokens and a few
one-line reads. Only the parameter placeholder differs (SQLite `?`, psycopg `%s`)."""

from __future__ import annotations

TOKEN_COLUMNS = ("id", "name", "scope", "secret_sha256", "created", "revoked")
_TOKEN_SELECT = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens"


class SharedStatements:
    """Mixed into an index class that has `conn` (with .execute(sql, params)) and PARAM."""

    PARAM = "?"

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.PARAM)

    def in_space(self, space_id: str) -> list:
        """Every record of a space, by id (what retrieval keys other than raw L2 scan)."""
        rows = self.conn.execute(self._sql(f"SELECT {self.COLUMNS} FROM records WHERE space_id = ? ORDER BY id"),
                                 (space_id,)).fetchall()
        return [self._row(r) for r in rows]

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
