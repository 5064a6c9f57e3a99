"""The compose pipeline of LoraDB, as plain steps:

    hits (retrieved and weighed, or given) -> weights (learned from shots, for a few-shot
    method) -> compatibility (one base model, one layer naming, one layout) -> merge
    (lora/merges.py, by the MergeSpec) -> write (an adapter, or the base with it merged)

Each step returns a new value; nothing is overwritten in place.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from loradb.db.lineage import card_for, lineage
from loradb.db.results import BaseRef, Hit, SearchResult
from loradb.db.store.protocol import Record
from loradb.errors import Abstained, BaseModelMismatch, LoradbError, TooLarge
from loradb.lora.adapter import LoraAdapter, factor_shapes
from loradb.lora.base import BaseModel, resolve_module
from loradb.lora.merges import MergeSpec, merge, working_bytes_of_shapes
from loradb.weighting.registry import METHODS
from loradb.weighting.shots import learn_weights_on, read_few_shot


def run_compose(db, out: str | os.PathLike, spec: MergeSpec, *, weights: dict[str, float] | None, merged: bool,
                shots, labels, progress: bool, max_work_bytes: int | None, search_args: dict,
                force: bool = False) -> SearchResult:
    """LoraDB.compose (see there for the arguments)."""
    method = search_args.get("method")
    few_shot = read_few_shot(method, shots, labels)
    result = _hits(db, weights, search_args, few_shot_method=method if few_shot else None, progress=progress)
    refuse_if_abstained(result, force)
    if result.fit is not None and result.fit.get("decision") == "abstain":  # composed anyway: said in its output and provenance
        result = replace(result, fit={**result.fit, "forced": True})
    files = {h.record.id: db.adapter_file(h.record) for h in result.hits}  # each blob fetched and verified once
    if max_work_bytes is not None:  # from the blobs' headers, before any adapter is loaded
        check_work([files[h.record.id] for h in (result.hits if few_shot else _nonzero(result.hits))], spec,
                   max_work_bytes)
    loaded = {h.record.id: db.load_adapter(h.record, files[h.record.id]) for h in result.hits}
    if few_shot:
        assert method is not None  # read_few_shot gives shots only for a few-shot method
        learned, params = learn_weights_on(method, [loaded[h.record.id] for h in result.hits],
                                           [h.weight for h in result.hits], few_shot,
                                           db.stored_base(result.hits[0].record, given=search_args.get("base")))
        result = result.reweighted(method, learned, params)
    used = _nonzero(result.hits)
    records = [h.record for h in used]
    base_model = _one_base(db, records, required=merged, given=search_args.get("base"))
    adapters = [loaded[r.id] for r in records]
    fan_in_fan_out = _compatible(base_model, records, adapters)
    from loradb.lora.compose import factors_of

    factors = [factors_of(a) for a in adapters]
    composed, compression = merge(factors, [h.weight for h in used], spec)
    result = replace(result, compression=compression)
    _write(Path(out), composed, result, base_model, adapters, fan_in_fan_out, merged=merged)
    return result


def _nonzero(hits: list[Hit]) -> list[Hit]:
    """The hits a composition uses: adapters weighted exactly 0 (nearest, sparse) add nothing but rank."""
    return [h for h in hits if h.weight != 0.0] or hits[:1]


def check_work(files: list[Path], spec: MergeSpec, max_work_bytes: int) -> None:
    """Refuse a compose whose working memory (lora/merges.py working_bytes) would pass the limit,
    estimated from each adapter file's safetensors header: no factor is read first."""
    shapes = [factor_shapes(f) for f in files]
    need = working_bytes_of_shapes(shapes, merge=spec.merge, compressed=spec.compressed)
    if need > max_work_bytes:
        raise TooLarge(f"this compose of {len(files)} adapters (merge {spec.merge}) needs about {need / 2**20:.0f} MiB "
                       f"of working memory; the limit here is {max_work_bytes / 2**20:.0f} MiB: use fewer "
                       "adapters or the exact merge")


def refuse_if_abstained(result: SearchResult, force: bool) -> None:
    """Nothing is composed for a target that nothing in the library fits, unless forced."""
    if not force and result.fit is not None and result.fit.get("decision") == "abstain":
        raise Abstained(f"{result.fit['reason']}; nothing was written (`force`, --force on the command line, composes "
                        "anyway)", result.fit, result)


def _hits(db, weights, search_args: dict, *, few_shot_method: str | None, progress: bool) -> SearchResult:
    """The given weights, or the retrieved hits weighed by the zero-shot method (for a
    few-shot method: the one it starts from)."""
    check_weights_or_target(weights, search_args)
    if weights is not None:
        return given_hits(db, weights)
    if few_shot_method is not None:
        search_args = {**search_args, "method": METHODS[few_shot_method].starts_from}
    return db.search(progress=progress, **search_args)


def given_hits(db, weights: dict[str, float]) -> SearchResult:
    """The records named in `weights` (id, id prefix or name) with those weights, as given."""
    if not weights:
        raise LoradbError("weights must name at least one record")
    hits = []
    seen = set()
    for ref, w in weights.items():
        if not np.isfinite(w):
            raise LoradbError(f"weight for {ref} must be a finite number, got {w}")
        record = db.get(ref)
        if record.id in seen:
            raise LoradbError(f"record {record.name} is given twice in the weights")
        seen.add(record.id)
        hits.append(Hit(record, float("nan"), float(w)))
    return SearchResult(method="given", hits=hits, residual=None, lineage=lineage(hits))


def check_weights_or_target(weights, search_args: dict) -> None:
    """A compose takes given weights or a target to retrieve for, not both; `scale` only
    multiplies retrieved zero-shot weights (LoraDB and RemoteDB)."""
    if weights is not None and any(search_args.get(k) is not None for k in ("data", "repr", "target")):
        raise LoradbError("give either `weights` or a target (`data` or `repr`), not both")
    if search_args.get("scale") is None:
        return
    if weights is not None:
        raise LoradbError("`scale` multiplies retrieved weights; given weights are used as they are (scale them yourself)")
    method = METHODS.get(search_args.get("method") or "")
    if method is not None and method.starts_from:
        raise LoradbError(f"`scale` multiplies zero-shot weights; {method.name} learns its own from the shots")


def _one_base(db, records: list[Record], *, required: bool, given) -> BaseModel | BaseRef:
    """The one base model every used record belongs to."""
    fingerprints = {r.base_fingerprint for r in records}
    if len(fingerprints) > 1:
        a, b = records[0], next(r for r in records if r.base_fingerprint != records[0].base_fingerprint)
        raise BaseModelMismatch(f"records {a.name} and {b.name} belong to different base models: {a.base_name} "
                                f"(fingerprint {a.base_fingerprint[:12]}) and {b.base_name} (fingerprint {b.base_fingerprint[:12]})")
    return db.stored_base(records[0], required=required, given=given)


def _compatible(base_model: BaseModel | BaseRef, records: list[Record], adapters: list[LoraAdapter]) -> bool:
    """Refuse adapters that cannot be summed layer by layer; returns the fan_in_fan_out to write."""
    _check_module_naming(base_model, records, adapters)
    fan = {a.fan_in_fan_out for a in adapters}
    if len(fan) == 1:
        return fan.pop()
    # a flag set by hand disagrees with the others: the base's own layers decide the layout
    # (BaseModel.stores_transposed), as PEFT does; only a base nobody can build here leaves it open
    if isinstance(base_model, BaseModel) and base_model.transposed_weights is not None:
        return bool(base_model.transposed_weights)
    raise LoradbError(f"the adapters disagree on fan_in_fan_out and base model {base_model.short} cannot be built here "
                      "to tell its layers' layout; fix the flag of the hand-made adapter")


def _write(out: Path, composed: dict, result: SearchResult, base_model, adapters: list[LoraAdapter], fan_in_fan_out: bool,
           *, merged: bool) -> None:
    from loradb.lora.export import write_composed_adapter, write_merged_model

    provenance = {"loradb_compose": 1, "base": base_model.name, "base_fingerprint": base_model.fingerprint,
                  **result.to_dict()}
    assert result.lineage is not None  # every SearchResult a compose uses carries it (search, given_hits, reweighted)
    card = card_for(provenance)
    if merged:
        write_merged_model(out, composed, fan_in_fan_out=fan_in_fan_out, base=base_model, provenance=provenance, card=card)
    else:
        task_types = {a.task_type for a in adapters}
        write_composed_adapter(out, composed, fan_in_fan_out=fan_in_fan_out, base=base_model,
                               task_type=task_types.pop() if len(task_types) == 1 else None, provenance=provenance,
                               card=card)


def _check_module_naming(base_model: BaseModel | BaseRef, records: list[Record], adapters: list[LoraAdapter]) -> None:
    """Refuse adapters that name one base layer differently (saved from different model
    classes, e.g. "bert.encoder..." vs "encoder..."): their factors would not be summed.
    Without the base model's weights (a BaseRef), a name that is a dotted suffix of
    another adapter's name counts as the same layer."""
    if isinstance(base_model, BaseRef):
        names = {name for adapter in adapters for name in adapter.modules}
        def layer_of(name):
            return min((other for other in names if other == name or other.endswith("." + name) or name.endswith("." + other)),
                       key=len)
    else:
        def layer_of(name):
            return resolve_module(base_model, name)
    named: dict[str, tuple[str, str]] = {}
    for record, adapter in zip(records, adapters):
        for name in adapter.modules:
            key = layer_of(name)
            other = named.setdefault(key, (name, record.name))
            if other[0] != name:
                raise LoradbError(f"records {other[1]} and {record.name} name the same layer {key} differently "
                                  f"({other[0]!r} vs {name!r}); they were saved from different model classes")
