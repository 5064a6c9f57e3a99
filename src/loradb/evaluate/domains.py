"""Reading a domains directory: one folder per domain with train.jsonl and test.jsonl.

Classification: fields "text" and "label", and optionally labels.json mapping each label
to the prompt the classifier compares texts with. Generation: fields "input" and
"target", and optionally task.json with the instruction put in front of every input.
A domain's own DIR/<domain>/labels.json or task.json overrides the root one, so one
folder can mix tasks with their own label sets. DIR/<domain>/domain.json may name the
domain's "family" (its kind of task: what retrieval should find), which retrieval
quality is measured against. A Domain keeps inputs in *_texts and labels or target texts
in *_labels either way."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loradb.models.classify import default_prompts
from loradb.io.data import read_labeled, read_pairs
from loradb.errors import DataError
from loradb.io.data import read_json
from loradb.models.prompts import read_prompts

MIN_DOMAINS = 3


@dataclass
class Domain:
    name: str
    train_path: Path
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]
    family: str = ""  # the kind of task (domain.json); default: the domain's own name
    prompts: dict[str, str] | None = None  # classification: label -> prompt
    instruction: str | None = None  # generation: the instruction before every input
    unlabeled_texts: list[str] | None = None  # a target's texts for z, disjoint from the scored test texts (None: those)

    @property
    def target_texts(self) -> list[str]:
        """What a target's z is computed from: its unlabeled texts, else its test texts."""
        return self.unlabeled_texts if self.unlabeled_texts is not None else self.test_texts

    @property
    def task(self) -> dict:
        """What, besides its data, the domain's adapter is trained for (and its task key embeds)."""
        return {"prompts": self.prompts} if self.prompts is not None else {"instruction": self.instruction}


def write_splits(root: Path, name: str, train: list[dict], test: list[dict]) -> None:
    """One domain folder: train.jsonl and test.jsonl, a JSON object a line."""
    (root / name).mkdir()
    for split, rows in (("train", train), ("test", test)):
        (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read_domains(root: Path, read: Callable[[Path], tuple[list[str], list[str]]]) -> list[Domain]:
    """Every domain folder under root, sorted by name, its splits read by read(path) -> (inputs, labels)."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; pass a folder holding one folder per domain")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < MIN_DOMAINS:
        raise DataError(f"{root}: holds {len(folders)} domain folders; leave-one-domain-out needs at least {MIN_DOMAINS}")
    for folder in folders:
        for split in ("train.jsonl", "test.jsonl"):
            if not (folder / split).is_file():
                raise DataError(f"{folder}: {split} is missing; each domain folder needs train.jsonl and test.jsonl")
    return [Domain(f.name, f / "train.jsonl", *read(f / "train.jsonl"), *read(f / "test.jsonl"), family=_family(f))
            for f in folders]


def _family(folder: Path) -> str:
    path = folder / "domain.json"
    if not path.is_file():
        return folder.name
    doc = read_json(path)
    family = doc.get("family") if isinstance(doc, dict) else None
    if not isinstance(family, str) or not family.strip():
        raise DataError(f"{path}: needs a non-empty \"family\" string")
    return family


def load_generation_domains(root: str | Path, default_instruction: str) -> list[Domain]:
    """Every domain's (input, target) pairs, sorted by name, each with its instruction: its own
    task.json's "instruction", else the root task.json's, else `default_instruction`.

    Raises:
        DataError: fewer than 3 domains, a missing file, a malformed line or task.json.
    """
    root = Path(root)
    domains = _read_domains(root, read_pairs)
    shared = _instruction(root / "task.json") or default_instruction
    for d in domains:
        d.instruction = _instruction(root / d.name / "task.json") or shared
    return domains


def _instruction(path: Path) -> str | None:
    if not path.is_file():
        return None
    task = read_json(path)
    instruction = task.get("instruction") if isinstance(task, dict) else None
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(f"{path}: needs a non-empty \"instruction\" string")
    return instruction


def load_domains(root: str | Path) -> list[Domain]:
    """Validate and read every domain (sorted by name), each with its label prompts: its own
    labels.json, else the root labels.json, else "This text is LABEL." per label.

    Raises:
        DataError: fewer than 3 domains, a missing file, a malformed line, a domain with a
            single label, or a labels.json that does not cover its domain's labels.
    """
    root = Path(root)
    domains = _read_domains(root, read_labeled)
    shared = root / "labels.json"
    for d in domains:
        labels = sorted(set(d.train_labels) | set(d.test_labels))
        if len(labels) < 2:
            raise DataError(f"{d.name}: every example has the label {labels}; classification needs at least two")
        own = root / d.name / "labels.json"
        path = own if own.is_file() else shared if shared.is_file() else None
        d.prompts = read_prompts(path, labels) if path is not None else default_prompts(labels)
    return domains




MISSING_FILE = "missing.json"  # in a domains folder built from a partial collection: domain -> why it is not there


def missing_domains(root: Path) -> dict[str, str]:
    """The domains a collection's folder lacks because a source could not be had (none: {})."""
    path = Path(root) / MISSING_FILE
    if not path.is_file():
        return {}
    try:
        missing = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    return {str(k): str(v) for k, v in missing.items()} if isinstance(missing, dict) else {}
