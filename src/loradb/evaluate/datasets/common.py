"""What every packaged collection does with its rows: one seeded split rule, one folder layout.

A collection's reader turns pinned source files into DomainData (rows, the task's label
prompts or instruction, the domain's family, a line of provenance); `split` and
`write_domain` make every collection's domains the same way, so the folder a collection
writes is exactly what `loradb eval --domains` reads.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loradb.errors import LoradbError
from loradb.evaluate.domains import write_splits

TRAIN_MAX, TEST_MAX = 600, 200  # examples per domain, at most
TRAIN_MIN, TEST_MIN = 150, 60  # and at least (a source too small for this is not used)
TEST_SHARE = 0.25  # of a source smaller than TRAIN_MAX + TEST_MAX, this much goes to test
SPLIT_SEED = 0


@dataclass
class DomainData:
    """One domain of a collection before it is split and written."""

    name: str
    family: str  # the kind of task: what retrieval should find for a held-out domain of it
    rows: list[dict]  # {"text", "label"} (classification) or {"input", "target"} (generation)
    source: str  # one line for SOURCE.md: package, file, what was kept
    prompts: dict[str, str] | None = None  # classification: every label of the task -> its prompt
    instruction: str | None = None  # generation
    groups: Sequence[str | None] | None = None  # rows of one group go to one split (e.g. one movie's reviews); None: alone
    notes: list[str] = field(default_factory=list)  # repairs and caveats, for SOURCE.md
    licence: str = ""  # the data's terms, for SOURCE.md


def words(text: str, limit: int | None = None) -> str:
    """Whitespace collapsed; with `limit`, cut to that many words."""
    parts = text.split()
    return " ".join(parts[:limit] if limit else parts)


def split(d: DomainData, *, seed: int = SPLIT_SEED, train_max: int = TRAIN_MAX, test_max: int = TEST_MAX
          ) -> tuple[list[dict], list[dict]]:
    """(train, test) of a domain: one row per distinct input (the first), groups kept whole,
    a seeded shuffle of the groups, test filled first.

    Raises:
        LoradbError: the source yields fewer than TRAIN_MIN + TEST_MIN distinct examples.
    """
    field_in = "text" if "text" in d.rows[0] else "input"
    groups: dict[str, list[dict]] = {}
    seen = set()
    for i, row in enumerate(d.rows):
        if row[field_in] in seen or not row[field_in].strip():
            continue
        seen.add(row[field_in])
        group = g if d.groups and (g := d.groups[i]) is not None else f"row-{i}"
        groups.setdefault(group, []).append(row)
    n = sum(len(g) for g in groups.values())
    test_size = min(test_max, max(TEST_MIN, round(TEST_SHARE * n))) if n < train_max + test_max else test_max
    if n - test_size < TRAIN_MIN:
        raise LoradbError(f"{d.name}: {n} distinct examples, fewer than the {TRAIN_MIN} + {TEST_MIN} a domain needs")
    order = sorted(groups)
    random.Random(f"{seed}-{d.name}").shuffle(order)
    test: list[dict] = []
    train: list[dict] = []
    for key in order:
        (test if len(test) < test_size else train).extend(groups[key])
    return train[:train_max], test[:test_max]


def write_domain(root: Path, d: DomainData, **split_args) -> dict:
    """The domain's folder: train.jsonl, test.jsonl, domain.json (family) and its labels.json
    or task.json. Returns the counts for SOURCE.md."""
    train, test = split(d, **split_args)
    write_splits(root, d.name, train, test)
    about = {"family": d.family, "source": d.source, **({"licence": d.licence} if d.licence else {})}
    (root / d.name / "domain.json").write_text(json.dumps(about, indent=2) + "\n")
    if d.prompts is not None:
        labels = {row["label"] for row in train + test}
        missing = sorted(labels - set(d.prompts))
        if missing:
            raise LoradbError(f"{d.name}: labels {missing} have no prompt")
        (root / d.name / "labels.json").write_text(json.dumps(d.prompts, indent=2) + "\n")
    if d.instruction is not None:
        (root / d.name / "task.json").write_text(json.dumps({"instruction": d.instruction}, indent=2) + "\n")
    return {"train": len(train), "test": len(test)}


def source_md(title: str, intro: str, domains: list[dict], pinned: list, missing: dict[str, str] | None = None) -> str:
    """SOURCE.md of a collection: packages (version, sha256), then each domain's source, licence,
    size and notes (`domains`: name, family, source, licence, notes, train, test), then the
    domains left out because a source could not be had."""
    lines = [f"# {title}", "", intro, "", "## Packages (fetched from PyPI or npm, pinned by version and sha256)", ""]
    lines += [f"- {p.requirement} ({p.registry}): `{p.filename}`, sha256 `{p.sha256}`" for p in pinned]
    lines += ["", "## Domains", "", "| domain | family | train | test | source | licence |", "|---|---|---|---|---|---|"]
    for d in domains:
        lines.append(f"| {d['name']} | {d['family']} | {d['train']} | {d['test']} | {d['source']} | {d.get('licence') or '-'} |")
    notes = [(d["name"], n) for d in domains for n in d.get("notes", [])]
    if notes:
        lines += ["", "## Repairs and caveats", ""] + [f"- {name}: {n}" for name, n in notes]
    if missing:
        lines += ["", "## Left out: a source could not be had", ""]
        lines += [f"- {name}: {why}" for name, why in sorted(missing.items())]
    lines += ["", f"Split: one row per distinct input; groups kept in one split; seeded shuffle (seed {SPLIT_SEED} and the "
              f"domain's name); test first, then train; at most {TEST_MAX} test and {TRAIN_MAX} train examples "
              f"(a quarter of a smaller source to test, at least {TEST_MIN}).", ""]
    return "\n".join(lines)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def chunks(text: str, max_words: int = 100, min_words: int = 8) -> list[str]:
    """Sentences packed greedily into pieces of at most max_words words (longer sentences cut);
    pieces under min_words dropped."""
    out: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(words(text)):
        ws = sentence.split()
        if current and len(current) + len(ws) > max_words:
            out.append(" ".join(current))
            current = []
        current += ws
        while len(current) > max_words:
            out.append(" ".join(current[:max_words]))
            current = current[max_words:]
    if current:
        out.append(" ".join(current))
    return [c for c in out if len(c.split()) >= min_words]
