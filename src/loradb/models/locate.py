"""Where a named base model is on this machine: the folders loradb has identified (lora/identity.py's
registry), the local Hugging Face hub cache, and the models loradb packages (made ready on
first use). A folder counts only when its fingerprint is the one asked for."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from loradb.errors import LoradbError
from loradb.lora.base import load_base
from loradb.lora.identity import hub_snapshots, legacy_portable, registered


def _candidates(name: str, fingerprint: str | None) -> Iterator[Path]:
    if fingerprint is not None:
        yield from registered(fingerprint)
    if legacy_portable(name) != name:  # a path, as earlier loradb versions and PEFT store it
        yield Path(name)
    yield from hub_snapshots(legacy_portable(name))


def locate(name: str, fingerprint: str | None, *, build_packaged: bool = True) -> Path | None:
    """A folder on this machine holding the base model `name` with this fingerprint (any
    folder of that name when the fingerprint is unknown), or None.

    build_packaged: a packaged name may be made ready here (SmolLM2 is converted once, ~1 min).
    """
    def matches(path: Path) -> bool:
        try:
            return os.path.isdir(path) and (fingerprint is None or load_base(path).fingerprint == fingerprint)
        except (LoradbError, OSError):  # not a model folder (any more), or not one this user may read
            return False

    for path in _candidates(name, fingerprint):
        if matches(path):
            return path
    from loradb.models.packaged import PACKAGED

    packaged = legacy_portable(name)
    if packaged in PACKAGED and build_packaged:
        try:
            path = Path(PACKAGED[packaged]())
        except LoradbError:  # not installed here
            return None
        return path if matches(path) else None
    return None


