"""What a storage backend provides: records in an index, adapter weights in blobs."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from loradb.retrieval.keys import KeyInputs, References


NO_DATA = "no-data"  # the kind of a base model's space of records added without their data


def no_data_space(base_fingerprint: str) -> dict:
    """The space of a base model's records that have no summary of their data (imported
    adapters): no vector, so no search by z ever reaches them; they are found by name,
    listed, shown, exported and composed with given weights. Its id cannot collide with a
    data space's (those are 16 hex digits)."""
    return {"id": f"{NO_DATA}-{base_fingerprint[:16]}", "kind": NO_DATA, "base_fingerprint": base_fingerprint, "dim": 0}


@dataclass
class Record:
    """One adapter in the database, with the representation of the data it was trained on."""

    id: str
    name: str
    base_name: str
    base_fingerprint: str
    space: dict  # the representation space (Space.to_dict())
    z: np.ndarray  # (dim,), float32; (0,) for a record added without its data (no_data_space)
    n_samples: int | None
    rank: int  # the largest module rank
    target_modules: list[str]
    adapter_config: dict
    blob_sha256: str
    meta: dict = field(default_factory=dict)
    created: str = ""
    owner: str | None = None  # the token name that contributed it through the service (None: added locally)
    privacy: dict | None = None  # how z was privatised (privacy.DPConfig.describe), None: exact mean
    var: np.ndarray | None = None  # (dim,) per-feature variance of the training data's features (retrieval/keys.py)
    task: dict | None = None  # the task it was trained for: {"prompts": [...]} or {"instruction": ...}
    task_z: np.ndarray | None = None  # (dim,) the task's embedding, in the record's space

    @property
    def space_id(self) -> str:
        return self.space["id"]

    @property
    def has_data(self) -> bool:
        """Whether the record carries a summary of its training data (z): one imported without
        its data has none and is found by no data key."""
        return self.z.shape[0] > 0

    @property
    def keys(self) -> list[str]:
        """The retrieval keys this record can be found by (retrieval/keys.py): those of its data
        summary, and the data-free key that reads only its weights."""
        from loradb.retrieval.keys import ARROW, supported_keys

        if not self.has_data:
            return [ARROW]
        return [*supported_keys(has_var=self.var is not None, has_task=self.task_z is not None), ARROW]

    def summary(self) -> dict:
        """The fields `loradb list --json` prints."""
        return {"id": self.id, "name": self.name, "base": self.base_name, "space": self.space_id, "rank": self.rank,
                "n_samples": self.n_samples, "meta": self.meta, "created": self.created, "owner": self.owner,
                "private": self.privacy is not None, "data_summary": self.has_data}

    def details(self) -> dict:
        """Everything `loradb show --json` prints."""
        return {**self.summary(), "base_fingerprint": self.base_fingerprint, "space_recipe": self.space,
                "dim": int(self.z.shape[0]), "z_norm": float(np.linalg.norm(self.z)) if self.has_data else None,
                "target_modules": self.target_modules, "blob_sha256": self.blob_sha256,
                "adapter_config": self.adapter_config, "privacy": self.privacy, "task": self.task, "keys": self.keys}

@dataclass(frozen=True)
class SearchHit:
    record_id: str
    distance: float


class KeyRow(NamedTuple):
    """What a retrieval key reads of one record (an exact key scan reads these, not whole records)."""

    id: str
    name: str
    z: np.ndarray  # float32, as in Record
    var: np.ndarray | None
    task_z: np.ndarray | None


@dataclass(frozen=True)
class KeySearch:
    """A search of a large space under a retrieval key, through that key's index: the hits
    (squared L2 between phi vectors), the References their map used (a snapshot taken when
    the index was built; None for a key that reads none), and how many of the space's rows
    the index left out for lacking what the key reads."""

    hits: list[SearchHit]
    refs: "References | None"
    lacking: int


class IndexStore(Protocol):
    """Records, representation spaces, settings and access tokens: every method LoraDB and
    its helpers call on an index (tests/test_layout.py checks both backends have them)."""

    def close(self) -> None: ...
    def connection_lost(self) -> bool: ...  # a database server's connection broke: reopen the store
    def write_lock(self) -> AbstractContextManager: ...  # exclusive across processes while held
    def setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...
    def insert(self, record: Record) -> None: ...
    def insert_many(self, records: list[Record]) -> None: ...  # all or none
    def get(self, ref: str) -> Record: ...  # id, unique id prefix, or name
    def get_many(self, ids: list[str]) -> list[Record]: ...  # by full id, in that order
    def all(self) -> list[Record]: ...
    def page(self, offset: int, limit: int) -> list[Record]: ...
    def all_for_base(self, base_fingerprint: str, limit: int) -> list[Record]: ...
    def find(self, *, base: str | None = None, space: str | None = None, meta: tuple[str, str] | None = None,
             text: str | None = None, offset: int = 0, limit: int = 50) -> tuple[int, list[Record]]: ...  # the catalogue
    def ids_in_space(self, space_id: str) -> list[str]: ...
    def prototypes(self, ids: list[str]) -> list[tuple[str, str, dict, np.ndarray]]: ...  # (id, name, meta, z)
    def generation(self) -> int: ...  # moves whenever records are added or removed
    def in_space(self, space_id: str) -> list[Record]: ...
    # a space's KeyRows, a chunk at a time, ordered by (name, id) in code-point order (Python's sort)
    def key_rows(self, space_id: str) -> Iterator[list[KeyRow]]: ...
    def delete(self, record_id: str) -> None: ...
    def spaces(self, with_counts: bool = True) -> list[dict]: ...
    def nearest(self, space_id: str, z: np.ndarray, k: int, metric: str = "l2") -> list[SearchHit]: ...
    # a large space under a key other than raw-l2, through that key's index; None when the space is
    # searched exactly (small, or its index is not built yet: a build is started)
    def nearest_by_key(self, space_id: str, key: str, target: "KeyInputs", k: int) -> KeySearch | None: ...
    def integrity_problems(self) -> list[str]: ...
    def name_taken(self, name: str) -> bool: ...
    def blob_refs(self) -> set[str]: ...
    def insert_token(self, token: dict) -> None: ...
    def tokens(self) -> list[dict]: ...
    def token_by_secret(self, secret_sha256: str) -> dict | None: ...
    def revoke_tokens(self, ids: list[str], when: str) -> None: ...
    def index_status(self) -> list[dict]: ...  # per space: how it is searched, its approximate index's state
    def build_index(self, space_id: str | None = None, *, keys: tuple[str, ...] = ("raw-l2",)) -> list[dict]: ...  # build it now; the spaces' status
    def stale_files(self) -> list[Path]: ...  # index files that no space needs any more


class BlobStore(Protocol):
    """Adapter weight files by sha256 (tests/test_layout.py checks both backends have these)."""

    def create(self) -> None: ...
    def describe(self) -> str: ...
    def put(self, src: Path) -> str: ...  # returns the sha256
    def fetch(self, sha256: str) -> Path: ...  # a local, verified copy
    def problem(self, sha256: str) -> str | None: ...  # None, or what is wrong with the stored blob itself
    def delete(self, sha256: str) -> None: ...
    def list(self) -> Iterator[str]: ...
    def stray_temp_files(self) -> builtins.list[Path]: ...
