"""Search a space under a retrieval key other than raw-l2 (retrieval/keys.py).

A large space goes through the key's own index (the store's nearest_by_key: an HNSW graph of
phi vectors, under a snapshot of the space's References taken when it was built). A small one,
or a large one whose index is not built yet, is scanned exactly: phi of every record, under the
References of all of them. The scan streams only what keys read (the store's key_rows, a chunk
at a time), never whole records: a million records once took 20 GB as Records. Its phi matrix
is kept per process until the space changes (the store's generation moves) when it is at most
KEPT_PHI_BYTES; a larger space is mapped again a chunk at a time on each search (memory stays
bounded; its index is being built meanwhile).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError
from loradb.retrieval.keys import (KeyInputs, References, get_key, key_map, lacking_parts, lacks_for, needs_in_words,
                                  require_inputs)

SCANS_KEPT = 4  # (database, space, key) scans kept per process
KEPT_PHI_BYTES = 256 * 2**20  # the largest phi matrix a scan keeps (records x d' float64)
_SCANS: OrderedDict[tuple[str, str, str], "_Scan"] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Scan:
    generation: int
    records: int
    lacking: int  # records the key cannot map
    example: tuple[str, str] | None  # (name, what it lacks) of the first of them
    refs: References | None
    ids: list[str] | None  # the space's records sorted by name, with their phi when kept
    phi: np.ndarray | None  # (records, d'); None when some record lacks what the key reads, or too large to keep


@dataclass(frozen=True)
class KeyNearest:
    """The k nearest records under a key, phi of them and of the target in the geometry that ranked them."""

    records: list
    distances: list[float]
    phi_records: np.ndarray
    phi_target: np.ndarray


def nearest_by_key(db, key: str, target, k: int, *, fallback: bool) -> KeyNearest | None:
    """The k records of the target's space nearest to it under `key`. With `fallback` (the
    space's own key, not one the caller named) None when the target or some record lacks
    what the key reads: the caller searches by raw z then, rather than failing every search."""
    space_id = target.space.id
    inputs = KeyInputs.stacked([target])
    if lacks_for(key, target) is not None:
        if fallback:
            return None
        require_inputs(get_key(key), target=inputs)  # refused before any record is read
    found = db.index.nearest_by_key(space_id, key, inputs, k)
    if found is not None:
        if found.lacking:
            return None if fallback else _refuse(key, found.lacking, None)
        records = db.index.get_many([h.record_id for h in found.hits])
        if not records:
            raise no_records(space_id)
        # in the index's geometry: its References snapshot (None for a key that reads none)
        return _top(records, key_map(key, inputs, found.refs)[0], key_map(key, KeyInputs.stacked(records), found.refs), k)
    scan = _scan(db, space_id, key)
    if not scan.records:
        raise no_records(space_id)
    if scan.lacking:
        return None if fallback else _refuse(key, scan.lacking, scan)
    q = key_map(key, inputs, scan.refs)[0]
    if scan.phi is not None:
        assert scan.ids is not None
        ids, phi = scan.ids, scan.phi
    else:
        ids, phi = _streamed_nearest(db, space_id, key, scan.refs, q, k)
    d2 = ((phi - q) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(len(ids)), d2))[:k]  # ties by name
    records = db.index.get_many([ids[i] for i in order])
    return KeyNearest(records, [float(d2[i]) for i in order], phi[order], q)


def no_records(space_id: str) -> LoradbError:
    return LoradbError(f"no records in representation space {space_id}; add adapters with representations made the same way")


def _top(records: list, q: np.ndarray, R: np.ndarray, k: int) -> KeyNearest:
    """The index's hits ranked again in float64, ties by name."""
    d2 = ((R - q) ** 2).sum(axis=1)
    order = np.lexsort(([r.name for r in records], d2))[:k]
    return KeyNearest([records[i] for i in order], [float(d2[i]) for i in order], R[order], q)


def _refuse(key: str, lacking: int, scan: _Scan | None):
    example = f" (e.g. {scan.example[0]})" if scan is not None and scan.example else ""
    what = scan.example[1] if scan is not None and scan.example else needs_in_words(get_key(key))
    total = f" of the {scan.records}" if scan is not None else ""
    raise LoradbError(f"retrieval key {key} needs {what}, which {lacking}{total} records here lack{example}; "
                      "use `key` raw-l2, cosine or centered-cosine, or add them again with their task")


class _Tally:
    """Streams a space's KeyRows, a chunk of those `key` can map at a time, counting every row
    and those it cannot map."""

    def __init__(self, key: str):
        self.needs = get_key(key)
        self.records, self.lacking = 0, 0
        self.example: tuple[str, str] | None = None

    def usable(self, chunks: Iterable[list]) -> Iterator[list]:
        for rows in chunks:
            self.records += len(rows)
            kept = []
            for r in rows:
                what = lacking_parts(self.needs, has_var=r.var is not None, has_task=r.task_z is not None)
                if what is None:
                    kept.append(r)
                else:
                    self.lacking += 1
                    self.example = self.example or (r.name, what)
            if kept:
                yield kept


def _scan(db, space_id: str, key: str) -> _Scan:
    """The space's exact-scan state under `key`, from this process's cache while the store's
    generation has not moved. Rows come sorted by name: the References' sums (and so near-ties)
    must not depend on random record ids."""
    cache_key = (db.location, space_id, key)
    generation = db.index.generation()
    with _LOCK:
        cached = _SCANS.get(cache_key)
        if cached is not None and cached.generation == generation:
            _SCANS.move_to_end(cache_key)
            return cached
    refs = None
    if get_key(key).reads_references:  # a first pass for them
        census = _Tally(key)
        refs, _ = References.streamed(KeyInputs.stacked(rows) for rows in census.usable(db.index.key_rows(space_id)))
        if census.lacking or refs is None:
            return _keep(cache_key, _Scan(generation, census.records, census.lacking, census.example, None, None, None))
    tally = _Tally(key)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    kept_bytes = 0
    for rows in tally.usable(db.index.key_rows(space_id)):
        if tally.lacking or kept_bytes > KEPT_PHI_BYTES:
            ids, parts = [], []  # counted on, not mapped: the scan answers nothing, or each search maps again
            continue
        parts.append(key_map(key, KeyInputs.stacked(rows), refs))
        ids += [r.id for r in rows]
        kept_bytes += parts[-1].nbytes
    keep = not tally.lacking and kept_bytes <= KEPT_PHI_BYTES and parts
    scan = _Scan(generation, tally.records, tally.lacking, tally.example, refs,
                 ids if keep else None, np.concatenate(parts) if keep else None)
    return _keep(cache_key, scan)


def _keep(cache_key: tuple[str, str, str], scan: _Scan) -> _Scan:
    with _LOCK:
        _SCANS[cache_key] = scan
        while len(_SCANS) > SCANS_KEPT:
            _SCANS.popitem(last=False)
    return scan


def _streamed_nearest(db, space_id: str, key: str, refs: References | None, q: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """(ids, phi) of the k rows nearest q under `key`, in name order, mapped a chunk at a time
    (a space too large for its phi matrix to be kept). Rows added since the scan's census that
    the key cannot map are passed over, as an index passes over them."""
    ids: list[str] = []
    phi = np.zeros((0, len(q)))
    for rows in _Tally(key).usable(db.index.key_rows(space_id)):
        ids, phi = ids + [r.id for r in rows], np.concatenate([phi, key_map(key, KeyInputs.stacked(rows), refs)])
        d2 = ((phi - q) ** 2).sum(axis=1)
        best = np.sort(np.lexsort((np.arange(len(ids)), d2))[:k])  # the k nearest so far, still in name order
        ids, phi = [ids[i] for i in best], phi[best]
    return ids, phi
