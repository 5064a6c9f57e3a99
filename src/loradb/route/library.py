"""The database side of the router: turning a request's `model` (and its prompt) into a Plan,
and a Plan into a composed adapter directory. Everything here blocks (the base model runs,
the database is read, adapters are merged); the router calls it from one worker thread,
so this object holds the only database handle and the only encoder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from loradb.db.results import DEFAULT_K
from loradb.errors import LoradbError, NotFound
from loradb.lora.merges import MergeSpec
from loradb.route.engine import EngineLimits
from loradb.route.plan import Part, Plan
from loradb.weighting.registry import DEFAULT_METHOD

AUTO = "loradb:auto"
# the options a request may give `loradb:auto` (its `loradb` body field) or an adaptation
SEARCH_OPTIONS = frozenset({"k", "method", "key", "temperature", "l1", "scale", "force", "task", "represent"})
MAX_K = 32


class Library:
    def __init__(self, db_location: str | os.PathLike, *, base: str | os.PathLike, limits: EngineLimits,
                 compositions: Path):
        from loradb.db.database import LoraDB
        from loradb.lora.base import load_base

        self.db = LoraDB(db_location)  # local: the router represents, searches and composes here
        self.base = load_base(base)
        self.limits = limits
        self.compositions = compositions
        compositions.mkdir(parents=True, exist_ok=True)
        self._encoder: Any = None
        self._generation = self._current_generation()

    def close(self) -> None:
        self.db.close()

    # ---- choosing --------------------------------------------------------------------

    def plan_record(self, ref: str) -> Plan | None:
        """The plan for a `model` naming a record (id, unique id prefix or name); None when no
        record has that name."""
        try:
            record = self.db.get(ref)
        except NotFound:
            return None
        return self._fitted(Plan(parts=(Part(record.id, record.name, 1.0),), chosen_by="record"), [record])

    def plan_auto(self, texts: list[str], options: dict, *, chosen_by: str = "auto") -> Plan:
        """The paper's flow on the request's own texts: z under the space's recipe, retrieval,
        weights, the fit decision (abstain: the base model serves), and a spec that fits the engine."""
        args = search_options(options)
        force = args.pop("force", False)
        texts = args.pop("represent", None) or texts
        target = self._represent(texts, args.get("task"))
        result = self.db.search(target=target, progress=False, **args)
        details = {"method": result.method, "key": result.params.get("key"), "fit": result.fit}
        if result.fit is not None and result.fit.get("decision") == "abstain" and not force:
            return Plan(parts=(), chosen_by=chosen_by, details={**details, "abstained": True})
        hits = [h for h in result.hits if h.weight != 0.0]
        if not hits:
            raise LoradbError("every retrieved adapter got weight 0; nothing to compose")
        parts = tuple(Part(h.record.id, h.record.name, float(h.weight)) for h in hits)
        return self._fitted(Plan(parts=parts, chosen_by=chosen_by, details=details), [h.record for h in hits])

    def check_plan(self, plan: Plan) -> None:
        """Refuse a stored plan (an adaptation) whose records are no longer in the database."""
        for part in plan.parts:
            try:
                self.db.get(part.record_id)
            except NotFound:
                raise NotFound(f"record {part.name} ({part.record_id[:12]}) of this adaptation was removed from the "
                               "database; make the adaptation again") from None

    def _represent(self, texts: list[str], task: dict | None):
        from loradb.retrieval.represent import Encoder, as_task

        space = self._space()
        if self._encoder is None:
            self._encoder = Encoder(self.base.path, layer=space["layer"], pooling=space["pooling"],
                                    max_length=space["max_length"])
        rep = self._encoder.represent(texts, progress=False)
        return rep.with_task(self._encoder, as_task(task))

    def _space(self) -> dict:
        """The one representation space of the engine's base model that holds records."""
        spaces = [s for s in self.db.spaces() if s["base_fingerprint"] == self.base.fingerprint and s["records"] > 0]
        if len(spaces) != 1:
            raise LoradbError(f"the database holds {len(spaces)} representation spaces with records for the engine's "
                              f"base model {self.base.short}; `loradb:auto` needs exactly one")
        return spaces[0]

    def warm(self) -> None:
        """Load the encoder now, so that the first `loradb:auto` request does not pay for it."""
        try:
            self._represent(["warm up"], None)
        except LoradbError:
            pass  # no space yet: the first auto request says so

    def _check_base(self, record) -> None:
        if record.base_fingerprint != self.base.fingerprint:
            raise LoradbError(f"record {record.name} is an adapter for another base model ({record.base_fingerprint[:12]}), "
                              f"not the engine's {self.base.short}")

    def _fitted(self, plan: Plan, records) -> Plan:
        """The plan with a merge spec the engine can load: the exact stacked rank when it is within
        the engine's max_lora_rank, else compressed to it (the error is reported with the result)."""
        for record in records:
            self._check_base(record)
        stacked = sum(int(r.rank) for r in records)
        if stacked <= self.limits.max_lora_rank:
            return plan
        return Plan(parts=plan.parts, spec=MergeSpec(rank=self.limits.max_lora_rank), chosen_by=plan.chosen_by,
                    details={**plan.details, "compressed": {"stacked_rank": stacked, "rank": self.limits.max_lora_rank}})

    # ---- composing -------------------------------------------------------------------

    def compose(self, plan: Plan) -> tuple[Path, dict | None]:
        """The plan's adapter directory (made once; kept under compositions/KEY) and, when it
        was compressed, the per-module relative errors."""
        out = self.compositions / plan.key
        if (out / "adapter_config.json").is_file():
            return out, None
        weights = {p.record_id: p.weight for p in plan.parts}
        result = self.db.compose(out, weights=weights, spec=plan.spec, progress=False)
        return out, result.compression

    def discard(self, plan_key: str) -> None:
        shutil.rmtree(self.compositions / plan_key, ignore_errors=True)

    def clear_compositions(self) -> None:
        """Delete every composition on disk (at start: the engine holds none of them any more)."""
        for folder in self.compositions.iterdir():
            shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)

    # ---- invalidation ----------------------------------------------------------------

    def _current_generation(self) -> int | None:
        index = getattr(self.db, "index", None)
        return index.generation() if index is not None else None

    def removed_records(self, ids: set[str]) -> set[str]:
        """Which of `ids` are gone from the database; cheap when nothing was added or removed
        since the last call (the store's generation did not move)."""
        generation = self._current_generation()
        if generation is not None and generation == self._generation:
            return set()
        self._generation = generation
        gone = set()
        for record_id in ids:
            try:
                self.db.get(record_id)
            except NotFound:
                gone.add(record_id)
        return gone

    def record_names(self) -> list[str]:
        return [r.name for r in self.db.list() if r.base_fingerprint == self.base.fingerprint]


def search_options(options: dict | None) -> dict:
    """A request's `loradb` options as search arguments, checked (unknown names refused)."""
    options = dict(options or {})
    unknown = sorted(set(options) - SEARCH_OPTIONS)
    if unknown:
        raise LoradbError(f"unknown loradb option(s) {', '.join(unknown)}; known: {', '.join(sorted(SEARCH_OPTIONS))}")
    k = options.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise LoradbError(f"loradb option k must be a whole number from 1 to {MAX_K}, got {k!r}")
    method = options.get("method", DEFAULT_METHOD)
    if not isinstance(method, str):
        raise LoradbError(f"loradb option method must be a string, got {method!r}")
    for name in ("temperature", "l1", "scale"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise LoradbError(f"loradb option {name} must be a number, got {value!r}")
    if "force" in options and not isinstance(options["force"], bool):
        raise LoradbError(f"loradb option force must be true or false, got {options['force']!r}")
    if options.get("key") is not None and not isinstance(options["key"], str):
        raise LoradbError(f"loradb option key must be a string, got {options['key']!r}")
    represent = options.get("represent")
    if represent is not None:
        represent = [represent] if isinstance(represent, str) else represent
        if not isinstance(represent, list) or not represent or not all(isinstance(t, str) and t.strip() for t in represent):
            raise LoradbError("loradb option represent must be a text or a non-empty list of texts: what z is computed "
                              "from instead of the prompt (e.g. the input without the instruction)")
    return {"k": k, "method": method, **{n: options[n] for n in ("key", "temperature", "l1", "scale", "force", "task")
                                         if options.get(n) is not None},
            **({"represent": represent} if represent is not None else {})}
