"""Reading a domains directory: one folder per domain with train.jsonl and test.jsonl.

Classification: fields "text" and "label", and optionally labels.json mapping each label
to the prompt the classifier compares texts with. Generation: fields "input" and
"target", and optionally task.json with the instruction put in front of every input.
A Domain keeps inputs in *_texts and labels or target texts in *_labels either way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..classify import default_prompts
from ..data import read_labeled, read_pairs
from ..errors import DataError

MIN_DOMAINS = 3


@dataclass
class Domain:
    name: str
    train_path: Path
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def write_splits(root: Path, name: str, train: list[dict], test: list[dict]) -> None:
    """One domain folder: train.jsonl and test.jsonl, a JSON object a line."""
    (root / name).mkdir()
    for split, rows in (("train", train), ("test", test)):
        (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read_domains(root: Path, read) -> list[Domain]:
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
    return [Domain(f.name, f / "train.jsonl", *read(f / "train.jsonl"), *read(f / "test.jsonl")) for f in folders]


def load_generation_domains(root: str | Path, default_instruction: str) -> tuple[list[Domain], str]:
    """Every domain's (input, target) pairs, sorted by name, and the task's instruction
    (task.json's "instruction", else `default_instruction`).

    Raises:
        DataError: fewer than 3 domains, a missing file, a malformed line or task.json.
    """
    root = Path(root)
    domains = _read_domains(root, read_pairs)
    path = root / "task.json"
    if not path.is_file():
        return domains, default_instruction
    try:
        task = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as JSON ({e})") from None
    instruction = task.get("instruction") if isinstance(task, dict) else None
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(f"{path}: needs a non-empty \"instruction\" string")
    return domains, instruction


def load_domains(root: str | Path) -> tuple[list[Domain], dict[str, str]]:
    """Validate and read every domain; returns the domains (sorted by name) and the label prompts.

    Raises:
        DataError: fewer than 3 domains, a missing file, a malformed line, labels that
            differ between domains, or a labels.json that does not cover them.
    """
    root = Path(root)
    domains = _read_domains(root, read_labeled)
    label_sets = {d.name: sorted(set(d.train_labels) | set(d.test_labels)) for d in domains}
    first = domains[0].name
    for name, labels in label_sets.items():
        if labels != label_sets[first]:
            raise DataError(f"labels differ between domains: {first} has {label_sets[first]}, {name} has {labels}")
    if len(label_sets[first]) < 2:
        raise DataError(f"every domain has the single label {label_sets[first]}; classification needs at least two")
    path = root / "labels.json"
    return domains, (read_prompts(path, label_sets[first]) if path.is_file() else default_prompts(label_sets[first]))


def read_prompts(path: Path, labels: list[str] | None = None) -> dict[str, str]:
    """A labels.json mapping each label to its prompt; with `labels`, refused unless it covers exactly those."""
    try:
        prompts = json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) and v for v in prompts.values()):
        raise DataError(f"{path}: must map each label to a non-empty prompt string")
    prompts = {str(k): v for k, v in prompts.items()}
    if labels is not None and sorted(prompts) != labels:
        raise DataError(f"{path}: gives prompts for {sorted(prompts)} but the domains' labels are {labels}")
    return prompts
