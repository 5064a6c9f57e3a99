"""The `loradb` command: the parser built from every registered command, and the entry point.

Bad input prints one line on stderr and exits 2; `--json` prints one JSON document.
Commands live beside their flags in one module per area (records, retrieve, service,
models, benchmarks); a new command is one decorated function in the area it belongs to.
"""

from __future__ import annotations

import argparse
import os
import sys

from loradb import __version__

# importing an area registers its commands; the order here is the order of `loradb --help`
from loradb.cli import records, retrieve, service, models, benchmarks  # noqa: F401, I001
from loradb.cli.common import COMMANDS, EXIT_BAD_INPUT, GROUPS, Parser, add_command
from loradb.errors import LoradbError, in_terms

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a reader that went away (`loradb list | head`)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loradb", description="A database of LoRA adapters: retrieve and merge adapters for new, unlabeled data.")
    parser.add_argument("--version", action="version", version=f"loradb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    group_subs: dict = {}
    for c in COMMANDS:
        if c.group is None:
            add_command(sub, c)
            continue
        if c.group not in group_subs:
            group = sub.add_parser(c.group, help=GROUPS[c.group])
            group_subs[c.group] = group.add_subparsers(dest=f"{c.group}_command", required=True, parser_class=Parser)
        add_command(group_subs[c.group], c)
    return parser


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each parameter name (an option's dest) -> its flag, over every command: how the
    library's `parameter` names are said on the command line (--max-k, -k)."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, flag in flag_names(sub).items():
                    flags.setdefault(dest, flag)
        elif action.option_strings and action.dest != "help":
            flags.setdefault(action.dest, max(action.option_strings, key=len))
    return flags


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at the interpreter's exit
        return code
    except LoradbError as e:
        print(f"loradb: error: {in_terms(str(e), flag_names(parser))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader closed the pipe: nothing is wrong and nothing more can be said. Point stdout at
        # /dev/null so the interpreter's final flush does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:  # an unwritable --out, a full disk: the user's to fix, not a loradb bug
        print(f"loradb: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("loradb: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
