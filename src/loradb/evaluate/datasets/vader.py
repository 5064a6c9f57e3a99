"""The benchmark's data, fetched from PyPI by the project itself, verified and cached.

The sdist of vadersentiment==3.3.2 carries additional_resources/hutto_ICWSM_2014.tar.gz:
four corpora of the same task, each sentence with the mean rating of 20 human raters on
-4..4 (Hutto & Gilbert, ICWSM 2014; MIT licence): tweets, movie-review snippets (from
Pang & Lee's Rotten Tomatoes reviews), Amazon review snippets and New York Times
editorial snippets. They become four binary sentiment domains: ratings with
|r| < NEUTRAL_BAND are dropped, the rest labeled positive/negative; duplicates are
removed; a seeded shuffle gives fixed test and train splits.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

from loradb.io.files import cache_dir
from loradb.evaluate.domains import write_splits
from loradb.io.files import replaced_dir
from loradb.errors import LoradbError
from loradb.io.pypi import PinnedFile

VADER_REQUIREMENT = "vadersentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER = PinnedFile(VADER_REQUIREMENT, VADER_SDIST, VADER_SHA256, sdist=True)
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_FILES = {
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movies": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
}
NEUTRAL_BAND = 0.5  # mean ratings in (-0.5, 0.5) are too close to neutral to label
TEST_SIZE = 400
TRAIN_SIZE = 800
SPLIT_SEED = 0
PROMPTS = {
    "positive": "This is a positive, favorable statement.",
    "negative": "This is a negative, unfavorable statement.",
}
FORMAT_VERSION = "vader-v1"  # bump when the conversion changes, so caches are rebuilt


def verify_archive(path: Path) -> Path:
    """Refuse a missing or altered sdist with what to do about it."""
    return VADER.verify(path)


def fetch_vader(cache: Path | None = None) -> Path:
    """The verified vadersentiment sdist, downloaded into the cache on first use."""
    return VADER.fetch(cache)


def _file_in(tar: tarfile.TarFile, name: str) -> bytes:
    """The bytes of a regular file in an archive; KeyError if it is missing or not a regular file."""
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(f"{name} is not a regular file")
    return member.read()


def read_ratings(sdist: Path) -> dict[str, list[tuple[str, float]]]:
    """(text, mean rating) per domain, read from the archive without extracting it to disk."""
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_bytes = _file_in(outer, INNER_ARCHIVE)
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            raw = {domain: _file_in(inner, member) for domain, member in VADER_FILES.items()}
    except (tarfile.TarError, KeyError, AttributeError, OSError, EOFError) as e:
        raise LoradbError(f"benchmark archive {sdist} does not hold the expected files ({e}); delete it and run again") from None
    out = {}
    for domain, data in raw.items():
        rows = []
        for line in data.decode("utf-8-sig").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[2].strip():
                rows.append((parts[2].strip(), float(parts[1])))
        out[domain] = rows
    return out


def _binary_splits(rows: list[tuple[str, float]]) -> tuple[list[dict], list[dict]]:
    seen, examples = set(), []
    for text, rating in rows:
        if abs(rating) < NEUTRAL_BAND or text in seen:
            continue
        seen.add(text)
        examples.append({"text": text, "label": "positive" if rating > 0 else "negative", "rating": rating})
    random.Random(SPLIT_SEED).shuffle(examples)
    return examples[TEST_SIZE:TEST_SIZE + TRAIN_SIZE], examples[:TEST_SIZE]


def vader_domains(cache: Path | None = None, *, archive: Path | None = None) -> Path:
    """A domains directory (one folder per domain with train.jsonl/test.jsonl, plus labels.json).

    Args:
        cache: the cache root (default: loradb's cache directory).
        archive: use this sdist instead of downloading (it is verified all the same).
    Returns:
        The directory, built on first use and reused afterwards.
    """
    root = cache or cache_dir()
    out = root / "data" / FORMAT_VERSION
    if (out / "labels.json").is_file():
        return out
    sdist = verify_archive(Path(archive)) if archive is not None else fetch_vader(root)
    ratings = read_ratings(sdist)
    with replaced_dir(out) as tmp:
        for domain, rows in ratings.items():
            write_splits(tmp, domain, *_binary_splits(rows))
        (tmp / "labels.json").write_text(json.dumps(PROMPTS, indent=2) + "\n")
        (tmp / "SOURCE.md").write_text(
            f"Converted from {VADER_REQUIREMENT} (sdist sha256 {VADER_SHA256}), {INNER_ARCHIVE}.\n"
            "Hutto & Gilbert, VADER, ICWSM 2014; MIT licence. Ratings with |r| < "
            f"{NEUTRAL_BAND} dropped; duplicates removed; seeded shuffle (seed {SPLIT_SEED}): "
            f"first {TEST_SIZE} test, next {TRAIN_SIZE} train.\n")
    return out
