"""loradb: a database of LoRA adapters that adapts a base model to new, unlabeled data by
retrieving the adapters whose training data looked most alike and merging them.

The public API is re-exported here lazily (PEP 562), so `import loradb` and the CLI do not
pay for torch/transformers until a name that needs them is used.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "api": ["adapt"],
    "lora.adapter": ["LoraAdapter", "LoraModule", "read_adapter", "write_adapter"],
    "lora.base": ["BaseModel", "load_base"],
    "lora.compose": ["compose_exact", "dense_delta"],
    "lora.merges": ["MERGES", "MergeSpec"],
    "db.database": ["LoraDB"],
    "db.results": ["CheckReport", "Hit", "SearchResult"],
    "db.interface": ["Database"],
    "retrieval.targets": ["represent_file"],
    "io.data": ["DataFile"],
    "evaluate.scoring": ["ScoreReport", "predict", "score"],
    "service.client": ["RemoteDB"],
    "retrieval.privacy": ["DPConfig"],
    "errors": ["AccessDenied", "AdapterError", "BaseModelMismatch", "Conflict", "DataError", "LoradbError", "NotFound",
               "RemoteError", "StoreError"],
    "retrieval.represent": ["Encoder", "Pooling", "Representation", "Space", "load_vector", "represent_texts", "save_representation"],
    "db.store.protocol": ["Record"],
    "weighting.registry": ["METHODS", "compute_weights"],
    "weighting.formulas": ["WeightResult"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'loradb' has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


def __dir__():
    return __all__
