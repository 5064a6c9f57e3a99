"""What serves one request: the records and weights to compose (none: the base model), the
merge spec that fits the engine, and how they were chosen. A plan's key names its
composition: equal plans share one composed adapter, on disk and in the engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from urllib.parse import quote

from loradb.lora.merges import MergeSpec


@dataclass(frozen=True)
class Part:
    record_id: str
    name: str
    weight: float


@dataclass(frozen=True)
class Plan:
    parts: tuple[Part, ...]  # empty: serve the base model (an abstain, or a forced base)
    spec: MergeSpec = field(default_factory=MergeSpec)
    chosen_by: str = "record"  # record | auto | adaptation
    details: dict = field(default_factory=dict)  # the search's method, key, fit decision; the adaptation's name

    @property
    def key(self) -> str:
        """A hash of (record ids, weights, merge spec): the composition's identity. Weights are
        written with repr, so two plans share a key only when their weights are the same floats."""
        doc = {"parts": [[p.record_id, repr(float(p.weight))] for p in self.parts],
               "spec": {"merge": self.spec.merge, "rank": self.spec.rank, "max_error": self.spec.max_error,
                        "params": self.spec.params}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @property
    def engine_name(self) -> str:
        """The adapter's name inside the engine (what a forwarded request's `model` says)."""
        return f"loradb-{self.key[:16]}"

    @property
    def record_ids(self) -> frozenset[str]:
        return frozenset(p.record_id for p in self.parts)

    def describe(self) -> dict:
        """The `loradb` field of a response: which records and weights served it, and why."""
        return {"chosen_by": self.chosen_by, "adapter": self.engine_name if self.parts else None,
                "records": [{"id": p.record_id, "name": p.name, "weight": p.weight} for p in self.parts],
                "merge": {"mode": self.spec.merge, "rank": self.spec.rank}, **self.details}

    def header(self) -> str:
        """The same, short, for the X-Loradb-Adapters header: name=weight pairs (names
        percent-encoded: a header is Latin-1), or `base`."""
        return ",".join(f"{quote(p.name, safe='')}={p.weight:.6g}" for p in self.parts) or "base"
