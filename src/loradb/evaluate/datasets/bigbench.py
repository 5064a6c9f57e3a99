"""Tasks of BIG-bench (`bigbench==1.0.0` sdist, Apache-2.0), read from the archive, never imported.

The sdist is large (358 MB): the few task.json files the collections use are pulled out in
one streaming pass and kept in the cache, next to the verified sdist. Each task.json holds
"examples" with an "input" and either "target_scores" (one correct choice: a label) or
"target" (a string or a list of accepted strings). BIG-bench asks that its data never be
used to train foundation models (its canary string); loradb trains benchmark adapters on
it and never ships it.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.io.files import replaced_dir
from loradb.io.pypi import PinnedFile

BIGBENCH = PinnedFile("bigbench==1.0.0", "bigbench-1.0.0.tar.gz",
                      "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2", sdist=True)
ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"
EXTRACT_VERSION = "bigbench-1.0.0-tasks-v1"


def task_files(cache: Path, members: list[str]) -> dict[str, dict]:
    """member (under benchmark_tasks/) -> parsed task.json, extracted from the sdist once."""
    folder = cache / "data" / EXTRACT_VERSION
    wanted = sorted(set(members))
    have = folder / "members.json"
    if not (have.is_file() and set(json.loads(have.read_text())) >= set(wanted)):
        sdist = BIGBENCH.fetch(cache)
        known = json.loads(have.read_text()) if have.is_file() else []
        everything = sorted(set(known) | set(wanted))
        with replaced_dir(folder) as tmp:
            got = _extract(sdist, everything, tmp)
            (tmp / "members.json").write_text(json.dumps(sorted(got)) + "\n")
    out = {}
    for m in wanted:
        try:
            out[m] = json.loads((folder / m).read_text())
        except (OSError, ValueError) as e:
            raise LoradbError(f"{folder / m}: cannot be read ({e}); delete {folder} and run again") from None
    return out


def _extract(sdist: Path, members: list[str], into: Path) -> list[str]:
    want = {ROOT + m: m for m in members}
    got = []
    try:
        with tarfile.open(sdist, "r|gz") as tar:
            for info in tar:
                if info.isfile() and info.name in want:
                    target = into / want[info.name]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    member = tar.extractfile(info)
                    assert member is not None  # a regular file
                    target.write_bytes(member.read())
                    got.append(want[info.name])
                    if len(got) == len(want):
                        break
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LoradbError(f"{sdist}: cannot be read ({e}); delete it and run again") from None
    missing = sorted(set(members) - set(got))
    if missing:
        raise LoradbError(f"{sdist} does not hold {', '.join(missing)}")
    return got


def gold_label(example: dict) -> str:
    """The one choice scored highest (1) of a multiple-choice example."""
    scores = example["target_scores"]
    best = max(scores.values())
    labels = [k for k, v in scores.items() if v == best]
    if len(labels) != 1 or best <= 0:
        raise LoradbError(f"a BIG-bench example has no single correct choice: {scores}")
    return labels[0]


def labeled(task: dict, clean=lambda s: s, group=None) -> tuple[list[dict], list[str | None]]:
    """({"text", "label"} rows of a multiple-choice task, each row's group(example) or None).

    A text given twice keeps its first group; with two different labels it is dropped."""
    labels: dict[str, str | None] = {}
    groups: dict[str, str | None] = {}
    for ex in task["examples"]:
        text, label = " ".join(clean(ex["input"]).split()), gold_label(ex)
        labels[text] = label if labels.get(text, label) == label else None
        groups.setdefault(text, group(ex) if group else None)
    kept = [t for t, y in labels.items() if y is not None]
    return [{"text": t, "label": labels[t]} for t in kept], [groups[t] for t in kept]


def pairs(task: dict, clean=lambda s: s) -> list[dict]:
    """{"input", "target"} of a generation task: the first accepted target of each input."""
    out = []
    for ex in task["examples"]:
        target = ex["target"] if isinstance(ex["target"], str) else ex["target"][0]
        out.append({"input": clean(ex["input"]).strip(), "target": " ".join(target.split())})
    return out


# input clean-ups: instructions and answer cues that every example of a task repeats
_FACT = re.compile(r"^On (.+?), the following claim was made: (.*)\nQ: Was this claim true or false\?$", re.S)
_FALLACY = re.compile(r"^(This AI is identifying whether statements contain fallacies\. The AI responds with "
                      r"'Valid' or 'Invalid' as appropriate\. |Do you think the following argument is 'Valid' or 'Invalid'\? )")


def strip_prefix(prefix: str):
    return lambda s: s[len(prefix):] if s.startswith(prefix) else s


def strip_suffix(suffix: str):
    return lambda s: s[: -len(suffix)] if s.endswith(suffix) else s


def fact_claim(s: str) -> str:
    m = _FACT.match(s)
    return m.group(2) if m else s


def fallacy_argument(s: str) -> str:
    return _FALLACY.sub("", s)
