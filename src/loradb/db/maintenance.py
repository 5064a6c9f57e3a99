"""Keeping a database sound: check every row and blob, remove orphans, copy everything
into another database (e.g. from the embedded store to PostgreSQL + S3)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import numpy as np

from loradb.db.results import CheckReport
from loradb.db.store.protocol import BlobStore, IndexStore, no_data_space
from loradb.errors import Conflict, StoreError


class Stores(Protocol):
    """What these functions use of a LoraDB (which imports this module, so not LoraDB itself)."""

    location: str
    index: IndexStore
    blobs: BlobStore

    def write_lock(self) -> AbstractContextManager: ...
    def check(self) -> CheckReport: ...


def check(db: Stores) -> CheckReport:
    """Verify every row and blob; report orphan blobs and stray files (temp files of
    interrupted writes, index files of spaces that are gone)."""
    problems = db.index.integrity_problems()
    records = db.index.all()
    spaces = {s["id"]: s for s in db.index.spaces()}
    for r in records:
        label = f"record {r.name} ({r.id[:12]})"
        blob_problem = db.blobs.problem(r.blob_sha256)
        if blob_problem is not None:
            problems.append(f"{label}: {blob_problem}")
        if not r.has_data:  # imported without its data: no vector, in its base's space of such records
            expected = no_data_space(r.base_fingerprint)["id"]
            if r.space_id != expected:
                problems.append(f"{label}: it has no z but its space is {r.space_id}, not {expected}")
            continue
        if r.space_id not in spaces:
            problems.append(f"{label}: its representation space {r.space_id} is missing")
        elif spaces[r.space_id].get("dim") != r.z.shape[0]:
            problems.append(f"{label}: z has {r.z.shape[0]} values, its space {spaces[r.space_id].get('dim')}")
        if not np.isfinite(r.z).all():
            problems.append(f"{label}: z contains NaN or infinite values")
    refs = {r.blob_sha256 for r in records}
    orphans = [sha for sha in db.blobs.list() if sha not in refs]
    stray = [*db.blobs.stray_temp_files(), *db.index.stale_files()]
    return CheckReport(problems=problems, orphans=orphans, records=len(records), temp_files=[str(p) for p in stray])

def copy_into(db: Stores, target: Stores, *, progress: bool = True) -> int:
    """Copy every record (same ids, vectors, owners, privacy) with its blob, and the access
    tokens, into another database, e.g. from the embedded store to PostgreSQL + S3.

    Refused before anything is written if a record id or name is already there; blobs
    are verified on the way; rows go in one transaction at the end (all or none).
    Returns:
        How many records were copied.
    """
    from tqdm.auto import tqdm

    records = db.index.all()
    with target.write_lock():
        held_ids = {r.id for r in target.index.all()}
        clash = sorted({r.name for r in records if r.id in held_ids or target.index.name_taken(r.name)})
        if clash:
            raise Conflict(f"{target.location} already holds records like {', '.join(clash[:5])}; copy into an empty database")
        for sha in tqdm(sorted({r.blob_sha256 for r in records}), desc="blobs", unit="blob",
                        disable=None if progress else True, leave=False):
            if target.blobs.put(db.blobs.fetch(sha)) != sha:
                raise StoreError(f"blob {sha[:12]} changed while copying")
        target.index.insert_many(records)
        known = {t["id"] for t in target.index.tokens()}
        for token in db.index.tokens():
            if token["id"] not in known:
                target.index.insert_token(token)
    return len(records)

def gc(db: Stores) -> list[str]:
    """Remove orphan blobs and stray files; returns what was removed."""
    removed = []
    with db.write_lock():
        report = db.check()
        for sha in report.orphans:
            db.blobs.delete(sha)
            removed.append(sha)
        for tmp in report.temp_files:
            Path(tmp).unlink(missing_ok=True)
            removed.append(tmp)
    return removed
