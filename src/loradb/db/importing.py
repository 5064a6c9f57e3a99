"""`loradb import`: the adapters a team already has, added in bulk without their data.

Walks plain PEFT folders and Hugging Face hub-cache trees (`models--org--name/snapshots/REV/`),
checks each adapter against its base model (by fingerprint where the stated base is on this
machine, by name otherwise, and by layer shapes always), and adds each that fits as a record
without a data summary (protocol.no_data_space): listed, shown, exported and composed by name,
found by no data key. Each adapter that does not fit is skipped with one line saying why.
Re-running adds nothing: an adapter whose weights the database already holds is skipped.

Metadata comes from what the folder holds: the model card's front matter (licence, datasets,
tags, base model, language), `loradb_training.json` (through prepare_contribution), and for a
hub snapshot its repository and revision (`source`, `hub_revision`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loradb.db.contribute import check_name, prepare_contribution
from loradb.db.store.protocol import Record
from loradb.errors import LoradbError, StoreError
from loradb.io.files import sha256_file
from loradb.lora.adapter import CONFIG_NAME, WEIGHTS_NAME
from loradb.lora.base import load_base
from loradb.lora.identity import HUB_ID, legacy_portable

CARD_NAME = "README.md"  # a hub repository's model card: YAML front matter between '---' lines
CARD_FIELDS = {"license": "license", "datasets": "datasets", "tags": "tags", "base_model": "card_base_model",
               "language": "language"}  # front matter key -> record metadata key


@dataclass(frozen=True)
class Found:
    """An adapter folder met by the walk, with the record name it would get and where it came from."""

    path: Path
    name: str
    source: str  # "hub:org/name@REV" or the folder
    revision: str | None = None  # a hub snapshot's commit


@dataclass
class ImportReport:
    """What an import added and what it skipped, each skipped folder with the reason."""

    added: list[Record] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _hub_parts(path: Path) -> tuple[str, str, tuple[str, ...]] | None:
    """(repo id, revision, subfolder parts) of a folder inside a hub-cache snapshot, else None."""
    parts = path.parts
    for i in range(1, len(parts) - 1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            repo = parts[i - 1][len("models--"):].replace("--", "/", 1)
            if HUB_ID.match(repo):
                return repo, parts[i + 1], parts[i + 2:]
    return None


def adapter_folders(paths: Sequence[str | os.PathLike], unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every folder holding an adapter_config.json under `paths` (each a folder), in a fixed
    order; symlinked folders are not followed (a hub cache links files, never folders). Folders
    the walk could not read go to `unreadable` with the reason."""
    found: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            raise LoradbError(f"{root}: not a folder; pass PEFT adapter folders or a hub-cache tree")
        on_error = (lambda e: unreadable.append((Path(e.filename), f"cannot read this folder ({e.strerror})"))) \
            if unreadable is not None else None
        for here, dirs, files in os.walk(root, onerror=on_error):
            dirs[:] = sorted(d for d in dirs if d not in ("blobs", ".no_exist") and not d.startswith(".git"))
            if CONFIG_NAME in files:
                found.add(Path(os.path.abspath(here)))  # absolute and without '..': its name is its own
    return sorted(found)


def name_adapters(folders: list[Path]) -> list[Found]:
    """The record name and source of each folder: a hub snapshot's repository ("org--name"; with
    its subfolder, and its revision when the walk met several of that repository), or the
    folder's name (with its parent's when two folders share it)."""
    hub = {f: _hub_parts(f) for f in folders}
    revisions: dict[str, set[str]] = {}
    for parts in hub.values():
        if parts:
            revisions.setdefault(parts[0], set()).add(parts[1])
    plain_names = [f.name for f in folders if not hub[f]]
    out = []
    for f in folders:
        parts = hub[f]
        if parts:
            repo, rev, sub = parts
            name = repo.replace("/", "--") + "".join(f"-{s}" for s in sub)
            if len(revisions[repo]) > 1:
                name += f"@{rev[:12]}"
            out.append(Found(f, name, f"hub:{repo}@{rev}", rev))
        else:
            name = f.name if plain_names.count(f.name) == 1 else f"{f.parent.name}--{f.name}"
            out.append(Found(f, name, str(f)))
    return out


def card_meta(folder: Path) -> dict[str, str]:
    """The model card's front matter fields the record keeps (lists joined by ", "); {} when the
    folder has no card or its front matter is not YAML a mapping."""
    import yaml

    card = folder / CARD_NAME
    try:
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return {}
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (s.strip() for s in lines[1:]):
        return {}
    end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    try:
        front = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    if not isinstance(front, dict):
        return {}
    out = {}
    for key, meta_key in CARD_FIELDS.items():
        value = front.get(key)
        if key == "tags" and isinstance(value, list):
            value = [_portable_tag(v) if isinstance(v, str) else v for v in value]
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value if v is not None)
        if isinstance(value, (str, int, float)) and str(value).strip():
            out[meta_key] = str(value).strip().replace("\x00", "")
    if "card_base_model" in out:  # PEFT's template card names the base as it was loaded: maybe a local path
        out["card_base_model"] = legacy_portable(out["card_base_model"])
    return out


def _portable_tag(tag: str) -> str:
    """PEFT's template card tags the adapter `base_model:adapter:<base as it was loaded>`, often a
    local path: kept by the base's portable name, as card_base_model is."""
    prefix = "base_model:adapter:"
    return prefix + legacy_portable(tag.removeprefix(prefix)) if tag.startswith(prefix) else tag


_UNNAMEABLE = re.compile(r"[\x00-\x1f\x7f=/\\]")  # what a record name may not hold (contribute.check_name)


def _name_choices(f: Found, sha: str | None) -> list[str]:
    """The names an adapter may take, in order: the walk's, then names that tell it apart from a
    record already named so (another revision, or a folder of the same name elsewhere): with its
    hub revision, its parent folder, the sha256 of its weights. Characters a name may not hold
    become "_" (a folder `lr=1e-4` is named `lr_1e-4`)."""
    stems = [(f.name, "")]  # (the name, what tells it apart): a long name is cut, never its distinction
    if f.revision is not None and "@" not in f.name:
        stems.append((f.name, f"@{f.revision[:12]}"))
    if f.revision is None and f.path.parent.name and f.name == f.path.name:
        stems.append((f"{f.path.parent.name}--{f.path.name}", ""))
    if sha is not None:
        stems.append((stems[-1][0], f"{stems[-1][1]}@{sha[:12]}"))
    return list(dict.fromkeys(_UNNAMEABLE.sub("_", stem).strip()[:200 - len(tail)] + tail for stem, tail in stems))


def _name_problem(name: str) -> LoradbError | None:
    try:
        check_name(name)
    except LoradbError as e:
        return e
    return None


def import_adapters(db, paths: Sequence[str | os.PathLike], *, base: str | os.PathLike | None = None,
                    meta: dict | None = None, progress: bool = True,
                    on_skip: Callable[[Path, str], None] | None = None) -> ImportReport:
    """Add every adapter under `paths` that fits, without its data.

    Args:
        db: a LoraDB.
        paths: PEFT adapter folders, folders of them, or hub-cache trees.
        base: the base model every adapter must fit (default: each adapter's stated base, which
            must then be on this machine).
        meta: metadata for every record added (wins over what the folders say).
        on_skip: called with (folder, reason) as each adapter is skipped.
    Returns:
        The records added and the folders skipped with their reasons.
    """
    from tqdm.auto import tqdm

    unreadable: list[tuple[Path, str]] = []
    found = name_adapters(adapter_folders(paths, unreadable))
    if not found and not unreadable:
        raise LoradbError(f"no adapter ({CONFIG_NAME}) under {', '.join(str(p) for p in paths)}")
    if base is not None:
        load_base(base)  # a `base` that cannot be read fails the import once, not each adapter in turn
    held_blobs = db.index.blob_refs()
    report = ImportReport()

    def skip(path: Path, reason: str) -> None:
        report.skipped.append((path, reason))
        if on_skip is not None:
            on_skip(path, reason)

    for path, reason in unreadable:
        skip(path, reason)

    for f in tqdm(found, desc="import", unit="adapter", disable=None if progress else True):
        try:
            weights = f.path / WEIGHTS_NAME
            sha = sha256_file(weights) if weights.is_file() else None
            if sha is not None and sha in held_blobs:
                skip(f.path, "the database already holds these weights")
                continue
            candidates = _name_choices(f, sha)
            choices = [n for n in candidates if _name_problem(n) is None]
            name = next((n for n in choices if not db.index.name_taken(n)), None)
            if name is None:
                skip(f.path, f"records named {', '.join(choices)} already hold other weights" if choices
                     else str(_name_problem(candidates[0])))
                continue
            # what the walk infers: under the record an exported folder came from (its own source, licence)
            inferred = {**card_meta(f.path), "source": f.source, **({"hub_revision": f.revision} if f.revision else {})}
            contribution = prepare_contribution(f.path, name=name, meta=meta, inferred_meta=inferred, base=base,
                                                without_data=True, progress=False, name_free=db.require_name_free,
                                                stated_base_must_match=True)
            report.added.append(db.store(contribution))
            held_blobs.add(report.added[-1].blob_sha256)
        except StoreError:  # the database itself failed: stop, as any command would
            raise
        except (LoradbError, OSError) as e:  # unreadable, another base, a name taken: skipped, the rest go on
            skip(f.path, str(e).splitlines()[0])
    return report
