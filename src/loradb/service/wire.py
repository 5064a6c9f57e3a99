"""What the server and the client send each other: JSON documents and adapter archives.

One module for both sides, so a field is named once. Representations travel as their
.npy.json sidecar with the vector added ("z": [floats]); adapters travel as an
uncompressed tar of a PEFT directory (safetensors barely compress), unpacked only into
an allow-list of file names, never following a path in the archive.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from loradb.lora.adapter import CONFIG_NAME, WEIGHTS_NAME
from loradb.errors import LoradbError
from loradb.lora.export import PROVENANCE_NAME
from loradb.retrieval.represent import Representation, description

API = "/v1"
TOKEN_ENV = "LORADB_TOKEN"
ARCHIVE_TYPE = "application/x-tar"
ARCHIVE_FILES = (CONFIG_NAME, WEIGHTS_NAME, PROVENANCE_NAME)  # what any client version accepts (no model card:
# the client writes that from loradb_compose.json's lineage)
SUMMARY_KEYS = ("id", "name", "base", "space", "rank", "n_samples", "meta", "created", "owner", "private", "data_summary")


def representation_doc(rep: Representation) -> dict:
    return {**description(rep), "z": [float(x) for x in rep.z]}


def representation_from_doc(doc, *, max_dim: int) -> Representation:
    """A received representation document, validated (shape, finiteness, space, privacy)."""
    from loradb.retrieval.targets import representation_from_sidecar

    if not isinstance(doc, dict):
        raise LoradbError("representation must be a JSON object with z and space")
    z = doc.get("z")
    if not isinstance(z, list) or not z:
        raise LoradbError("representation.z must be a non-empty list of numbers")
    if len(z) > max_dim:
        raise LoradbError(f"representation.z has {len(z)} values; this server accepts at most {max_dim}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in z):
        raise LoradbError("representation.z must hold only numbers")
    values = np.asarray(z, dtype=np.float64)
    if not np.isfinite(values).all() or np.abs(values).max() > np.finfo(np.float32).max:
        raise LoradbError("representation.z contains NaN, infinite or out-of-range values")
    return representation_from_sidecar(values.astype(np.float32), {k: v for k, v in doc.items() if k != "z"}, "representation")


class RemoteRecord:
    """A record as the server describes it (no vector, no blob): what list / show / search print."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.id, self.name = doc["id"], doc["name"]
        self.rank, self.n_samples, self.owner = doc.get("rank"), doc.get("n_samples"), doc.get("owner")
        self.space_id, self.created = doc.get("space", ""), doc.get("created", "")
        self.privacy = doc.get("privacy")
        self.has_data = doc.get("data_summary", True)  # a server before loradb import sent none: every record had z
        # what a composition's lineage reads of its parts (db/lineage.py)
        self.meta, self.base_name, self.base_fingerprint = doc.get("meta") or {}, doc.get("base"), doc.get("base_fingerprint")

    def summary(self) -> dict:
        return {k: self.doc.get(k) for k in SUMMARY_KEYS}

    def details(self) -> dict:
        return dict(self.doc)


def write_archive(out: Path, files: dict[str, Path]) -> Path:
    """An uncompressed tar holding `files` (archive name -> file) at its top level."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files.items():
            tar.add(path, arcname=name, recursive=False)
    return out


def extract_archive(archive: Path, into: Path, *, allowed=ARCHIVE_FILES, max_bytes: int) -> list[str]:
    """Unpack regular top-level files with allowed names; anything else refuses the archive.

    Returns:
        The names written.
    """
    written = []
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            total = sum(m.size for m in members)
            if total > max_bytes:
                raise LoradbError(f"the archive unpacks to {total} bytes, more than the {max_bytes} allowed")
            for m in members:
                if not m.isfile() or m.name not in allowed or m.name in written:
                    raise LoradbError(f"the archive holds {m.name!r}; only the files {', '.join(allowed)} are accepted, once each")
                src = tar.extractfile(m)
                assert src is not None  # a regular file
                with open(into / m.name, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                written.append(m.name)
    except tarfile.TarError as e:
        raise LoradbError(f"not a valid tar archive ({e})") from None
    return written
