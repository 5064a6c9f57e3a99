"""Write the CLI reference pages (docs/cli/) from the `loradb` argparse parsers.

    python tools/cli_reference.py          # rewrite docs/cli/*.md and the nav's list of them
    python tools/cli_reference.py --check  # exit 1, naming the stale pages, if they differ

The pages are built from the parsers' structure (flags, metavars, choices, defaults, help),
not from `--help` output, so they do not depend on the terminal width or the Python
version's help formatter. tests/test_docs.py fails when they are out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loradb.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS_CLI = ROOT / "docs" / "cli"
MKDOCS_YML = ROOT / "mkdocs.yml"
NAV_BEGIN = "      # begin: written by tools/cli_reference.py\n"
NAV_END = "      # end: written by tools/cli_reference.py\n"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (one-line help, parser) of a parser's subcommands, in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (helps.get(name, ""), p) for name, p in action.choices.items()}
    return {}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def synopsis(prog: str, parser: argparse.ArgumentParser) -> str:
    words = [prog]
    for a in parser._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            words.append(a.metavar or a.dest.upper())
    if any(a.option_strings and a.dest != "help" for a in parser._actions):
        words.append("[options]")
    return " ".join(words)


def describe(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    text = formatter._expand_help(action) if action.help else ""
    if action.choices is not None and not all(str(c) in text for c in action.choices):
        text += f" (one of: {', '.join(f'`{c}`' for c in action.choices)})"
    if action.required and action.option_strings:
        text += " **Required.**"
    return text.strip()


def argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    names = ", ".join(f"`{s}`" for s in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.nargs in ("+", "*"):
        metavar += " ..."
    return f"{names} `{metavar}`"


def exclusive_note(parser: argparse.ArgumentParser) -> list[str]:
    notes = []
    for group in parser._mutually_exclusive_groups:
        flags = [f"`{max(a.option_strings, key=len)}`" for a in group._group_actions]
        kind = "exactly one" if group.required else "at most one"
        notes.append(f"Give {kind} of {', '.join(flags)}.")
    return notes


def command_section(prog: str, help: str, parser: argparse.ArgumentParser, level: str) -> list[str]:
    formatter = parser._get_formatter()
    lines = [f"{level} `{prog}`", "", help[:1].upper() + help[1:] + "." if help else "", "",
             "```text", synopsis(prog, parser), "```", ""]
    rows = [a for a in parser._actions if a.dest != "help" and not isinstance(a, argparse._SubParsersAction)]
    if rows:
        lines += ["| argument | meaning |", "|---|---|"]
        lines += [f"| {cell(argument(a))} | {cell(describe(a, formatter))} |" for a in rows]
        lines.append("")
    lines += [n + "\n" for n in exclusive_note(parser)]
    return lines


def page_name(command: str) -> str:
    """A command's page: prefixed, so that `loradb index` does not take the folder's index.md."""
    return f"loradb-{command}.md"


def render() -> dict[str, str]:
    """File name -> Markdown text of every CLI reference page."""
    root = build_parser()
    pages: dict[str, str] = {}
    index = ["# Command line", "", "Generated from the `loradb` parsers by `tools/cli_reference.py`; "
             "`loradb COMMAND --help` prints the same flags. Bad input prints one line on stderr, exits 2 and "
             "changes nothing; `--json` prints one JSON document on stdout.", "",
             "| command | what it does |", "|---|---|"]
    for name, (help, parser) in subcommands(root).items():
        index.append(f"| [`loradb {name}`]({page_name(name)}) | {cell(help)} |")
        nested = subcommands(parser)
        if nested:
            lines = [f"# `loradb {name}`", "", help[:1].upper() + help[1:] + ".", ""]
            for sub, (sub_help, sub_parser) in nested.items():
                lines += command_section(f"loradb {name} {sub}", sub_help, sub_parser, "##")
        else:
            lines = command_section(f"loradb {name}", help, parser, "#")
        pages[page_name(name)] = "\n".join(lines).rstrip() + "\n"
    pages["index.md"] = "\n".join(index) + "\n"
    return pages


def with_nav(mkdocs_yml: str, pages: dict[str, str]) -> str:
    """mkdocs.yml with the command pages listed in its nav, between the two marker lines."""
    if NAV_BEGIN not in mkdocs_yml or NAV_END not in mkdocs_yml:
        raise SystemExit(f"{MKDOCS_YML} lacks the marker lines {NAV_BEGIN.strip()!r} / {NAV_END.strip()!r}")
    head, rest = mkdocs_yml.split(NAV_BEGIN, 1)
    _, tail = rest.split(NAV_END, 1)
    entries = "".join(f"      - cli/{name}\n" for name in pages if name != "index.md")
    return head + NAV_BEGIN + entries + NAV_END + tail


def stale_pages(directory: Path = DOCS_CLI) -> list[str]:
    """Pages that are missing, differ from what the parsers give, or belong to no command;
    and mkdocs.yml, if its nav does not list exactly the command pages."""
    pages = render()
    stale = [name for name, text in pages.items()
             if not (directory / name).is_file() or (directory / name).read_text() != text]
    stale += [p.name for p in directory.glob("*.md") if p.name not in pages]
    yml = MKDOCS_YML.read_text()
    if with_nav(yml, pages) != yml:
        stale.append(MKDOCS_YML.name)
    return sorted(stale)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        stale = stale_pages()
        if stale:
            print(f"stale CLI reference pages in docs/cli: {', '.join(stale)}; run `python tools/cli_reference.py`",
                  file=sys.stderr)
            return 1
        return 0
    DOCS_CLI.mkdir(parents=True, exist_ok=True)
    for old in DOCS_CLI.glob("*.md"):
        old.unlink()
    pages = render()
    for name, text in pages.items():
        (DOCS_CLI / name).write_text(text)
    MKDOCS_YML.write_text(with_nav(MKDOCS_YML.read_text(), pages))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
