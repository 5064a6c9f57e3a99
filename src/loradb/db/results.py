"""What database operations return: search hits and results, check reports, a base model
known only by name and fingerprint. Plain data, shared by LoraDB and RemoteDB."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar


DEFAULT_K = 5


class Identified(Protocol):
    """What a hit needs of its record: a Record (LoraDB) or a service.wire.RemoteRecord (RemoteDB)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=Identified)


@dataclass
class Hit(Generic[R]):
    """A retrieved record with its distance to the target and its ensemble weight."""

    record: R
    distance: float
    weight: float

    def to_dict(self) -> dict:
        return {"id": self.record.id, "name": self.record.name, "distance": self.distance, "weight": self.weight}


@dataclass
class SearchResult(Generic[R]):
    method: str
    hits: list[Hit[R]]
    residual: float | None
    params: dict = field(default_factory=dict)
    space: str | None = None
    compression: dict | None = None  # set by compose --rank: per-module ranks and relative errors
    privacy: dict | None = None  # the target z's differential privacy, when it was released with some
    fit: dict | None = None  # retrieval.fit.decide: does anything here fit the target (score, decision, reason)
    lineage: dict | None = None  # db/lineage.py: the parts a composition of these hits weights, and its licence

    def reweighted(self, method: str, weights, params: dict) -> "SearchResult[R]":
        """The same hits with other weights (e.g. learned from shots), as a new result."""
        from loradb.db.lineage import lineage

        hits = [replace(h, weight=float(w)) for h, w in zip(self.hits, weights, strict=True)]
        return replace(self, method=method, hits=hits, params={**self.params, **params},
                       lineage=lineage(hits) if self.lineage is not None else None)

    def to_dict(self) -> dict:
        doc = {"method": self.method, "results": [h.to_dict() for h in self.hits], "residual": self.residual,
               "params": self.params, "space": self.space}
        if self.compression is not None:
            doc["compression"] = self.compression
        if self.privacy is not None:
            doc["privacy"] = self.privacy
        if self.fit is not None:
            doc["fit"] = self.fit
        if self.lineage is not None:
            doc["lineage"] = self.lineage
        return doc


@dataclass
class CheckReport:
    problems: list[str]
    orphans: list[str]
    temp_files: list[str]
    records: int

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"clean": self.clean, "records": self.records, "problems": self.problems, "orphans": self.orphans,
                "temp_files": self.temp_files}


@dataclass(frozen=True)
class BaseRef:
    """A base model known only by name and fingerprint (a server composes without its weights)."""

    name: str
    fingerprint: str

    @property
    def short(self) -> str:
        return f"{self.name} (fingerprint {self.fingerprint[:12]})"
