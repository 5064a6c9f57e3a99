"""What the browser catalogue reads: a filtered page of records, a record's neighbours, and a
2-D map of one space's prototypes.

The map is a PCA of the space's z vectors (raw, as stored), fitted on a seeded random sample
of about `sample` records (rounded up to one of SAMPLE_STEPS, so that the few fits a reader
can ask for are all cached): a large space is shown by its sample, and the answer says how
many of how many are drawn. The page projects a dropped target with the same mean and
components, so the target lands where it belongs among the prototypes.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from loradb.errors import LoradbError, NotFound

if TYPE_CHECKING:
    from loradb.db.database import LoraDB

MAP_SAMPLE = 20_000  # prototypes drawn by default: a PCA of 20k x 384 is a fraction of a second
MAP_SAMPLE_MAX = 100_000
SAMPLE_STEPS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)  # the sample sizes a map is drawn at
MAX_CATEGORIES = 12  # colours on the map; rarer values are drawn as "other"
READ_CHUNK = 500  # records fetched per query while sampling
# maps cached per process, by the points they hold (a 100k-point fit holds a few tens of MB):
# every sample size of several spaces, so a reader going through them does not refit each time
MAX_FIT_POINTS = 1_000_000
EXACT_UP_TO = 256  # rows or dims up to which the map's axes are computed exactly (_principal_axes)
BLOCK, POWER_PASSES = 10, 6  # randomized subspace iteration: 2 axes + 8 oversampling; passes


def browse(db: LoraDB, *, base: str | None = None, space: str | None = None, meta: str | None = None,
           text: str | None = None, offset: int = 0, limit: int = 50) -> dict:
    """A page of the records table; `meta` is "key=value" (a bare key is refused: say which value)."""
    pair = None
    if meta:
        key, eq, value = meta.partition("=")
        if not eq or not key:
            raise LoradbError(f"metadata filter {meta!r} must be KEY=VALUE")
        pair = (key, value)
    total, records = db.index.find(base=base, space=space, meta=pair, text=text, offset=offset, limit=limit)
    # modules by their kind (query, value), not each layer's path: the record page lists those
    rows = [{**r.summary(), "modules": sorted({m.rsplit(".", 1)[-1] for m in r.target_modules}), "privacy": r.privacy}
            for r in records]
    return {"total": total, "offset": offset, "limit": limit, "records": rows}


def neighbours(db: LoraDB, ref: str, k: int) -> list[dict]:
    """The k records nearest to `ref` in its space by squared L2 between their z (itself left out);
    none for a record without a data summary (no z: nothing is near it)."""
    record = db.get(ref)
    if not record.has_data:
        return []
    hits = [h for h in db.index.nearest(record.space_id, record.z, k + 1) if h.record_id != record.id][:k]
    found = db.index.get_many([h.record_id for h in hits])
    return [{**r.summary(), "distance": h.distance} for h, r in zip(hits, found)]


@dataclass
class _Fitted:
    """One space's sample, its PCA and its coordinates: cached until the database changes."""

    total: int
    ids: list[str]
    names: list[str]
    metas: list[dict]
    mean: np.ndarray
    components: np.ndarray  # (2, dim)
    explained: list[float]
    xy: np.ndarray  # (n, 2)


_FITS: OrderedDict[tuple, _Fitted] = OrderedDict()  # least recently used first
_FITTING: dict[tuple, threading.Lock] = {}  # one fit per key at a time; the others wait for it
_FITS_LOCK = threading.Lock()


def drawn(sample: int, total: int) -> int:
    """How many prototypes a map of `sample` draws: `sample` rounded up to SAMPLE_STEPS, at most
    all. A reader can so cause at most len(SAMPLE_STEPS) fits per space and database state."""
    if not 1 <= sample <= MAP_SAMPLE_MAX:
        raise LoradbError(f"sample must be between 1 and {MAP_SAMPLE_MAX}")
    return min(total, next(step for step in SAMPLE_STEPS if step >= sample))


def space_map(db: LoraDB, space: str, *, colour: str | None = None, sample: int = MAP_SAMPLE) -> dict:
    """The prototypes of `space` in 2-D, each with its category under the metadata key `colour`."""
    fitted = _fit(db, space, sample)
    values = [str(m[colour]) if colour and colour in m else None for m in fitted.metas]
    counts = Counter(v for v in values if v is not None)
    categories = sorted(counts, key=lambda v: (-counts[v], v))[:MAX_CATEGORIES]
    slot = {v: i for i, v in enumerate(categories)}
    other = len(categories) if len(counts) > len(categories) else None
    keys = sorted({k for m in fitted.metas for k in m})
    # six significant digits of the map's extent: plenty for a plot, a third of the bytes of full floats
    scale = float(np.abs(fitted.xy).max()) if fitted.xy.size else 0.0
    decimals = 6 - int(np.floor(np.log10(scale))) if scale > 0 else 6
    xy = np.round(fitted.xy, decimals)
    return {"space": space, "total": fitted.total, "shown": len(fitted.ids), "sampled": len(fitted.ids) < fitted.total,
            "mean": fitted.mean.tolist(), "components": fitted.components.tolist(), "explained": fitted.explained,
            "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
            "ids": fitted.ids, "names": fitted.names, "keys": keys, "colour": colour,
            "categories": categories + (["other"] if other is not None else []),
            "category": [slot.get(v, other) if v is not None else None for v in values]}


def _fit(db: LoraDB, space: str, sample: int) -> _Fitted:
    # the space's size from its count (kept per database state by both stores): a cached map
    # is found without reading the space's ids
    total = next((s["records"] for s in db.spaces() if s["id"] == space), 0)
    if not total:
        raise _no_space(space)
    n = drawn(sample, total)
    key = (db.location, space, n, db.index.generation())
    with _FITS_LOCK:
        fitting = _FITTING.setdefault(key, threading.Lock())
    with fitting:  # a second request for the same map waits for the first one's fit
        with _FITS_LOCK:
            if key in _FITS:
                _FITS.move_to_end(key)
                return _FITS[key]
        ids = sorted(db.index.ids_in_space(space))
        total = len(ids)  # as read now, should a write have come in between
        if not total:
            raise _no_space(space)
        if total > n:  # seeded, so the same database always draws the same map
            picks = np.random.default_rng(0).choice(total, size=n, replace=False)
            ids = [ids[i] for i in sorted(picks)]
        rows = [row for s in range(0, len(ids), READ_CHUNK) for row in db.index.prototypes(ids[s:s + READ_CHUNK])]
        Z = np.stack([row[3] for row in rows]).astype(np.float64)
        mean = Z.mean(axis=0)
        centred = Z - mean
        components, explained = _principal_axes(centred)
        fitted = _Fitted(total=total, ids=ids, names=[row[1] for row in rows], metas=[row[2] for row in rows], mean=mean,
                         components=components, explained=explained, xy=centred @ components.T)
        with _FITS_LOCK:  # fits of the database's older states are stale; of the rest, the most recently used are kept
            for stale in [k for k in _FITS if k[0] == key[0] and k[3] != key[3]]:
                del _FITS[stale]
            _FITS[key] = fitted
            while len(_FITS) > 1 and sum(len(f.ids) for f in _FITS.values()) > MAX_FIT_POINTS:
                _FITS.popitem(last=False)
            _FITTING.pop(key, None)
    return fitted


def _no_space(space: str) -> NotFound:
    return NotFound(f"no representation space {space!r}; `loradb list DB` shows the spaces in use")


def _principal_axes(X: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The two leading principal axes of centred rows X (2, dim), sign-fixed so a map does not
    flip between runs, and the share of variance each explains.

    Never a dim x dim matrix (12 s and GBs at dim 4096-16384): with few rows, the exact axes
    from the rows' n x n Gram matrix; else a seeded randomized subspace iteration (Halko et al.
    2011) on a thin block, O(n * dim * block) a pass."""
    n, dim = X.shape
    total = float(np.einsum("ij,ij->", X, X))  # the variance's sum: the trace, from X alone
    if min(n, dim) <= EXACT_UP_TO:
        if n <= dim:  # the rows' Gram matrix: its eigenvectors u give the axes X^T u / |X^T u|
            values, u = np.linalg.eigh(X @ X.T)
            vectors = X.T @ u
            vectors /= np.maximum(np.linalg.norm(vectors, axis=0), 1e-300)
        else:
            values, vectors = np.linalg.eigh(X.T @ X)
    else:
        Q = np.linalg.qr(X.T @ np.random.default_rng(0).standard_normal((n, BLOCK)))[0]  # (dim, BLOCK)
        for _ in range(POWER_PASSES):  # each pass sharpens the block towards the leading axes
            Q = np.linalg.qr(X.T @ (X @ Q))[0]
        values, small = np.linalg.eigh((X @ Q).T @ (X @ Q))  # the block's own BLOCK x BLOCK problem
        vectors = Q @ small
    order = np.argsort(values)[::-1][:2]
    order = order[values[order] > 1e-10 * total] if total > 0 else order[:0]  # a flat direction (rounding noise) is no axis
    axes = vectors[:, order].T
    while axes.shape[0] < 2:  # a space flat in a direction: that axis is zero
        axes = np.vstack([axes, np.zeros((1, dim))])
    axes *= np.where(axes[np.arange(2), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    explained = [float(values[i] / total) for i in order] + [0.0] * (2 - len(order))
    return axes, explained
