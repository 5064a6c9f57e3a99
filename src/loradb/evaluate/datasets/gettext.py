"""Translated user-interface messages: the gettext catalogues (.po) that pinned PyPI wheels ship,
read from the archives (nothing installed or imported). Each catalogue gives (English msgid,
translated msgstr) pairs written by the projects' volunteer translators (Transifex):

- Sphinx 9.0.4 (BSD-2-Clause; the Sphinx team, Brandl et al.): sphinx/locale/<L>/LC_MESSAGES/sphinx.po
- Wagtail 8.0.1 (BSD-3-Clause; Torchbox and contributors): every wagtail/**/locale/<L>/LC_MESSAGES/django*.po
- django-allauth 65.21.1 (MIT; Raymond Penners and contributors): allauth/locale/<L>/LC_MESSAGES/django.po

Kept: translated singular entries (those with a msgctxt as ordinary ones); left out: the header,
fuzzy, plural, obsolete (#~) and untranslated entries.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from loradb.errors import LoradbError
from loradb.evaluate.datasets.common import words
from loradb.evaluate.datasets.packages import member
from loradb.io.pypi import PinnedFile

SPHINX = PinnedFile("sphinx==9.0.4", "sphinx-9.0.4-py3-none-any.whl",
                    "5bebc595a5e943ea248b99c13814c1c5e10b3ece718976824ffa7959ff95fffb", sdist=False)
WAGTAIL = PinnedFile("wagtail==8.0.1", "wagtail-8.0.1-py3-none-any.whl",
                     "1e6ad5c7891a54efce1400e168298b5a2cc343b642cee89c31bf5ec30c98b26c", sdist=False)
ALLAUTH = PinnedFile("django-allauth==65.21.1", "django_allauth-65.21.1-py3-none-any.whl",
                     "7bdf018c9f3f0a32c80677f84e7777272d9c833b180bd6734314c4831c802a9e", sdist=False)
APPS = {"sphinx": (SPHINX, "BSD-2-Clause"), "wagtail": (WAGTAIL, "BSD-3-Clause"), "allauth": (ALLAUTH, "MIT")}  # pin, licence
LANGS = ("fr", "es", "pt_BR", "ru", "pl", "ja")

_KEYWORD = re.compile(r'(msgctxt|msgid|msgid_plural|msgstr(?:\[\d+\])?)\s+(".*")\s*$')
_ESCAPE = re.compile(r'\\(.)')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(s: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), s[1:-1])


def po_pairs(text: str, where: str = "catalogue") -> list[tuple[str, str]]:
    """(msgid, msgstr) of a .po file's translated singular entries, whitespace collapsed."""
    out: list[tuple[str, str]] = []
    entry: dict[str, str] = {}
    flags: set[str] = set()
    obsolete, last = False, ""

    def close() -> None:
        nonlocal entry, flags, obsolete, last
        msgid, msgstr = words(entry.get("msgid", "")), words(entry.get("msgstr", ""))
        if msgid and msgstr and not obsolete and "fuzzy" not in flags and "msgid_plural" not in entry:
            out.append((msgid, msgstr))
        entry, flags, obsolete, last = {}, set(), False, ""

    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            close()
        elif line.startswith("#"):
            if "msgstr" in entry or any(k.startswith("msgstr[") for k in entry):
                close()
            if line.startswith("#~"):
                obsolete = True
            elif line.startswith("#,"):
                flags |= {f.strip() for f in line[2:].split(",")}
        elif line.startswith('"') and line.endswith('"') and len(line) >= 2 and last:
            entry[last] += _unquote(line)
        elif m := _KEYWORD.match(line):
            key = m.group(1)
            if key in ("msgctxt", "msgid") and ("msgid" in entry or key in entry):
                close()
            entry[key] = _unquote(m.group(2))
            last = key
        else:
            raise LoradbError(f"{where} line {n}: cannot parse {line[:60]!r}")
    close()
    return out


def _paths(wheel: Path, app: str, lang: str) -> list[str]:
    if app not in APPS or lang not in LANGS:
        raise LoradbError(f"no catalogue for app {app!r}, language {lang!r}: apps are {list(APPS)}, languages {LANGS}")
    fixed = {"sphinx": f"sphinx/locale/{lang}/LC_MESSAGES/sphinx.po",
             "allauth": f"allauth/locale/{lang}/LC_MESSAGES/django.po"}
    if app in fixed:
        return [fixed[app]]
    pattern = re.compile(rf"wagtail/(?:.+/)?locale/{lang}/LC_MESSAGES/django[^/]*\.po")
    try:
        with zipfile.ZipFile(wheel) as z:
            found = sorted(n for n in z.namelist() if pattern.fullmatch(n))
    except (zipfile.BadZipFile, OSError) as e:
        raise LoradbError(f"{wheel}: cannot read it ({e}); delete it from the cache and run again") from None
    if not found:
        raise LoradbError(f"{wheel}: no wagtail/**/locale/{lang}/LC_MESSAGES/django*.po")
    return found


def catalogue(wheel: Path, app: str, lang: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of one app in one language, each msgid once (the first)."""
    pairs: dict[str, str] = {}
    for path in _paths(wheel, app, lang):
        for msgid, msgstr in po_pairs(member(wheel, path).decode("utf-8"), f"{wheel}: {path}"):
            pairs.setdefault(msgid, msgstr)
    return list(pairs.items())
