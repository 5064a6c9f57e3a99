"""A contribution: an adapter validated against its base model, with the representation of
its training data, ready to be stored locally or uploaded to a server."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loradb.lora.adapter import FINGERPRINT_KEY, WEIGHTS_NAME, LoraAdapter, read_adapter
from loradb.lora.base import BaseModel, check_adapter_fits, load_base
from loradb.lora.identity import legacy_portable
from loradb.models.locate import locate
from loradb.db.lineage import LICENCE_KEYS, composed_meta
from loradb.models.prompts import training_info
from loradb.errors import BaseModelMismatch, LoradbError
from loradb.retrieval.represent import Representation, as_task, task_spec
from loradb.retrieval.targets import represent_dataset, representation_from_file, with_task_key

_NAME = re.compile(r"^[^\x00-\x1f=/\\]{1,200}$")


_ID_LIKE = re.compile(r"[0-9a-fA-F]{4,}")


def check_name(name: str, what: str = "record name") -> str:
    """Refuse names that are malformed or could be read as an id (or id prefix): a name must
    never stand for another record in `compose --weights NAME=w` or `export NAME`."""
    if not isinstance(name, str) or not _NAME.match(name) or name != name.strip():
        raise LoradbError(f"invalid {what} {name!r}: 1-200 characters, no '=', '/', '\\', control characters or surrounding spaces")
    if name in (".", ".."):
        raise LoradbError(f"invalid {what} {name!r}: it reads as a folder of a path")
    if _ID_LIKE.fullmatch(name):
        raise LoradbError(f"invalid {what} {name!r}: a name made only of hex digits could be read as an id; "
                          "add a letter beyond a-f or a '-'")
    return name


def check_meta(meta: dict | None) -> dict[str, str]:
    """A record's metadata as strings; a key or value holding NUL is refused (no database text
    can hold it: PostgreSQL refuses the row, after the adapter's blob was written)."""
    out = {str(k): str(v) for k, v in (meta or {}).items()}
    for key, value in out.items():
        if "\x00" in key or "\x00" in value:
            raise LoradbError(f"metadata {key!r}: keys and values cannot hold the NUL character")
    return out


@dataclass
class Contribution:
    """A validated adapter with the representation of its training data, ready to store."""

    adapter: LoraAdapter  # parsed from `weights`, config included
    weights: Path  # its adapter_model.safetensors
    rep: Representation | None  # None: added without its data (loradb import), so found by no data key
    name: str
    meta: dict
    base_name: str = ""  # without `rep`: the base model's portable name and fingerprint
    base_fingerprint: str = ""


def prepare_contribution(adapter_dir: str | os.PathLike, *, data=None, repr=None, name: str | None = None,
                         meta: dict | None = None, base=None, recipe: dict | None = None, spaces: Sequence[dict] = (),
                         dp=None, task: dict | None = None, progress: bool = True,
                         name_free: Callable[[str], None] | None = None, without_data: bool = False,
                         stated_base_must_match: bool = False, inferred_meta: dict | None = None) -> Contribution:
    """Validate an adapter against its base model and compute (or read) its representation.

    Args:
        adapter_dir, data, repr, name, meta, base, recipe: as LoraDB.add.
        spaces: the target database's spaces in use; when `recipe` is None the base model's
            one space there sets the recipe, so new records land beside the old.
        dp: a privacy.DPConfig to release z from `data` with differential privacy.
        task: the task the adapter was trained for (represent.task_spec), stored as its task
            key; default: the label prompts or instruction `loradb train` recorded beside it.
        name_free: raises when the database cannot take a record of this name (taken, or the
            caller may not add): asked before the data is encoded, which can take minutes.
        without_data: store the adapter with no summary of its data (neither `data` nor `repr`):
            it is then found by name, not by a data key.
        stated_base_must_match: with `base`, also refuse an adapter whose stated base is not on
            this machine and is named otherwise than `base` (a bulk import checks what it can,
            where one `add --base` is the user's word for one adapter).
        inferred_meta: what a caller read around the folder (an import's card and source): kept
            under what the folder's own loradb files say, and under `meta`.
    """
    if without_data and (data is not None or repr is not None):
        raise LoradbError("an adapter added without its data takes neither `data` nor `repr`")
    if not without_data and (data is None) == (repr is None):
        raise LoradbError("give exactly one of `data` FILE or `repr` Z.npy")
    if dp is not None and data is None:
        raise LoradbError("`dp_epsilon` privatises z computed from `data`; a `repr` vector is stored as it was made")
    name = check_name(name if name is not None else Path(adapter_dir).resolve().name)
    if name_free is not None:
        name_free(name)
    adapter = read_adapter(adapter_dir)
    base_model = _base_for_adapter(adapter, base, adapter_dir, stated_base_must_match)
    check_adapter_fits(base_model, adapter, f"adapter {adapter_dir}")
    meta = _with_folder_meta(adapter_dir, check_meta(meta), check_meta(inferred_meta))  # before z (minutes): a bad file fails first
    if not without_data:  # without a representation there is no task key: the folder's task is not read
        task = as_task(task) if task is not None else trained_task(adapter_dir)
    rep: Representation | None
    if without_data:
        rep = None
    elif data is not None:
        rep = represent_dataset(base_model.path, data, progress=progress, dp=dp, task=task,
                                **(recipe or _existing_recipe(spaces, base_model)))
    else:
        rep = with_task_key(representation_from_file(repr, base_model), task, base_model)
    return Contribution(adapter=adapter, weights=Path(adapter_dir) / WEIGHTS_NAME, rep=rep, name=name, meta=meta,
                        base_name=base_model.name, base_fingerprint=base_model.fingerprint)


def _with_folder_meta(adapter_dir, given: dict[str, str], inferred: dict[str, str]) -> dict[str, str]:
    """The metadata a record keeps: what was inferred around the folder, under what the folder
    says (what `loradb train` measured, the lineage of a composition, the record it was
    exported from), under what the caller gives."""
    found = {**inferred, **validation_meta(adapter_dir), **composed_meta(adapter_dir), **exported_meta(adapter_dir)}
    if any(key in given for key in LICENCE_KEYS):  # the contributor's own statement of the licence wins
        found = {k: v for k, v in found.items() if k not in LICENCE_KEYS}
    return {**found, **given}


RECORD_NAME = "loradb_record.json"  # written by `export` beside the adapter: the record's name, base and metadata


def write_record_file(folder: Path, record) -> None:
    """The record an adapter is exported from, beside it (RECORD_NAME): a local Record or a
    server's RemoteRecord (both have id, name, base_name, base_fingerprint, meta)."""
    import json

    doc = {"name": record.name, "id": record.id, "base": record.base_name, "base_fingerprint": record.base_fingerprint,
           "meta": record.meta}
    (Path(folder) / RECORD_NAME).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def exported_meta(adapter_dir) -> dict[str, str]:
    """The metadata of the record an adapter folder was exported from (`loradb export`), so adding
    or importing it again keeps its licence, source and tags; {} when the folder has none."""
    import json

    path = Path(adapter_dir) / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LoradbError(f"{path}: unreadable ({e})") from None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise LoradbError(f"{path}: its \"meta\" must map names to strings, as `loradb export` writes it")
    return meta


def validation_meta(adapter_dir) -> dict[str, str]:
    """What `loradb train --validation` measured, kept as the record's metadata: the adapter's
    own held-out score and its gain over the base (what it has to give a composition)."""
    v = (training_info(adapter_dir) or {}).get("validation")
    if not isinstance(v, dict) or not {"metric", "best", "gain", "examples"} <= set(v):
        return {}
    try:
        return {"validation_metric": str(v["metric"]), "validation_score": f"{float(v['best']):.4f}",
                "validation_gain": f"{float(v['gain']):+.4f}", "validation_examples": str(int(v["examples"]))}
    except (TypeError, ValueError):  # a record not made by loradb train: no validation metadata rather than a crash
        return {}


def trained_task(adapter_dir) -> dict | None:
    """The task `loradb train` recorded beside an adapter (its label prompts or instruction), if any."""
    info = training_info(adapter_dir)
    if info is None:
        return None
    return task_spec(prompts=info.get("prompts"), instruction=info.get("instruction"))


def _base_for_adapter(adapter: LoraAdapter, base, adapter_dir, stated_base_must_match: bool = False) -> BaseModel:
    stated = adapter.base_model_name_or_path
    # the stated base, where it is on this machine (by its fingerprint when loradb stamped one)
    local = locate(stated, adapter.metadata.get(FINGERPRINT_KEY), build_packaged=base is None) if stated else None
    if base is None:
        if local is None:
            raise LoradbError(f"adapter {adapter_dir} names base model {stated!r}, which is not on this machine (a folder, "
                              "a packaged model, or a hub id in the local hub cache); pass `base` PATH")
        return load_base(local)
    chosen = load_base(base)
    trained_on = load_base(local) if local is not None else None
    if trained_on is not None and trained_on.fingerprint != chosen.fingerprint:
        raise BaseModelMismatch(f"adapter {adapter_dir} was trained on base model {trained_on.short}, "
                                f"not on `base` {chosen.short}")
    if trained_on is None and stated and stated_base_must_match and legacy_portable(stated) != chosen.name:
        raise BaseModelMismatch(f"adapter {adapter_dir} names base model {legacy_portable(stated)}, which is not on "
                                f"this machine to compare with `base` {chosen.name} by fingerprint")
    return chosen


def _existing_recipe(spaces: Sequence[dict], base_model: BaseModel) -> dict:
    """The recipe of the base model's one space in use, so new records land beside the old."""
    spaces = [s for s in spaces if s["base_fingerprint"] == base_model.fingerprint and s["records"]]
    if len(spaces) == 1:
        return {k: spaces[0][k] for k in ("layer", "pooling", "max_length")}
    return {}
