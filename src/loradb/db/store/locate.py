"""From a location to backends: a directory is the embedded store (SQLite + local blobs),
postgresql://... is PostgreSQL + pgvector. Blobs live in the database directory, or where
the database's `blobs` setting says (s3://bucket/prefix), fixed at `loradb init`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from loradb.errors import StoreError

if TYPE_CHECKING:
    from loradb.db.store.protocol import BlobStore, IndexStore

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location) -> bool:
    return isinstance(location, str) and location.startswith(PG_SCHEMES)


def open_store(location) -> tuple[IndexStore, BlobStore]:
    """(index, blobs) of an existing database."""
    if is_postgres(location):
        from loradb.db.store.postgres import PgIndex

        index: IndexStore = PgIndex(location)
    else:
        index = _sqlite(Path(location))
    try:
        blobs = blob_store(index.setting("blobs"), default=None if is_postgres(location) else Path(location))
    except BaseException:
        index.close()
        raise
    return index, blobs


def init_store(location, blobs: str | None = None) -> None:
    """Create an empty database at `location`, its blobs in it or at `blobs`."""
    if blobs is not None and not blobs.startswith("s3://"):
        raise StoreError(f"`blobs` takes s3://bucket/prefix, got {blobs!r}; local blobs live in the database directory")
    if is_postgres(location):
        from loradb.db.store.postgres import PgIndex

        if blobs is None:
            raise StoreError("a PostgreSQL database keeps its adapter files in object storage: pass `blobs` s3://bucket/prefix")
        blob_store(blobs, default=None).create()
        PgIndex.create(location, blobs)
        return
    from loradb.db.store.blobs import LocalBlobStore
    from loradb.db.store.sqlite import SqliteIndex, migrate

    root = Path(location)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if (root / SqliteIndex.MARKER).is_file():
            raise StoreError(f"{root} is already a loradb database")
        raise StoreError(f"{root} exists and is not an empty directory; choose a new path")
    if blobs is not None:
        blob_store(blobs, default=None).create()
    root.mkdir(parents=True, exist_ok=True)
    LocalBlobStore(root).create()
    index = SqliteIndex(root)
    migrate(index.conn)
    if blobs is not None:
        index.set_setting("blobs", blobs)
    index.close()
    (root / SqliteIndex.MARKER).write_text("loradb database; see `loradb --help`\n")


def blob_store(url: str | None, *, default: Path | None) -> BlobStore:
    if url is None:
        if default is None:
            raise StoreError("this database names no blob store; it was not made by `loradb init`")
        from loradb.db.store.blobs import LocalBlobStore

        return LocalBlobStore(default)
    if url.startswith("s3://"):
        from loradb.db.store.s3 import S3BlobStore

        return S3BlobStore(url)
    raise StoreError(f"unknown blob store {url!r}")


def _sqlite(root: Path) -> IndexStore:
    from loradb.db.store.sqlite import SqliteIndex, migrate

    if not (root / SqliteIndex.MARKER).is_file() or not (root / SqliteIndex.FILE).is_file():
        raise StoreError(f"{root} is not a loradb database; create one with `loradb init {root}`"
                         + (" (or give a postgresql://... URL)" if not os.path.isabs(str(root)) and ":" in str(root) else ""))
    index = SqliteIndex(root)
    migrate(index.conn, lock=index.write_lock)
    return index
