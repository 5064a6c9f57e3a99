"""Search a space under a retrieval key other than raw-l2 (retrieval/keys.py).

A large space goes through the key's own index (the store's nearest_by_key: an HNSW graph of
phi vectors, under a snapshot of the space's References taken when it was built). A small one,
or a large one whose index is not built yet, is scanned exactly: phi of every record, under the
References of all of them. That scan's phi matrix is kept per process until the space changes
(the store's generation moves), so only the first search after a write maps every record.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from loradb.errors import LoradbError
from loradb.retrieval.keys import KeyInputs, References, get_key, key_map, lacks_for, needs_in_words, require_inputs

SCANS_KEPT = 4  # (database, space, key) phi matrices kept per process; each is records x d' float64
_SCANS: OrderedDict[tuple[str, str, str], "_Scan"] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Scan:
    generation: int
    ids: list[str]  # the space's records, sorted by name
    lacking: list[tuple[str, str]]  # (name, what it lacks) of records the key cannot map
    refs: References | None
    phi: np.ndarray | None  # (records, d'), None when some record lacks what the key reads


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
    if not scan.ids:
        raise no_records(space_id)
    if scan.lacking:
        return None if fallback else _refuse(key, len(scan.lacking), scan)
    assert scan.phi is not None
    q = key_map(key, inputs, scan.refs)[0]
    d2 = ((scan.phi - q) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(len(scan.ids)), d2))[:k]  # ties by name
    records = db.index.get_many([scan.ids[i] for i in order])
    return KeyNearest(records, [float(d2[i]) for i in order], scan.phi[order], q)


def no_records(space_id: str) -> LoradbError:
    return LoradbError(f"no records in representation space {space_id}; add adapters with representations made the same way")


def _top(records: list, q: np.ndarray, R: np.ndarray, k: int) -> KeyNearest:
    """The index's hits ranked again in float64, ties by name."""
    d2 = ((R - q) ** 2).sum(axis=1)
    order = np.lexsort(([r.name for r in records], d2))[:k]
    return KeyNearest([records[i] for i in order], [float(d2[i]) for i in order], R[order], q)


def _refuse(key: str, lacking: int, scan: _Scan | None):
    example = f" (e.g. {scan.lacking[0][0]})" if scan is not None else ""
    what = scan.lacking[0][1] if scan is not None else needs_in_words(get_key(key))
    total = f" of the {len(scan.ids)}" if scan is not None else ""
    raise LoradbError(f"retrieval key {key} needs {what}, which {lacking}{total} records here lack{example}; "
                      "use `key` raw-l2, cosine or centered-cosine, or add them again with their task")


def _scan(db, space_id: str, key: str) -> _Scan:
    """The space's exact-scan state under `key`, from this process's cache while the store's
    generation has not moved."""
    cache_key = (db.location, space_id, key)
    generation = db.index.generation()
    with _LOCK:
        cached = _SCANS.get(cache_key)
        if cached is not None and cached.generation == generation:
            _SCANS.move_to_end(cache_key)
            return cached
    # by name: the references' mean (and so near-ties) must not depend on random record ids
    records = sorted(db.index.in_space(space_id), key=lambda r: r.name)
    lacking = [(r.name, what) for r in records if (what := lacks_for(key, r)) is not None]
    refs = phi = None
    if records and not lacking:
        stacked = KeyInputs.stacked(records)
        refs = References.of(stacked)
        phi = key_map(key, stacked, refs)
    scan = _Scan(generation, [r.id for r in records], lacking, refs, phi)
    with _LOCK:
        _SCANS[cache_key] = scan
        while len(_SCANS) > SCANS_KEPT:
            _SCANS.popitem(last=False)
    return scan
