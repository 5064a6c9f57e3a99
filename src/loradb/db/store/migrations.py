"""Schema migrations that need Python, shared by the SQLite and PostgreSQL stores.

A store's MIGRATIONS list holds SQL scripts; an entry may instead be one of these functions,
called as fn(connection, placeholder) inside the migration's transaction ("?" for SQLite,
"%s" for psycopg).
"""

from __future__ import annotations

import os
from pathlib import Path

from loradb.lora.identity import legacy_portable, remember


def portable_base_names(conn, placeholder: str) -> None:
    """Base names stored as machine-local paths (loradb before portable names) become the names
    the models go by everywhere (identity.legacy_portable); a path that still holds a model on
    this machine is remembered, so its records still find it by fingerprint."""
    for table in ("records", "spaces"):
        rows = conn.execute(f"SELECT DISTINCT base_name, base_fingerprint FROM {table}").fetchall()
        for stored, fingerprint in rows:
            name = legacy_portable(stored)
            if name == stored:
                continue
            if os.path.isdir(stored):  # False (never an error) for a path this user may not look into
                remember(fingerprint, Path(stored))
            conn.execute(f"UPDATE {table} SET base_name = {placeholder} WHERE base_name = {placeholder}", (name, stored))
