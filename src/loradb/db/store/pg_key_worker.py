"""The background process that builds one PostgreSQL space's index under a retrieval key
(pgkeys.build_in_background):

    LORADB_PG_URL=postgresql://... python -m loradb.db.store.pg_key_worker SPACE_ID KEY

(the URL in the environment, so that no password shows in the process list). It exits at
once when another process holds the build's advisory lock, or the index needs no build.
"""

from __future__ import annotations

import hashlib
import os
import sys


def main(argv: list[str]) -> int:
    from loradb.db.store import pgkeys
    from loradb.db.store.postgres import HNSW_MAX_DIM, PgIndex

    space_id, key = argv
    store = PgIndex(os.environ[pgkeys.URL_ENV])
    try:
        lock = int(hashlib.sha256(f"{space_id}:{key}".encode()).hexdigest()[:15], 16)
        if not store.conn.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0]:
            return 0  # another process is building it
        dim = dict(store.conn.execute("SELECT id, dim FROM spaces").fetchall())[space_id]
        if pgkeys.needs_build(store.conn, pgkeys.entry(store, space_id, key), store.space_sizes().get(space_id, 0), dim):
            pgkeys.build(store, space_id, key, dim, HNSW_MAX_DIM)
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
