"""Checks on an adapter a client uploads: the server has no base model weights to load it
onto, so it checks everything it can without them before anything is written."""

from __future__ import annotations

from pathlib import Path

from loradb.db.contribute import Contribution, check_meta, check_name
from loradb.db.store.protocol import BlobStore, IndexStore
from loradb.errors import BaseModelMismatch, StoreError
from loradb.lora.adapter import FINGERPRINT_KEY, LoraAdapter, adapter_from_files, module_shapes
from loradb.lora.base import check_adapter_fits
from loradb.retrieval.represent import Representation

PEERS_CHECKED = 8  # stored adapters an upload's layer shapes are compared with


def check_upload(index: IndexStore, blobs: BlobStore, adapter_config: dict, weights: Path, rep: Representation, *,
                 name: str, meta: dict, bases: dict | None = None) -> Contribution:
    """Parse and validate an uploaded adapter into a Contribution ready to store.

    The client checked the adapter against its base model; here the adapter is parsed
    and validated, its safetensors base fingerprint (if it has one) must match the
    representation's space, its layer shapes must match the records already held for
    that base, and with `bases` (fingerprint -> BaseModel) only those bases are accepted,
    each checked layer by layer.
    """
    adapter = adapter_from_files(adapter_config, weights, f"uploaded adapter {name!r}")
    check_name(name)
    fingerprint = rep.space.base_fingerprint
    stated = adapter.metadata.get(FINGERPRINT_KEY)
    if stated is not None and stated != fingerprint:
        raise BaseModelMismatch(f"the adapter was written for base fingerprint {stated[:12]} but its representation "
                                f"was made with base fingerprint {fingerprint[:12]}")
    if bases is not None:
        if fingerprint not in bases:
            raise BaseModelMismatch(f"this server accepts adapters for base models {', '.join(b.short for b in bases.values())}, "
                                    f"not fingerprint {fingerprint[:12]}")
        check_adapter_fits(bases[fingerprint], adapter, f"uploaded adapter {name!r}")
    check_shapes_against_peers(index, blobs, adapter, fingerprint, name)
    held = {s["id"]: s for s in index.spaces(with_counts=False)}
    if rep.space.id not in held and any(s["base_fingerprint"] == fingerprint and s["dim"] != rep.space.dim for s in held.values()):
        raise BaseModelMismatch(f"records for base fingerprint {fingerprint[:12]} have another feature dimension than {rep.space.dim}")
    meta = check_meta(meta)
    return Contribution(adapter=adapter, weights=weights, rep=rep, name=name, meta=meta)


def check_shapes_against_peers(index: IndexStore, blobs: BlobStore, adapter: LoraAdapter, fingerprint: str, name: str) -> None:
    """Refuse an adapter whose layers have other shapes than stored adapters of the same
    base model have for the same modules (a sign it was trained on another base). Reads
    only the stored adapters' safetensors headers, from up to PEERS_CHECKED records,
    until every uploaded module has a stored shape to compare with.

    A peer whose blob is missing or corrupt cannot vouch for anything: if it leaves an
    uploaded module unchecked the upload is refused (the check is never skipped)."""
    known: dict = {}
    damaged = []
    for peer in index.all_for_base(fingerprint, limit=PEERS_CHECKED):
        if all(module in known for module in adapter.modules):
            break
        try:
            stored = module_shapes(blobs.fetch(peer.blob_sha256))
        except StoreError:
            damaged.append(peer)
            continue
        for module, shape in stored.items():
            known.setdefault(module, shape)
    if damaged and not all(module in known for module in adapter.modules):
        raise StoreError(f"cannot check uploaded adapter {name!r} against the stored adapters of its base model: the "
                         f"blob of record {damaged[0].name} is missing or corrupt; an admin should run `loradb check`")
    for module, m in adapter.modules.items():
        shape = (m.B.shape[0], m.A.shape[1])
        if module in known and known[module] != shape:
            raise BaseModelMismatch(f"uploaded adapter {name!r} module {module!r} updates a {shape[0]}x{shape[1]} weight "
                                    f"but the base model of its representation has {known[module][0]}x{known[module][1]} there")
