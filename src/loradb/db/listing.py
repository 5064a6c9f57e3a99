"""LoraDB.list's filters (and RemoteDB.list's): records of a base model, with given metadata, or
made for a model folder. The store filters by the base and one metadata pair; the other pairs
are checked here."""

from __future__ import annotations

from loradb.errors import LoradbError


def base_filter(base: str | None, fits) -> str | None:
    """What to filter the records' base by: `base` (a name or fingerprint), or the fingerprint of
    the model folder `fits` (also a packaged name or a cached hub id)."""
    if fits is None:
        return base
    if base is not None:
        raise LoradbError("give `base` (a name or fingerprint) or `fits` (a model folder), not both")
    from loradb.lora.base import load_base
    from loradb.models.packaged import resolve_base

    return load_base(resolve_base(str(fits))).fingerprint


def has_meta(meta: dict, pairs: list[tuple[str, str]]) -> bool:
    return all(meta.get(k) == v for k, v in pairs)


def list_filtered(index, *, base: str | None, meta: dict[str, str] | None, fits) -> list:
    """The records matching every filter of LoraDB.list (the first metadata pair in SQL, the rest here)."""
    pairs = list((meta or {}).items())
    _, records = index.find(base=base_filter(base, fits), meta=pairs[0] if pairs else None,
                            limit=1 << 62)  # all of them, in one read
    return [r for r in records if has_meta(r.meta, pairs[1:])]
