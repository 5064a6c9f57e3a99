"""The generation benchmark's data: write a function's one-line summary from the rest of its
documentation, in five domains, from pinned PyPI wheels that loradb fetches and verifies.

Each example is one public function or method of a library: the input is its signature
and the body of its docstring (everything after the first paragraph: explanation,
parameters, notes; doctest lines and underlines dropped, cut to INPUT_WORDS words), the
target is the docstring's first paragraph, the summary line its authors wrote. The same
task in five fields, each with its own vocabulary and house style:

  graphs    networkx 3.6.1   (BSD-3-Clause)
  symbolic  sympy 1.14.0     (BSD-3-Clause)
  language  nltk 3.10.4      (Apache-2.0)
  arrays    xarray 2026.9.0  (Apache-2.0)
  web       django 5.2.19    (BSD-3-Clause)

Sources are read from the wheels with `ast`, never imported. Examples are deduplicated by
summary, shuffled with a fixed seed and split into test then train, so a summary never
appears in both splits.
"""

from __future__ import annotations

import ast
import json
import random
import re
import zipfile
from pathlib import Path

from loradb.io.files import cache_dir
from loradb.errors import LoradbError
from loradb.evaluate.domains import write_splits
from loradb.io.files import replaced_dir
from loradb.io.pypi import PinnedFile

SOURCES = {
    "graphs": PinnedFile("networkx==3.6.1", "networkx-3.6.1-py3-none-any.whl",
                         "d47fbf302e7d9cbbb9e2555a0d267983d2aa476bac30e90dfbe5669bd57f3762", sdist=False),
    "symbolic": PinnedFile("sympy==1.14.0", "sympy-1.14.0-py3-none-any.whl",
                           "e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5", sdist=False),
    "language": PinnedFile("nltk==3.10.4", "nltk-3.10.4-py3-none-any.whl",
                           "769ba5413f265b7d3e87cd163cc28efa01e29eeef8bb6080bc907949d9fcfb51", sdist=False),
    "arrays": PinnedFile("xarray==2026.9.0", "xarray-2026.9.0-py3-none-any.whl",
                         "fe349fa871628b1a0a5217af3fe1283a2862d5485156e6eda354fffb81c3bb7c", sdist=False),
    "web": PinnedFile("django==5.2.19", "django-5.2.19-py3-none-any.whl",
                      "5965d974a5218a2b68a11dd1276434707f23886525c23f0598eccedaf4f4ca00", sdist=False),
}
# each library's licence (its wheel's metadata), written into SOURCE.md beside its domain
LICENCES = {"graphs": "BSD-3-Clause", "symbolic": "BSD-3-Clause", "language": "Apache-2.0", "arrays": "Apache-2.0",
            "web": "BSD-3-Clause"}
INSTRUCTION = "Write the one-line summary that opens the docstring of this Python function."
INPUT_WORDS = 60
SUMMARY_WORDS = (3, 24)
MIN_BODY_WORDS = 12
TEST_SIZE = 32
TRAIN_SIZE = 96
SPLIT_SEED = 0
FORMAT_VERSION = "docstrings-v1"  # bump when the conversion changes, so caches are rebuilt

_UNDERLINE = re.compile(r"^\s*[-=~^*]{3,}\s*$")
_SKIPPED_PATH = re.compile(r"(^|/)(tests?|migrations)(/|$)|(^|/)test_[^/]*$|(^|/)conftest\.py$")


def _clean_body(body: str) -> str:
    """The docstring body as one line of prose: no doctest lines, no section underlines."""
    lines = [ln for ln in body.splitlines() if not _UNDERLINE.match(ln) and not ln.strip().startswith((">>>", "..."))]
    words = " ".join(lines).split()
    return " ".join(words[:INPUT_WORDS]) + (" …" if len(words) > INPUT_WORDS else "")


def examples_from_source(source: bytes | str) -> list[dict]:
    """{"input", "target"} for every public function of one module with a usable docstring."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1) if doc else []
        if len(parts) < 2:
            continue
        summary = " ".join(parts[0].split())
        body = _clean_body(parts[1])
        if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1] or summary.endswith(":"):
            continue
        if len(body.split()) < MIN_BODY_WORDS:
            continue
        args = ", ".join(a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs)
        out.append({"input": f"def {node.name}({args}):\n{body}", "target": summary})
    return out


def examples_from_wheel(wheel: Path) -> list[dict]:
    """Every usable example of a wheel's Python sources (tests and migrations left out)."""
    out = []
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                if name.endswith(".py") and not _SKIPPED_PATH.search(name):
                    out.extend(examples_from_source(z.read(name)))
    except (zipfile.BadZipFile, OSError) as e:
        raise LoradbError(f"{wheel}: cannot be read as a wheel ({e}); delete it and run again") from None
    return out


def split_examples(examples: list[dict], *, test_size: int = TEST_SIZE, train_size: int = TRAIN_SIZE,
                   seed: int = SPLIT_SEED) -> tuple[list[dict], list[dict]]:
    """(train, test): one example per summary, seeded shuffle, test first."""
    seen, unique = set(), []
    for ex in examples:
        if ex["target"] not in seen:
            seen.add(ex["target"])
            unique.append(ex)
    if len(unique) < test_size + train_size:
        raise LoradbError(f"only {len(unique)} distinct examples; the split needs {test_size + train_size}")
    random.Random(seed).shuffle(unique)
    return unique[test_size:test_size + train_size], unique[:test_size]


def docstring_domains(cache: Path | None = None) -> Path:
    """A domains directory for `loradb eval --task generation` (train.jsonl / test.jsonl with
    fields input and target, plus task.json with the instruction), built on first use."""
    root = cache or cache_dir()
    out = root / "data" / FORMAT_VERSION
    if (out / "task.json").is_file():
        return out
    with replaced_dir(out) as tmp:
        provenance = []
        for domain, pinned in SOURCES.items():
            write_splits(tmp, domain, *split_examples(examples_from_wheel(pinned.fetch(root))))
            provenance.append(f"- {domain}: {pinned.requirement} (wheel sha256 {pinned.sha256}), licence {LICENCES[domain]}")
        (tmp / "task.json").write_text(json.dumps({"task": "generation", "instruction": INSTRUCTION}, indent=2) + "\n")
        (tmp / "SOURCE.md").write_text(
            "Docstring summaries (target) from the rest of each docstring (input), converted by "
            f"loradb.docstrings ({FORMAT_VERSION}); seeded shuffle (seed {SPLIT_SEED}): first {TEST_SIZE} test, "
            f"next {TRAIN_SIZE} train.\n\n" + "\n".join(provenance) + "\n")
    return out
