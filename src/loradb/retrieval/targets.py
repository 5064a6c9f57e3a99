"""The target's representation, in a representation space a database holds records for.

A target arrives as texts (z is computed here under the space's recipe, optionally with
differential privacy), as a .npy file with its sidecar, or as a representation already
in memory (what the server receives); each is validated against the spaces in use.
"""

from __future__ import annotations

import os

import numpy as np

from loradb.lora.base import BaseModel, load_base
from loradb.lora.identity import where_is
from loradb.models.locate import locate
from loradb.io.data import iter_texts
from loradb.io import jsondoc
from loradb.errors import BaseModelMismatch, LoradbError
from loradb.retrieval.represent import REPRESENTATION_FIELDS, REPRESENTATION_FORMAT, SPACE_FIELDS, Representation, Space, default_space, load_vector, as_task, represent_texts, task_spec


MAX_SAMPLES = 2 ** 53  # examples a representation is the mean of: any real count, and exact in JSON and float64

def resolve_target(spaces: list[dict], *, data=None, repr=None, target: Representation | None = None, base=None,
                   space: str | None = None, dp=None, task: dict | None = None, progress: bool = True) -> Representation:
    """The target's representation, in one of `spaces` (a database's spaces with their record counts).

    Exactly one of: data (texts; z computed here under the space's recipe, with differential
    privacy when dp is given), repr (a .npy file, with or without its sidecar) or target (a
    representation already made, e.g. received by the server). `task` (task_spec) adds the
    task key, computed here for data and repr (a received target must bring its own).
    """
    if sum(x is not None for x in (data, repr, target)) != 1:
        raise LoradbError("give exactly one of `data` FILE or `repr` Z.npy")
    task = as_task(task)
    if dp is not None and data is None:
        raise LoradbError("`dp_epsilon` privatises z computed from `data`; a `repr` vector is used as it was made")
    spaces = [s for s in spaces if s["records"] > 0]
    if base is not None:
        base_model = load_base(base)
        spaces = [s for s in spaces if s["base_fingerprint"] == base_model.fingerprint]
        if not spaces:
            raise BaseModelMismatch(f"the database holds no records for base model {base_model.short}")
    if space is not None:
        spaces = [s for s in spaces if s["id"] == space]
        if not spaces:
            raise LoradbError(f"no records in representation space {space}; `loradb list` shows the spaces in use")
    if target is not None:
        return with_task_key(_in_held_space(target, spaces, "the target representation"), task, None)
    if repr is not None:
        z, side = load_vector(repr)
        if side is not None:
            rep = _in_held_space(representation_from_sidecar(z, side, repr), spaces, str(repr))
        else:
            matching = [s for s in spaces if s["dim"] == z.shape[0]]
            if len(matching) != 1:
                raise LoradbError(f"{repr} has no {repr}.json sidecar and {len(matching)} spaces here have dimension {z.shape[0]}; "
                                  "make the vector with `loradb represent` or pass `base`/`space`")
            rep = Representation(z=z, space=Space.from_dict(matching[0]), base_name=matching[0]["base_name"])
        if task is None or rep.task == task:
            return rep
        local = base if base is not None else locate(rep.base_name, rep.space.base_fingerprint, build_packaged=False)
        return with_task_key(rep, task, load_base(local) if local is not None else None)
    if len(spaces) != 1:
        if not spaces:
            raise LoradbError("the database holds no records with a summary of their data; add adapters with their data "
                              "(records imported without it are found by the data-free key arrow)")
        raise LoradbError(f"the database holds {len(spaces)} representation spaces ({', '.join(s['id'] for s in spaces)}); pass `space` (and `base`)")
    target_space = Space.from_dict(spaces[0])
    if base is None:
        base = locate(spaces[0]["base_name"], target_space.base_fingerprint)
        if base is None:
            raise LoradbError(f"the records' {where_is(spaces[0]['base_name'], target_space.base_fingerprint)}; "
                              "pass `base` with your copy of it")
    base_model = load_base(base)
    if base_model.fingerprint != target_space.base_fingerprint:
        raise BaseModelMismatch(f"the records were made for base fingerprint {target_space.base_fingerprint[:12]} "
                                f"but {base_model.short} holds other weights")
    rep = represent_dataset(base_model.path, data, progress=progress, dp=dp, layer=target_space.layer,
                            pooling=target_space.pooling, max_length=target_space.max_length, task=task)
    if rep.space.id != target_space.id:
        raise LoradbError(f"{base_model.path} now yields representation space {rep.space.id}, not the stored {target_space.id} "
                          "(its tokenizer changed?)")
    return rep


def _in_held_space(rep: Representation, spaces: list[dict], where: str) -> Representation:
    """`rep` itself, refused unless one of `spaces` is its space."""
    if rep.space.id not in {s["id"] for s in spaces}:
        if rep.space.base_fingerprint not in {s["base_fingerprint"] for s in spaces}:
            raise BaseModelMismatch(
                f"{where} was made with base model {rep.base_name or '?'} (fingerprint {rep.space.base_fingerprint[:12]}) "
                f"but the database holds records for {', '.join(sorted({s['base_name'] for s in spaces})) or 'no base model'}")
        raise LoradbError(f"{where} lives in representation space {rep.space.id}, which holds no records here")
    return rep


def representation_from_sidecar(z: np.ndarray, side: dict, where) -> Representation:
    """A vector and its sidecar (or a received representation document) as a Representation, validated."""
    from loradb.retrieval.privacy import check_privacy_doc

    if not isinstance(side, dict):
        raise LoradbError(f"{where}: the representation description must be a JSON object")
    unknown = sorted(map(str, set(side) - REPRESENTATION_FIELDS))
    if unknown:
        raise LoradbError(f"{where}: unknown field(s) {', '.join(unknown)} in the representation description")
    if side.get("format", REPRESENTATION_FORMAT) != REPRESENTATION_FORMAT:
        raise LoradbError(f"{where}: format {side.get('format')!r} is not {REPRESENTATION_FORMAT!r}")
    unknown = sorted(map(str, set(side.get("space") or {}) - SPACE_FIELDS)) if isinstance(side.get("space"), dict) else []
    if unknown:
        raise LoradbError(f"{where}: unknown field(s) {', '.join(unknown)} in the representation space")
    space = Space.from_dict(side.get("space") or {})
    if z.shape != (space.dim,):
        raise LoradbError(f"{where} has {z.size} values but its space says {space.dim}")
    if not np.isfinite(z).all():
        raise LoradbError(f"{where} contains NaN or infinite values")
    if any("\x00" in text for text in jsondoc.strings(side)):  # no database text holds it (PostgreSQL refuses the row)
        raise LoradbError(f"{where}: a text field holds the NUL character")
    n = side.get("n_samples")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SAMPLES):
        raise LoradbError(f"{where}: n_samples must be a whole number from 1 to 2^53, got {n!r}")
    base_name = side.get("base", "")
    if not isinstance(base_name, str) or len(base_name) > 1000 or any(ord(c) < 32 for c in base_name):
        raise LoradbError(f"{where}: base must be a short name without control characters")
    privacy = check_privacy_doc(side.get("privacy"), n)
    var = _optional_vector(side.get("var"), space.dim, f"{where}: var")
    if privacy is not None and var is not None:
        raise LoradbError(f"{where}: a differentially private representation carries no var (it would not be private)")
    if var is not None and (var < 0).any():
        raise LoradbError(f"{where}: var holds negative values; a variance is never negative")
    task, task_z = side.get("task"), _optional_vector(side.get("task_z"), space.dim, f"{where}: task_z")
    if (task is None) != (task_z is None):
        raise LoradbError(f"{where}: task and task_z come together (the task and its embedding)")
    if task is not None:
        if not isinstance(task, dict) or len(task) != 1:
            raise LoradbError(f"{where}: task must be {{\"prompts\": [...]}} or {{\"instruction\": \"...\"}}")
        task = task_spec(prompts=task.get("prompts"), instruction=task.get("instruction"))
    return Representation(z=np.asarray(z, dtype=np.float32), space=space, base_name=base_name, n_samples=n,
                          privacy=privacy, var=var, task=task, task_z=task_z)


def _optional_vector(values, dim: int, where: str) -> np.ndarray | None:
    """A list of `dim` finite numbers as float32, or None when absent."""
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != dim or \
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
        raise LoradbError(f"{where} must be a list of {dim} numbers")
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all() or np.abs(v).max(initial=0) > np.finfo(np.float32).max:
        raise LoradbError(f"{where} contains NaN, infinite or out-of-range values")
    return v.astype(np.float32)


def with_task_key(rep: Representation, task: dict | None, base: BaseModel | None) -> Representation:
    """`rep` with the key of `task` (task_spec) computed under its space's recipe: kept as it
    is when no task is given; refused when it already names another task."""
    if task is None or rep.task == task:
        return rep
    if rep.task is not None:
        raise LoradbError(f"the representation was made for the task {rep.task}, not {task}")
    if base is None or base.fingerprint != rep.space.base_fingerprint:
        raise LoradbError("computing the task's key needs the representation's base model: pass `base`")
    from loradb.retrieval.represent import Encoder

    encoder = Encoder(base.path, layer=rep.space.layer, pooling=rep.space.pooling, max_length=rep.space.max_length)
    return rep.with_task(encoder, task)


def representation_from_file(path, base_model: BaseModel) -> Representation:
    """A .npy representation for `base_model`, refused if its sidecar names another base."""
    z, side = load_vector(path)
    if side is None:
        space = default_space(base_model)
        if z.shape[0] != space.dim:
            raise LoradbError(f"{path} has {z.shape[0]} values but base model {base_model.path} has {space.dim} features")
        return Representation(z=z, space=space, base_name=base_model.name)
    rep = representation_from_sidecar(z, side, path)
    if rep.space.base_fingerprint != base_model.fingerprint:
        raise BaseModelMismatch(f"{path} was made with base model {side.get('base')} (fingerprint {rep.space.base_fingerprint[:12]}) "
                                f"but the adapter's base model is {base_model.short}")
    rep.base_name = base_model.name
    return rep


def represent_file(base: str | os.PathLike, data: str | os.PathLike, *, layer: int = -1, pooling: str = "mean",
                   max_length: int = 256, batch_size: int = 32, dp=None, task: dict | None = None,
                   progress: bool = True) -> Representation:
    """z of a dataset file under a base model (the library side of `loradb represent`);
    dp (a privacy.DPConfig) releases it with differential privacy; task (task_spec) adds its key."""
    return represent_dataset(base, data, layer=layer, pooling=pooling, max_length=max_length,
                             batch_size=batch_size, progress=progress, dp=dp, task=task)


def represent_dataset(base: str | os.PathLike, data: str | os.PathLike, *, progress: bool = True, dp=None,
                      task: dict | None = None, **recipe) -> Representation:
    """z of a dataset under a base model: a text file under a transformers model, a folder of
    images under an image model (LiteMedSAM; its one recipe, no privacy or task key yet)."""
    from loradb.models.litemedsam import is_litemedsam

    if not is_litemedsam(base):
        return represent_texts(base, iter_texts(data), progress=progress, dp=dp, task=task, **recipe)
    if dp is not None or task is not None:
        raise LoradbError("an image dataset has no differential privacy or task key yet; leave out `dp_epsilon` and `task`")
    from loradb.retrieval.images import represent_images

    rep = represent_images(base, data, progress=progress)
    asked = {k: v for k, v in recipe.items() if k in ("layer", "pooling", "max_length")}
    made = {"layer": rep.space.layer, "pooling": rep.space.pooling, "max_length": rep.space.max_length}
    if any(k in asked and asked[k] not in (made[k], -1 if k == "layer" else made[k]) for k in made):
        raise LoradbError(f"an image model has one representation recipe ({made}); got {asked}")
    return rep
