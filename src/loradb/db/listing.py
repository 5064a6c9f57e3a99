"""LoraDB.list's filters: records of a base model, with given metadata, or made for a model folder."""

from __future__ import annotations

from loradb.errors import LoradbError


def list_filtered(index, *, base: str | None, meta: dict[str, str] | None, fits) -> list:
    """The records matching every filter of LoraDB.list (the first metadata pair in SQL, the rest here)."""
    if fits is not None:
        from loradb.lora.base import load_base
        from loradb.models.packaged import resolve_base

        if base is not None:
            raise LoradbError("give `base` (a name or fingerprint) or `fits` (a model folder), not both")
        base = load_base(resolve_base(str(fits))).fingerprint
    pairs = list((meta or {}).items())
    _, records = index.find(base=base, meta=pairs[0] if pairs else None, limit=1 << 62)  # all of them, in one read
    return [r for r in records if all(r.meta.get(k) == v for k, v in pairs[1:])]
