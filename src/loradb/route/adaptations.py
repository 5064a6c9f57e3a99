"""Named adaptations: the paper's per-dataset flow, made once from an unlabeled sample
(`POST /v1/adaptations`) and served by name. Kept in one JSON file, written atomically,
so they outlive a restart of the router."""

from __future__ import annotations

import json
import re
from pathlib import Path

from loradb.errors import Conflict, LoradbError, NotFound
from loradb.io.files import atomic_write_text
from loradb.lora.merges import MergeSpec
from loradb.route.plan import Part, Plan

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class Adaptations:
    def __init__(self, path: Path):
        self.path = path
        self._plans: dict[str, Plan] = {}
        if path.is_file():
            for name, doc in json.loads(path.read_text()).items():
                self._plans[name] = Plan(parts=tuple(Part(**p) for p in doc["parts"]),
                                         spec=MergeSpec(rank=doc.get("rank")), chosen_by="adaptation",
                                         details=doc.get("details", {}))

    def names(self) -> list[str]:
        return sorted(self._plans)

    def get(self, name: str) -> Plan | None:
        return self._plans.get(name)

    def describe(self) -> list[dict]:
        return [{"name": n, "loradb": self._plans[n].describe()} for n in self.names()]

    def check_new_name(self, name, *, reserved: set[str]) -> str:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise LoradbError("an adaptation's `name` must be 1-128 letters, digits or ._:- (starting with a letter or digit)")
        if name in reserved or name.startswith("loradb"):
            raise LoradbError(f"{name!r} is reserved (loradb:auto, the engine's base model, loradb-*)")
        if name in self._plans:
            raise Conflict(f"an adaptation named {name!r} exists; remove it first (DELETE /v1/adaptations/{name})")
        return name

    def add(self, name: str, plan: Plan, *, n_texts: int) -> Plan:
        plan = Plan(parts=plan.parts, spec=plan.spec, chosen_by="adaptation",
                    details={**plan.details, "adaptation": name, "n_texts": n_texts})
        self._plans[name] = plan
        self._save()
        return plan

    def remove(self, name: str) -> None:
        if name not in self._plans:
            raise NotFound(f"no adaptation named {name!r}")
        del self._plans[name]
        self._save()

    def _save(self) -> None:
        doc = {name: {"parts": [vars(p) for p in plan.parts], "rank": plan.spec.rank, "details": plan.details}
               for name, plan in self._plans.items()}
        atomic_write_text(self.path, json.dumps(doc, indent=2))
