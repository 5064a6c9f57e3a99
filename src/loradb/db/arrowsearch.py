"""Search under the data-free key `arrow`: every record of a base model, with or without a data
summary, ranked by its adapter's weights against the target's texts.

Each adapter's arrows (per module, the top right-singular vector of B A: retrieval/arrow.py)
come from its weights alone; the target's texts run once through the frozen base model, and an
adapter scores the mean |<h, v>| of its arrows over the target's tokens and its modules (the
dataset-level Arrow score, after Ostapenko et al. 2024). So a record imported without its data
is found, and the benchmark's `arrow` row (evaluate/fold.py: the same arrow_scores) measures
what this key loses against the keys that read the data.

The texts never leave the machine: a server sees only z, so this key runs on a local database.
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from loradb.db.lineage import lineage
from loradb.db.results import Hit, SearchResult
from loradb.db.store.protocol import Record
from loradb.errors import LoradbError
from loradb.io.data import iter_texts
from loradb.io.files import atomic_file, cache_dir
from loradb.lora.base import BaseModel, load_base
from loradb.retrieval.arrow import arrow_gaps, arrow_scores_of, arrow_select, arrow_weights, arrows
from loradb.retrieval.fit import COMPOSE
from loradb.retrieval.keys import ARROW

# as many of the target's texts as the benchmark's arrow row reads (evaluate/config.py), so that row
# measures this key: a seeded sample of a larger file; 128 tokens of each (the benchmark cuts them
# at its adapters' training length)
ARROW_TEXTS = 64
ARROW_MAX_LENGTH = 128
_ARROWS: dict[str, dict[str, np.ndarray]] = {}  # blob sha256 -> its arrows: a blob's content never changes


def sample_texts(data, n: int = ARROW_TEXTS, seed: int = 0) -> list[str]:
    """Up to n texts of a data file, a seeded uniform sample (reservoir: the file is streamed once)."""
    rng = random.Random(seed)
    kept: list[str] = []
    for i, text in enumerate(iter_texts(data)):
        if i < n:
            kept.append(text)
        elif (j := rng.randrange(i + 1)) < n:
            kept[j] = text
    return kept


def _base_of(db, records: list[Record], base) -> BaseModel:
    """The base model to score under: `base` if given, else the database's one base model."""
    if base is not None:
        return load_base(base)
    fingerprints = sorted({r.base_fingerprint for r in records})
    if len(fingerprints) != 1:
        raise LoradbError("the database holds records of several base models; name one with `base`"
                          if fingerprints else "the database holds no records")
    first = next(r for r in records if r.base_fingerprint == fingerprints[0])
    found = db.stored_base(first)
    assert isinstance(found, BaseModel)  # required=True: located and loaded, or refused
    return found


def _arrows_of(db, record: Record) -> dict[str, np.ndarray]:
    """A record's arrows: kept in this process, and on this machine by its weights' sha256, so a
    search over a large imported library reads each adapter's weights once, not on every search."""
    sha = record.blob_sha256
    if sha not in _ARROWS:
        kept = _kept_arrows(sha)
        if kept is None:
            kept = arrows(db.load_adapter(record))
            _keep_arrows(sha, kept)
        _ARROWS[sha] = kept
    return _ARROWS[sha]


ARROWS_VERSION = 1  # of retrieval/arrow.arrows: a change to how arrows are made starts a new folder


def _arrows_file(sha: str) -> Path:
    return cache_dir() / "arrows" / f"v{ARROWS_VERSION}" / f"{sha}.npz"


def _kept_arrows(sha: str) -> dict[str, np.ndarray] | None:
    """The arrows an earlier search kept for these weights; None when absent or unreadable (then
    they are computed again: the cache is a shortcut, never a source)."""
    try:
        with np.load(_arrows_file(sha), allow_pickle=False) as kept:
            out = {name: kept[name] for name in kept.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if not out or any(v.ndim != 1 or v.dtype != np.float64 or not np.isfinite(v).all() for v in out.values()):
        return None
    return out


def _keep_arrows(sha: str, vectors: dict[str, np.ndarray]) -> None:
    """Write whole or not at all; a cache that cannot be written only costs the next search time."""
    try:
        with atomic_file(_arrows_file(sha)) as f:
            arrays: dict[str, Any] = dict(vectors)  # module names as the archive's keys
            np.savez(f, **arrays)
    except (OSError, TypeError):  # TypeError: a module named as one of savez's own arguments
        pass


def arrow_search(db, *, data: str | os.PathLike | None, base, k: int, method: str, temperature: float | None,
                 scale: float | None, progress: bool = True) -> SearchResult[Record]:
    """The k records of the base model whose arrows the target's texts point along most, weighed
    by arrow_weights; distance 1 - score / best score (0 for the best)."""
    from tqdm.auto import tqdm

    from loradb.models.loading import load_model

    if data is None:
        raise LoradbError(f"retrieval key {ARROW} reads the target's texts through the base model: give `data` "
                          "(a representation holds none)")
    texts = sample_texts(data)
    everything = db.index.all()
    base_model = _base_of(db, everything, base)
    records = sorted((r for r in everything if r.base_fingerprint == base_model.fingerprint), key=lambda r: (r.name, r.id))
    if not records:
        raise LoradbError(f"no records for base model {base_model.short}")
    vectors = [_arrows_of(db, r) for r in tqdm(records, desc="arrows", unit="adapter", disable=None if progress else True,
                                               leave=False)]
    model, tokenizer = load_model(base_model.path)
    model.eval()
    scores = arrow_scores_of(model, tokenizer, texts, vectors, max_length=ARROW_MAX_LENGTH)
    order = arrow_select(scores, k)
    weights, params = arrow_weights(method, scores[order], temperature)
    if scale is not None and scale != 1.0:
        weights, params = weights * scale, {**params, "scale": scale}
    gaps = arrow_gaps(scores[order])
    hits = [Hit(records[i], float(gap), float(w)) for i, gap, w in zip(order, gaps, weights)]
    fit = {"score": None, "decision": COMPOSE, "key": ARROW,
           "reason": f"the data-free key {ARROW} has no fit threshold: composing without a check"}
    return SearchResult(method=method, hits=hits, residual=None,
                        params={**params, "key": ARROW, "texts": len(texts),
                                "scores": {records[i].name: float(scores[i]) for i in order}},
                        space=None, fit=fit, lineage=lineage(hits))
