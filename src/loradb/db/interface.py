"""The interface every database handle offers: LoraDB (a directory or PostgreSQL URL,
opened here) and RemoteDB (a `loradb serve` URL) both implement Database, so the CLI and
library callers use either without knowing which.

tests/test_layout.py checks that both classes have every method below with at least
these parameters (names, kinds and defaults).
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from loradb.db.results import CheckReport, SearchResult
from loradb.lora.merges import MergeSpec


@runtime_checkable
class Database(Protocol):
    def list(self, *, base: str | None = None, meta: dict[str, str] | None = None, fits=None) -> list[Any]:
        """Every record (id, name, base, space, rank, metadata, ...), or those matching every filter
        given: `base` (name or fingerprint), `meta` (each key with that value), `fits` (a base model
        folder: the records made for exactly that model)."""

    def spaces(self) -> builtins.list[dict]:
        """Each representation space in use: id, base model, recipe, dimension, record count."""

    def get(self, ref: str) -> Any:
        """One record by id, unique id prefix, or name."""

    def add(self, adapter_dir: str | os.PathLike, *, data=None, repr=None, name: str | None = None, meta: dict | None = None,
            base=None, recipe: dict | None = None, dp=None, task: dict | None = None, progress: bool = True) -> Any:
        """Store an adapter with the representation of its training data (computed from
        `data` where the data is, or given as `repr`)."""

    def remove(self, ref: str) -> Any:
        """Delete a record (and its adapter file if no other record shares it)."""

    def export(self, ref: str, out: str | os.PathLike) -> Path:
        """Write a stored adapter back out as a PEFT directory."""

    def search(self, *, data=None, repr=None, base=None, space: str | None = None, k: int = 5, method: str = "similarity",
               temperature: float | None = None, l1: float | None = None, key: str | None = None,
               task: dict | None = None, dp=None, progress: bool = True) -> SearchResult:
        """The k records nearest to the target, with their weights."""

    def compose(self, out: str | os.PathLike, *, spec: MergeSpec | None = None, weights: dict | None = None,
                merged: bool = False, shots=None, labels=None, progress: bool = True, force: bool = False,
                **search_args) -> SearchResult:
        """Merge retrieved (or given) adapters into one adapter or model at `out` (Abstained when the
        target fits nothing in the library, unless `force`)."""

    def check(self) -> CheckReport:
        """Verify every row and adapter file."""

    def gc(self) -> builtins.list[str]:
        """Remove orphan adapter files and stray temporary files."""

    def close(self) -> None: ...

    def __enter__(self) -> "Database": ...

    def __exit__(self, *exc) -> None: ...
