"""One call from Python: `loradb.adapt(model, texts, db=...)` retrieves, weighs and composes
adapters for the texts and returns the model with the composed LoRA loaded by PEFT.

Also the one place that opens a database by its location (a directory, a postgresql://
URL or a loradb server URL), which the command line uses too. This module sits above
service/ and db/ (it needs both handles) and below cli/; it imports nothing heavy until
it is called, so the `loradb` command still starts without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loradb.db.interface import Database
from loradb.db.results import DEFAULT_K, SearchResult
from loradb.errors import Abstained, BaseModelMismatch, DataError, LoradbError
from loradb.io.data import DataFile
from loradb.weighting.registry import DEFAULT_METHOD

if TYPE_CHECKING:
    from loradb.lora.base import BaseModel
    from loradb.lora.merges import MergeSpec
    from loradb.retrieval.privacy import DPConfig

DATA_KINDS = "texts (a list of str), a dataset file (.jsonl/.csv/.parquet/.txt, or a DataFile naming its text field), a .npy made by `loradb represent`, or a Representation"


def open_database(location: str | os.PathLike) -> Database:
    """A database handle for a location: a loradb server URL (http:// or https://, through
    RemoteDB; its token from LORADB_TOKEN), else a directory or postgresql:// URL (LoraDB)."""
    from loradb.service.client import RemoteDB, is_url

    if is_url(location):
        assert isinstance(location, str)  # is_url holds for strings only
        return RemoteDB(location)
    from loradb.db.database import LoraDB

    return LoraDB(location)


def adapt(model: Any, data: Any = None, *, db: str | os.PathLike | Database, k: int = DEFAULT_K,
          method: str = DEFAULT_METHOD, base: str | os.PathLike | None = None, space: str | None = None,
          temperature: float | None = None, l1: float | None = None, key: str | None = None, task: dict | None = None,
          dp: DPConfig | None = None, spec: MergeSpec | None = None, weights: dict[str, float] | None = None,
          shots: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
          adapter_name: str = "default", progress: bool = True, force: bool = False, scale: float | None = None) -> Any:
    """Adapt a loaded model to unlabeled data: retrieve the adapters whose training data
    looked most alike, weigh them, compose them into one LoRA and load it into `model`.

    The same as `loradb compose DB --data FILE --out DIR` followed by
    `PeftModel.from_pretrained(model, DIR)`, through the same `compose` of the database
    handle, with the same checks and errors; the composed adapter is written to a temporary
    directory, loaded eagerly and deleted.

    `model` is modified in place, as PEFT does: its target layers get the LoRA layers of
    the composed adapter, and the PeftModel returned wraps it. Pass a fresh copy of the base
    model to keep the bare one (a model that already carries LoRA adapters is refused).

    Args:
        model: the base model, loaded with transformers (e.g. `AutoModel.from_pretrained(DIR)`),
            or a `loradb.BaseModel` (`load_base(DIR)`; then it is loaded here, float32). Its
            weights must be those of the database's base model: the directory it was loaded
            from (`model.name_or_path`) is identified by fingerprint, and its weight tensors
            are spot-checked (first and last rows) against that directory's files.
        data: the target, one of: texts, a list of strings (z is computed here from a
            temporary .jsonl of them, exactly as from a file); a dataset file path
            (.jsonl/.csv/.parquet/.txt, as `--data`); a `.npy` path made by `loradb represent`
            (as `--repr`); or a `loradb.Representation`. A single string is a path, never a text.
        db: a database directory, a postgresql:// URL, a loradb server URL (http:// or
            https://; the token from LORADB_TOKEN), or an open LoraDB / RemoteDB handle
            (used and left open; a location is opened and closed here).
        k: how many adapters to retrieve.
        method: the weighting method (`loradb.METHODS`; `learned` and `lorahub` need `shots`).
        base: the base model directory or packaged name (minilm, smollm2); default: the
            directory `model` was loaded from. Refused when it is not `model`'s.
        space: representation space id (default: the only one for the base model).
        temperature: lambda_1 of similarity (default: automatic).
        l1: lambda_2 of sparse (default: automatic).
        key: the retrieval key (default: the space's chosen key, else raw-l2).
        task: the target's task (`{"prompts": [...]}` or `{"instruction": "..."}`), for the task keys.
        dp: a `loradb.DPConfig`: z computed from texts or a dataset file is released with
            differential privacy.
        spec: a `loradb.MergeSpec`: the merge mode and the output's rank (default: exact).
        weights: record id or name -> weight, used as given instead of retrieving (then
            `data` is left out and the retrieval arguments are not used).
        shots: for `learned` or `lorahub`: a labeled .jsonl of 1-32 target examples per label.
        labels: with shots: labels.json mapping each label to its prompt.
        adapter_name: the PEFT name of the loaded adapter.
        progress: show progress bars while z is computed.
        force: compose even when nothing in the library fits the data (see below).
        scale: every retrieved weight times this: theta0 + scale * sum w_i delta_i (default 1).
    Returns:
        The `peft.PeftModel` wrapping `model`, with `loradb_result` set to the composed
        `SearchResult`: its hits (records, distances, weights), method, params, residual and
        `fit` (score, decision, reason). When the space's fit threshold says nothing in the
        library fits the data, `model` itself is returned unchanged (no LoRA), with
        `loradb_result.fit["decision"] == "abstain"`, the reason, and no hits (none was applied);
        `force=True` composes anyway (its fit block then says `"forced": True`).
    Raises:
        LoradbError: bad input, as the command line refuses it (same classes and messages,
            parameters named as here); BaseModelMismatch when `model` is not the database's
            base model. The database is never changed.
    """
    if weights is None and data is None:
        raise LoradbError(f"give the target `data` ({DATA_KINDS}), or `weights`")
    if weights is not None and data is not None:
        from loradb.db.compose import check_weights_or_target

        check_weights_or_target(weights, {"data": data})
    _refuse_peft(model)
    with contextlib.ExitStack() as stack:
        handle = db if isinstance(db, Database) else stack.enter_context(open_database(db))
        model, base_model = _model_and_base(model, base)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loradb-adapt-")))
        out = tmp / "adapter"
        options: dict[str, Any] = {"spec": spec, "shots": shots, "labels": labels, "progress": progress}
        if weights is not None:  # as `loradb compose --weights`
            result = handle.compose(out, weights=weights, base=str(base_model.path), scale=scale, **options)
        else:
            target = _target(data, handle, tmp)
            try:
                result = handle.compose(out, **options, **target, base=str(base_model.path), space=space, k=k,
                                        method=method, temperature=temperature, l1=l1, key=key, task=task, dp=dp,
                                        force=force, scale=scale)
            except Abstained as e:  # nothing fits: the base model is the answer, said so in loradb_result
                # no hits, local or remote alike: no adapter's weight was applied
                model.loradb_result = SearchResult(method=method, hits=[], residual=None, fit=e.fit)
                return model
        from peft import PeftModel

        from loradb.lora.adapter import read_adapter
        from loradb.lora.base import check_adapter_fits

        composed = read_adapter(out)
        check_adapter_fits(base_model, composed, "the composed adapter")  # whichever handle composed it
        composed = _named_as_in(model, composed, out)
        # PEFT reads the weights into the LoRA layers' own tensors (low_cpu_mem_usage=False
        # copies, never maps the file), so the directory can go right after
        with warnings.catch_warnings():  # PEFT calls an API transformers 5 deprecates (see models/loading.py)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            adapted = PeftModel.from_pretrained(model, out, adapter_name=adapter_name, low_cpu_mem_usage=False)
        _require_loaded(adapted, composed, adapter_name)
    adapted.loradb_result = result
    return adapted


def _named_as_in(model, adapter, out: Path):
    """The composed adapter with its layers named as `model` names them. Adapters trained on one
    class of the base (AutoModel) name layers "encoder.layer.0..."; the same base loaded as a task
    class (AutoModelForSequenceClassification) has them under "bert.encoder.layer.0...", and PEFT
    would load nothing, with a warning only. Each layer is matched by its longest unique suffix
    and the adapter in `out` rewritten so; a layer `model` does not have is refused."""
    from dataclasses import replace

    from loradb.lora.adapter import write_adapter
    from loradb.lora.base import match_by_suffix

    names = {n for n, _ in model.named_modules()}
    renamed = {}
    for name, module in adapter.modules.items():
        target = name if name in names else match_by_suffix(names, name)
        if target is None:
            raise LoradbError(f"the composed adapter's layer {name} is not in `model` ({type(model).__name__}); load the "
                              "base model with the class its adapters were trained on (e.g. AutoModel, or "
                              "AutoModelForCausalLM for a causal LM's)")
        renamed[target] = module
    if list(renamed) == list(adapter.modules):
        return adapter
    adapter = replace(adapter, modules=renamed)
    write_adapter(out, adapter, metadata={k: v for k, v in adapter.metadata.items() if k != "format"})
    return adapter


def _require_loaded(adapted, adapter, adapter_name: str) -> None:
    """Every layer of the composed adapter is in the PEFT model with its exact factors: PEFT only
    warns about adapter weights it could not place, which would leave lora_B at zero (a no-op)."""
    import numpy as np

    inner = adapted.get_base_model()
    for name, module in adapter.modules.items():
        try:
            layer = inner.get_submodule(name)
            A = layer.lora_A[adapter_name].weight.detach().cpu().numpy()
            B = layer.lora_B[adapter_name].weight.detach().cpu().numpy()
        except (AttributeError, KeyError):
            raise LoradbError(f"PEFT did not load the composed adapter's layer {name} into `model` "
                              f"({type(inner).__name__}); nothing of it would apply") from None
        if not (np.array_equal(A, module.A) and np.allclose(B * layer.scaling[adapter_name], module.B * module.scale,
                                                           rtol=1e-6, atol=0)):
            raise LoradbError(f"the composed adapter's layer {name} was loaded into `model` with other weights than "
                              "it holds; refusing a model that would not compute the composition")


def _refuse_peft(model) -> None:
    if hasattr(model, "peft_config") or getattr(model, "_hf_peft_config_loaded", False):
        raise LoradbError("`model` already carries LoRA adapters (a PeftModel, e.g. from an earlier adapt); pass the "
                          "base model as loaded (load it again, or take `model.unload()`)")


def _model_and_base(model, base) -> tuple[Any, BaseModel]:
    """The torch model to wrap and the base model directory it holds, checked to agree."""
    from loradb.lora.base import BaseModel, load_base
    from loradb.models.locate import locate
    from loradb.models.packaged import resolve_base

    if isinstance(model, BaseModel):
        from loradb.models.generate import is_causal_lm
        from loradb.models.loading import load_model

        stated = load_base(resolve_base(str(base))) if base is not None else None
        if stated is not None and stated.fingerprint != model.fingerprint:
            raise BaseModelMismatch(f"`model` is base model {model.short} but `base` is {stated.short}")
        return load_model(model.path, causal=is_causal_lm(model.config))[0], model
    if not callable(getattr(model, "state_dict", None)):
        raise LoradbError(f"`model` must be a loaded model (transformers, torch) or a loradb BaseModel, not {type(model).__name__}")
    loaded_from = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    # a folder, or a hub id whose snapshot is in the local hub cache
    where = (loaded_from if Path(str(loaded_from)).is_dir() else locate(str(loaded_from), None, build_packaged=False)) \
        if loaded_from else None
    own = load_base(where) if where is not None else None
    if base is None:
        if own is None:
            raise LoradbError(f"cannot tell which directory `model` was loaded from (name_or_path {loaded_from!r} is neither a "
                              "directory here nor in the local hub cache); pass `base` DIR, the local copy of its weights")
        base_model = own
    else:
        base_model = load_base(resolve_base(str(base)))
        if own is not None and own.fingerprint != base_model.fingerprint:
            raise BaseModelMismatch(f"`model` was loaded from base model {own.short} but `base` is {base_model.short}")
    _check_weights(model, base_model)
    return model, base_model


def _check_weights(model, base: BaseModel) -> None:
    """Refuse a model whose weights are not its base directory's: every weight tensor the
    two share by name is compared on its first and last rows (all of a 1-D tensor), which
    catches another checkpoint, a fine-tuned or a freshly initialised model cheaply."""
    import torch
    from safetensors import safe_open

    from loradb.lora.base import match_by_suffix

    state = model.state_dict()
    compared = 0
    for wf in sorted(base.path.glob("*.safetensors")):
        with safe_open(str(wf), framework="pt") as f:
            for name in f.keys():
                exact = name in state
                mine = state[name] if exact else state.get(match_by_suffix(state, name) or "")
                stored = f.get_slice(name)
                shape = tuple(stored.get_shape())
                if mine is None or not mine.is_floating_point() or not shape:  # not in the model, or quantized, or a scalar
                    continue
                if tuple(mine.shape) != shape and not exact:  # a suffix that names another tensor: not evidence
                    continue
                if tuple(mine.shape) != shape:
                    raise BaseModelMismatch(f"`model` has {name} of shape {tuple(mine.shape)}, but base model {base.short} "
                                            f"has {shape}; pass the model loaded from that directory, or its `base`")
                rows = [slice(None)] if len(shape) == 1 else [slice(0, 1), slice(shape[0] - 1, shape[0])]
                if not stored[rows[0]].is_floating_point():  # quantized on disk: not comparable row by row
                    continue
                for rows_ in rows:
                    theirs = stored[rows_]
                    if not torch.equal(mine[rows_].detach().cpu(), theirs.to(mine.dtype)):
                        raise BaseModelMismatch(f"`model` holds other weights than base model {base.short} ({name} "
                                                "differs): the adapters were made for those exact weights; pass the model "
                                                "as loaded from that directory, or its `base`")
                compared += 1
    if not compared:
        raise BaseModelMismatch(f"`model` has none of the weights of base model {base.short}; pass the model loaded "
                                "from that directory, or its `base`")


def _target(data, handle: Database, tmp: Path) -> dict:
    """`data` as compose's target arguments `data` (a file) and `repr` (a .npy), one of them
    None, as the command line passes them (a local database also takes a Representation
    as `target`)."""
    from loradb.retrieval.represent import Representation, save_representation

    if isinstance(data, Representation):
        from loradb.db.database import LoraDB

        if isinstance(handle, LoraDB):
            return {"data": None, "repr": None, "target": data}
        return {"data": None, "repr": save_representation(data, tmp / "target.npy")}  # a server's client takes files
    if isinstance(data, DataFile):  # a file whose texts are in a named field
        return {"data": data, "repr": None}
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return {"data": None, "repr": path} if path.suffix.lower() == ".npy" else {"data": path, "repr": None}
    if not isinstance(data, (list, tuple)):  # a DataFrame iterates over its column names, a dict over its keys
        raise LoradbError(f"`data` must be {DATA_KINDS}; got {type(data).__name__} (pass texts as a list, e.g. "
                          "df['text'].tolist())")
    texts = tmp / "texts.jsonl"
    count = 0
    with open(texts, "w", encoding="utf-8") as f:
        for i, text in enumerate(data):
            if not isinstance(text, str):
                raise DataError(f"`data` item {i}: a text must be a string, got {type(text).__name__}")
            f.write(json.dumps({"text": text}) + "\n")
            count += 1
    if not count:
        raise DataError("`data` holds no texts")
    return {"data": texts, "repr": None}
