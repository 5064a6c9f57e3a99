"""LoraDB: the one place that orchestrates add / search / compose over a store.

Every public method validates all of its input before it writes anything, so bad input
leaves the database exactly as it was. Writers hold an exclusive lock on the database
directory; blobs are written before the index row that refers to them.
"""

from __future__ import annotations

import builtins
import os
import uuid
from typing import Any, Protocol
from loradb.db.clock import utc_now
from pathlib import Path

import numpy as np

from loradb.lora.adapter import WEIGHTS_NAME, LoraAdapter, adapter_from_files
from loradb.lora.base import BaseModel, load_base
from loradb.lora.identity import legacy_portable, where_is
from loradb.models.locate import locate
from loradb.db.lineage import lineage
from loradb.db.listing import list_filtered
from loradb.db.contribute import Contribution, prepare_contribution, write_record_file
from loradb.db.importing import ImportReport, import_adapters
from loradb.db.arrowsearch import arrow_search
from loradb.db.uploads import check_upload
from loradb.db import maintenance
from loradb.db.keysearch import nearest_by_key, no_records
from loradb.db.results import DEFAULT_K, BaseRef, CheckReport, Hit, SearchResult
from loradb.lora.merges import MergeSpec
from loradb.errors import AccessDenied, BaseModelMismatch, Conflict, LoradbError, StoreError
from loradb.retrieval.privacy import DPConfig
from loradb.retrieval.represent import Representation
from loradb.db.store.protocol import Record, no_data_space
from loradb.retrieval.targets import resolve_target
from loradb.weighting.registry import DEFAULT_METHOD, compute_weights, zero_shot_method
from loradb.weighting.scale import check_scale

class Deleter(Protocol):
    """Who asks to delete a record (access.Principal): may they delete this one?"""

    def may_delete(self, record: Record) -> bool: ...


DEFAULT_KEY_SETTING = "retrieval_key:"  # + space id: the key `loradb key choose` picked for that space
FIT_SETTING = "fit_threshold:"  # + space id + ":" + key: retrieval.fit.FitThreshold as JSON (`loradb key calibrate` / `choose`)


class LoraDB:
    """A LoRA-VecDB: an index of records and a blob store, embedded (a directory with
    index.sqlite and blobs/) or PostgreSQL + pgvector with S3 blobs (a postgresql:// URL)."""

    def __init__(self, location: str | os.PathLike, *, base_models: dict | None = None):
        """Open a database.

        Args:
            base_models: fingerprint -> BaseModel, the only base models this handle ever
                opens (a server: its --base directories). Records' stored base names are then
                opaque labels written by contributors, never paths on this machine. None (the
                command line): a record's base is loaded from its stored directory.
        """
        from loradb.db.store.locate import open_store

        self.location = str(location)
        self.base_models = base_models
        self.index, self.blobs = open_store(location if isinstance(location, str) else Path(location))

    @classmethod
    def init(cls, location: str | os.PathLike, *, blobs: str | None = None) -> "LoraDB":
        """Create an empty database: a new or empty directory, or a postgresql:// URL (then
        `blobs` = s3://bucket/prefix is required; for a directory it is optional)."""
        from loradb.db.store.locate import init_store

        init_store(location if isinstance(location, str) else Path(location), blobs)
        return cls(location)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "LoraDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write_lock(self):
        """Exclusive among all writers of this database, in any process or machine."""
        return self.index.write_lock()

    # ---- reading -------------------------------------------------------------------

    def list(self, *, base: str | None = None, meta: dict[str, str] | None = None,
             fits: str | os.PathLike | None = None) -> list[Record]:
        """Every record, or those matching every filter given (newest first then).

        Args:
            base: a base model's name or fingerprint.
            meta: metadata the records must have (each key with that value).
            fits: a base model folder (or packaged name, or cached hub id): the records made
                for exactly that model, by fingerprint.
        """
        if base is None and not meta and fits is None:
            return self.index.all()
        return list_filtered(self.index, base=base, meta=meta, fits=fits)

    def page(self, offset: int, limit: int) -> builtins.list[Record]:
        """Records in a stable order, `limit` of them from `offset` (how the server pages)."""
        return self.index.page(offset, limit)

    def spaces(self) -> builtins.list[dict]:
        """Each representation space in use: id, base model, recipe, dimension, record count."""
        return self.index.spaces()

    # ---- access tokens (rows; db/access.py makes, checks and revokes them) ---------------

    def tokens(self) -> builtins.list[dict]:
        return self.index.tokens()

    def insert_token(self, row: dict) -> None:
        self.index.insert_token(row)

    def revoke_token_ids(self, ids: builtins.list[str], when: str) -> None:
        self.index.revoke_tokens(ids, when)

    def token_by_secret(self, secret_sha256: str) -> dict | None:
        return self.index.token_by_secret(secret_sha256)

    def get(self, ref: str) -> Record:
        return self.index.get(ref)

    def load_adapter(self, record: Record, weights: Path | None = None) -> LoraAdapter:
        """The stored adapter of a record, its blob verified against the recorded sha256
        (`weights`: that blob's file as adapter_file gave it, not fetched again)."""
        return adapter_from_files(record.adapter_config, weights or self.adapter_file(record), f"record {record.name}")

    def adapter_file(self, record: Record) -> Path:
        """A record's adapter_model.safetensors as a local file (fetched into the blob cache from a
        remote store), verified against the recorded sha256; nothing of it is loaded."""
        try:
            return self.blobs.fetch(record.blob_sha256)
        except StoreError:
            raise StoreError(f"the blob of record {record.name} ({record.blob_sha256[:12]}) is missing or corrupt; "
                             "run `loradb check`") from None

    def export(self, ref: str, out: str | os.PathLike) -> Path:
        """Write a stored adapter back out as a PEFT directory (verified against its sha256)."""
        import json
        import shutil

        from loradb.lora.adapter import CONFIG_NAME
        from loradb.io.files import atomic_output_dir

        record = self.index.get(ref)
        self.load_adapter(record)  # verifies the blob
        with atomic_output_dir(Path(out)) as tmp:
            shutil.copyfile(self.blobs.fetch(record.blob_sha256), tmp / WEIGHTS_NAME)
            config = {**record.adapter_config, "base_model_name_or_path": record.base_name}  # portable, also for old records
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            write_record_file(tmp, record)  # its licence, source, tags...: read back by add and import
        return Path(out)

    # ---- writing -------------------------------------------------------------------

    def add(self, adapter_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
            repr: str | os.PathLike | None = None, name: str | None = None, meta: dict | None = None,
            base: str | os.PathLike | None = None, recipe: dict | None = None, dp: DPConfig | None = None, task: dict | None = None,
            progress: bool = True) -> Record:
        """Validate an adapter and its data representation, then store both.

        Args:
            adapter_dir: PEFT LoRA adapter directory.
            data: the adapter's training texts (z is computed here), or
            repr: a .npy vector made by `loradb represent` (or any float vector for `base`).
            name: unique record name (default: the adapter directory's name).
            meta: free string metadata.
            base: base model directory (default: the adapter's base_model_name_or_path).
            recipe: layer / pooling / max_length for computing z from data (default: the
                recipe of this base model's space already in the database, else the defaults).
            dp: a privacy.DPConfig: release z from `data` with differential privacy.
            task: the adapter's task (represent.task_spec) for the task keys; default: what
                `loradb train` recorded beside the adapter.
        Returns:
            The stored record.
        """
        contribution = prepare_contribution(adapter_dir, data=data, repr=repr, name=name, meta=meta, base=base,
                                            recipe=recipe, spaces=self.index.spaces(), dp=dp, task=task, progress=progress,
                                            name_free=self.require_name_free)
        return self.store(contribution)

    def import_adapters(self, paths: builtins.list[str | os.PathLike], *, base: str | os.PathLike | None = None,
                        meta: dict | None = None, progress: bool = True, on_skip=None) -> ImportReport:
        """Add every adapter under `paths` (PEFT folders, hub-cache trees) that fits its base, without
        its data; skip the rest with a reason each (see importing.import_adapters)."""
        return import_adapters(self, paths, base=base, meta=meta, progress=progress, on_skip=on_skip)

    def require_name_free(self, name: str) -> None:
        """Refuse a name a record already has (asked again under the write lock when storing)."""
        if self.index.name_taken(name):
            raise Conflict(f"a record named {name!r} already exists; pass another `name`")

    def add_uploaded(self, adapter_config: dict, weights: Path, rep: Representation, *, name: str, meta: dict,
                     owner: str | None, bases: dict | None = None) -> Record:
        """Store an adapter sent by a client, validated without its base model's weights
        (see uploads.check_upload for what is checked)."""
        contribution = check_upload(self.index, self.blobs, adapter_config, weights, rep, name=name, meta=meta, bases=bases)
        return self.store(contribution, owner=owner)

    def store(self, c: Contribution, *, owner: str | None = None) -> Record:
        """Write a validated contribution: its blob first, then its index row, under the write lock."""
        rep = c.rep
        if rep is None:  # without its data: no vector, in the base model's space of such records
            fingerprint, base_name = c.base_fingerprint, c.base_name
            space, z = no_data_space(fingerprint), np.zeros(0, dtype=np.float32)
        else:
            fingerprint = rep.space.base_fingerprint
            base_name = legacy_portable(rep.base_name)  # a client of an earlier loradb may still send a path
            space, z = rep.space.to_dict(), rep.z
        record = Record(
            id=uuid.uuid4().hex, name=c.name, base_name=base_name, base_fingerprint=fingerprint,
            space=space, z=z, n_samples=rep.n_samples if rep else None, rank=c.adapter.max_rank,
            target_modules=c.adapter.target_modules, adapter_config={**c.adapter.config, "base_model_name_or_path": base_name},
            blob_sha256="", meta=c.meta, created=utc_now(), owner=owner, privacy=rep.privacy if rep else None,
            var=rep.var if rep else None, task=rep.task if rep else None, task_z=rep.task_z if rep else None,
        )
        with self.write_lock():
            self.require_name_free(c.name)
            self._require_key_inputs(record)
            record.blob_sha256 = self.blobs.put(c.weights)
            self.index.insert(record)
        return record

    def _require_key_inputs(self, record: Record) -> None:
        """A record must carry what its space's chosen retrieval key reads (its task embedding,
        its feature variance): one that lacks it would make every default search of the space fail."""
        from loradb.retrieval.keys import lacks_for

        key = self.default_key(record.space_id)
        lacks = lacks_for(key, record) if key else None
        if lacks:
            raise LoradbError(f"this space searches with retrieval key {key} (`loradb key choose`), which needs {lacks}; "
                              "this adapter's representation has none: add it with its task (`task`, or the "
                              "loradb_training.json `loradb train` writes beside it), or choose another key first")

    def remove(self, ref: str, *, by: Deleter | None = None) -> Record:
        """Delete a record; its blob goes too unless another record shares it.

        Args:
            ref: record id, unique id prefix or name.
            by: the access.Principal asking (None: local use, which may delete anything);
                only the record's owner or an admin may delete it.
        """
        with self.write_lock():
            record = self.index.get(ref)
            if by is not None and not by.may_delete(record):
                raise AccessDenied(f"record {record.name} was contributed by {record.owner or 'a local user'}; "
                                   f"only its owner or an admin token may delete it")
            self.index.delete(record.id)
            if record.blob_sha256 not in self.index.blob_refs():
                self.blobs.delete(record.blob_sha256)
        return record

    def check(self) -> CheckReport:
        """Verify every row and blob; report orphan blobs and stray temp files."""
        return maintenance.check(self)

    def copy_into(self, target: "LoraDB", *, progress: bool = True) -> int:
        """Copy every record with its blob, and the access tokens, into another database
        (see maintenance.copy_into). Returns how many records were copied."""
        return maintenance.copy_into(self, target, progress=progress)

    def gc(self) -> builtins.list[str]:
        """Remove orphan blobs and stray temp files; returns what was removed."""
        return maintenance.gc(self)

    def index_status(self) -> builtins.list[dict]:
        """Each space's search path (exact, or through an approximate index) and that index's state."""
        return self.index.index_status()

    def build_index(self, space: str | None = None, *, keys: tuple[str, ...] | None = None) -> builtins.list[dict]:
        """Build the approximate indexes of `space` (default: every space that needs them) now,
        instead of in the background after the first search: over raw z, and under each of
        `keys` (default: the space's chosen key, if it has one); returns their status."""
        from loradb.retrieval.keys import RAW_L2, get_key

        for key in keys or ():
            get_key(key)
        spaces = [space] if space is not None else [s["id"] for s in self.index.spaces(with_counts=False)]
        chosen = tuple(keys) if keys is not None else tuple(sorted({k for s in spaces if (k := self.default_key(s))}))
        # under each index's own build lock: writers go on
        return self.index.build_index(space, keys=(RAW_L2, *(k for k in chosen if k != RAW_L2)))

    # ---- retrieval and composition ----------------------------------------------------

    def search(self, *, data: str | os.PathLike | None = None, repr: str | os.PathLike | None = None,
               base: str | os.PathLike | None = None, space: str | None = None, k: int = DEFAULT_K,
               method: str = DEFAULT_METHOD, temperature: float | None = None, l1: float | None = None,
               key: str | None = None, task: dict | None = None, target: Representation | None = None, dp: DPConfig | None = None,
               scale: float | None = None, progress: bool = True) -> SearchResult[Record]:
        """Retrieve the k records nearest to the target data and weigh them.

        Args:
            data: the target dataset (unlabeled texts); or
            repr: its representation file (made by `loradb represent`); or
            target: its representation in memory (see resolve_target).
            dp: a privacy.DPConfig: z from `data` released with differential privacy.
            base: base model directory (default: the only base model in the database).
            space: representation space id (default: the only one for that base).
            k: how many adapters to retrieve.
            method: weighting method (uniform, nearest, similarity, linear, sparse).
            temperature: lambda_1 of similarity (None: automatic, see weighting/formulas.py).
            l1: lambda_2 of sparse (None: automatic).
            key: the retrieval key (keys.KEYS; default: the space's chosen key, else raw-l2);
                ranking and weights both use its geometry. `arrow` (keys.DATA_FREE_KEYS) ranks
                every record of the base model, those without data too, by its weights against
                the texts of `data` (uniform, nearest or similarity weights; no fit check).
            task: the target's task (represent.task_spec), for the task keys.
            scale: s of theta0 + s * sum_i w_i delta_i: every weight multiplied by it (default 1);
                the update's size apart from which adapters are chosen (see weighting/scale.py).
        Returns:
            SearchResult: hits (nearest first) with distances and weights, and the residual.
        """
        from loradb.retrieval.fit import decide, members_digest
        from loradb.retrieval.keys import ARROW, RAW_L2, get_key

        zero_shot_method(method)
        check_scale(scale)
        if key is not None and key != ARROW:
            get_key(key)
        if k < 1:
            raise LoradbError(f"`k` must be at least 1, got {k}")
        if key == ARROW:  # the data-free key: every record of the base, with or without z (db/arrowsearch.py)
            if repr is not None or target is not None or dp is not None:
                raise LoradbError(f"retrieval key {ARROW} reads the target's texts (`data`), not a representation")
            return arrow_search(self, data=data, base=base, k=k, method=method, temperature=temperature, scale=scale,
                                progress=progress)
        spaces = self.index.spaces()  # read once: the target's space, and its record count for the fit
        target = resolve_target(spaces, data=data, repr=repr, target=target, base=base, space=space, dp=dp,
                                task=task, progress=progress)
        chosen = None if key else self.default_key(target.space.id)
        key = key or chosen or RAW_L2
        by_key = self._nearest_by_key(key, target, k, fallback=chosen is not None) if key != RAW_L2 else None
        if by_key is None:  # the indexed path: exact or approximate search over raw z
            key = RAW_L2
            hits = self.index.nearest(target.space.id, target.z, k, "l2")
            if not hits:
                raise no_records(target.space.id)
            records = self.index.get_many([h.record_id for h in hits])
            distances, Z, z_trg = [h.distance for h in hits], np.stack([r.z for r in records]), target.z
        else:
            records, distances, Z, z_trg = by_key
        result = compute_weights(method, z_trg, Z, temperature=temperature, l1=l1)
        weights, params = result.weights, {**result.params, "key": key}
        if chosen and key != chosen:
            params["key_fallback"] = f"the space's key {chosen} needs inputs some of its records (or the target) lack"
        if scale is not None and scale != 1.0:
            weights, params = np.asarray(weights) * scale, {**params, "scale": scale}
        d2_nearest = float(((np.asarray(Z, dtype=np.float64) - z_trg) ** 2).sum(axis=1).min())  # in the key's geometry
        weighed = [Hit(r, float(d), float(w)) for r, d, w in zip(records, distances, weights)]
        threshold = self.fit_threshold(target.space.id, key)  # on a fallback: raw-l2's, calibrated beside the chosen key
        members = members_digest(self.index.ids_in_space(target.space.id)) if threshold is not None else None
        return SearchResult(method=method, residual=result.residual, params=params,
                            space=target.space.id, privacy=target.privacy,
                            fit=decide(d2_nearest, threshold, key, members=members,
                                       records=next((s["records"] for s in spaces if s["id"] == target.space.id), None)),
                            hits=weighed, lineage=lineage(weighed))

    def _nearest_by_key(self, key: str, target: Representation, k: int, *, fallback: bool = False):
        """(records, distances, phi(records), phi(target)) of the k nearest under a key (db/keysearch.py):
        through the key's index in a large space, else an exact scan. With `fallback` (the space's own
        key, not one the caller named) None when the target or a record lacks what the key reads."""
        found = nearest_by_key(self, key, target, k, fallback=fallback)
        return None if found is None else (found.records, found.distances, found.phi_records, found.phi_target)

    def default_key(self, space_id: str) -> str | None:
        """The retrieval key chosen for a space (`loradb key choose`), None if none was."""
        return self.index.setting(f"{DEFAULT_KEY_SETTING}{space_id}")

    def choose_key(self, *, family_meta: str = "family", k: int = 5, space: str | None = None) -> dict:
        """Choose a space's default retrieval key on its own records: each record in turn is
        the target (its stored z, variance and task) and the key whose nearest k share its
        family (metadata `family_meta`) most often wins (keys.choose_key). Writes the choice.

        Returns:
            {"space": id, "key": chosen, "precision": {key: mean family precision@k}, "records": n}.
        """
        from loradb.retrieval.keys import KeyInputs, choose_key

        sid = self._one_space(space)
        records = sorted(self.index.in_space(sid), key=lambda r: r.name)  # the same choice on every copy of the records
        unlabeled = [r.name for r in records if family_meta not in r.meta]
        if unlabeled:
            raise LoradbError(f"{len(unlabeled)} records have no metadata {family_meta!r} (e.g. {unlabeled[0]}); "
                              f"add it with `meta` {family_meta}=... or name another key with `by`")
        families = [r.meta[family_meta] for r in records]
        if len(set(families)) < 2:
            raise LoradbError(f"every record has {family_meta}={families[0]!r}; choosing a key needs at least two families")
        chosen = choose_key(KeyInputs.stacked(records), families, k=k)
        with self.write_lock():
            self.index.set_setting(f"{DEFAULT_KEY_SETTING}{sid}", chosen["key"])
        fit = self._calibrate(sid, records, family_meta, chosen["key"]) if len(records) >= 3 else None
        return {"space": sid, **chosen, "records": len(records), "fit": fit}

    def fit_threshold(self, space_id: str, key: str):
        """The space's fit threshold calibrated in `key` (retrieval.fit.FitThreshold), None if none was."""
        from loradb.retrieval.fit import FitThreshold

        stored = self.index.setting(f"{FIT_SETTING}{space_id}:{key}")
        return FitThreshold.from_json(stored) if stored else None

    def calibrate_fit(self, *, family_meta: str = "family", space: str | None = None, key: str | None = None,
                      families_required: bool = False) -> dict:
        """Calibrate the space's fit threshold on its own records, in the geometry of `key`
        (default: the space's default key; retrieval/fit.py): by their families when every record
        has metadata `family_meta`, else by the spread of their nearest-neighbour distances
        (`families_required`: refuse instead, as when the caller named `family_meta`). Writes it
        (one per space and key; raw-l2's too, which judges a search that falls back to it when the
        target lacks what `key` reads); returns it as a dict."""
        from loradb.retrieval.keys import RAW_L2, get_key

        sid = self._one_space(space)
        if key is not None:
            get_key(key)
        records = sorted(self.index.in_space(sid), key=lambda r: r.name)
        unlabeled = [r.name for r in records if family_meta not in r.meta]
        if families_required and unlabeled:
            raise LoradbError(f"{len(unlabeled)} of {len(records)} records have no metadata {family_meta!r} (e.g. "
                              f"{unlabeled[0]}); add it, or leave `by` out to calibrate by nearest-neighbour spread")
        return self._calibrate(sid, records, family_meta, key or self.default_key(sid) or RAW_L2)

    def _calibrate(self, sid: str, records: builtins.list[Record], family_meta: str, key: str) -> dict:
        """The fit threshold of space `sid` from its `records` in `key` (and in raw-l2, the
        fallback), written; as a dict (the one in `key`)."""
        from dataclasses import asdict

        from loradb.retrieval.fit import calibrate, members_digest
        from loradb.retrieval.keys import RAW_L2, KeyInputs

        families = [r.meta.get(family_meta) for r in records]
        members = members_digest(r.id for r in records)
        inputs = KeyInputs.stacked(records)
        thresholds = {k: calibrate(k, inputs, None if None in families else families, members=members)
                      for k in dict.fromkeys((key, RAW_L2))}
        with self.write_lock():
            for k, threshold in thresholds.items():
                self.index.set_setting(f"{FIT_SETTING}{sid}:{k}", threshold.to_json())
        return {"space": sid, **asdict(thresholds[key])}

    def _one_space(self, space: str | None) -> str:
        spaces = [s for s in self.index.spaces() if s["records"] and (space is None or s["id"] == space)]
        if len(spaces) != 1:
            raise LoradbError(f"{len(spaces)} representation spaces match; name one with space (`loradb list` shows them)"
                              if spaces or space is None else f"no records in representation space {space}")
        return spaces[0]["id"]

    def compose(self, out: str | os.PathLike, *, spec: MergeSpec | None = None, weights: dict[str, float] | None = None,
                merged: bool = False, shots: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
                progress: bool = True, max_work_bytes: int | None = None, force: bool = False,
                **search_args: Any) -> SearchResult[Record]:
        """Merge adapters into one: retrieved and weighed (see `search`) or with given weights.

        Args:
            out: output directory (new or empty): a PEFT adapter, or a full model with merged=True.
            spec: the merge mode, its parameters and the output's rank (default: the exact
                weighted sum, at the stacked rank).
            weights: record id or name -> weight, used as given (skips retrieval).
            merged: write base + delta as a full model instead of an adapter.
            shots: for a few-shot method (learned, lorahub): a labeled .jsonl of 1-32 target examples per label.
            labels: labels.json mapping each label to its prompt (default "This text is LABEL.").
            max_work_bytes: refuse (TooLarge) a compose whose working memory (merges.working_bytes)
                would exceed this, before forming it.
            force: compose even when the search's fit decision is to abstain (else Abstained is
                raised and nothing is written).
            **search_args: passed to `search` when weights is None.
        Returns:
            The SearchResult that was composed (for given weights: distances are NaN);
            its `compression` holds the per-module ranks and errors when compressed or merged.
        """
        from loradb.db.compose import run_compose

        return run_compose(self, out, spec or MergeSpec(), weights=weights, merged=merged, shots=shots, labels=labels,
                           progress=progress, max_work_bytes=max_work_bytes, force=force, search_args=search_args)

    # ---- helpers -----------------------------------------------------------------------

    def stored_base(self, record: Record, *, required: bool = True, given=None) -> BaseModel | BaseRef:
        """The base model of a record, loaded from its stored path (or `given`, a directory
        the user names, e.g. after moving the model) and checked by fingerprint.

        When the base is not on this machine (a server holding contributions from
        elsewhere) and not `required`, its name and fingerprint stand in for it: an
        adapter can be composed from factors alone.
        """
        if given is not None:
            base_model = load_base(given)
            if base_model.fingerprint != record.base_fingerprint:
                raise BaseModelMismatch(f"record {record.name} was made for base fingerprint {record.base_fingerprint[:12]}, "
                                        f"not for `base` {base_model.short}")
            return base_model
        if self.base_models is not None:
            if record.base_fingerprint in self.base_models:
                return self.base_models[record.base_fingerprint]
            if not required:
                return BaseRef(record.base_name, record.base_fingerprint)
            raise LoradbError(f"record {record.name}'s base model (fingerprint {record.base_fingerprint[:12]}) is not one "
                              "of the base models this server was started with; it is needed to write the result")
        located = locate(record.base_name, record.base_fingerprint, build_packaged=required)
        if located is None:
            if not required:
                return BaseRef(record.base_name, record.base_fingerprint)
            raise LoradbError(f"record {record.name}'s {where_is(record.base_name, record.base_fingerprint)}; "
                              "it is needed to write the result (pass `base`)")
        base_model = load_base(located)
        if base_model.fingerprint != record.base_fingerprint:
            raise BaseModelMismatch(f"record {record.name} was made for base fingerprint {record.base_fingerprint[:12]} "
                                    f"but {base_model.short} now holds other weights")
        return base_model
