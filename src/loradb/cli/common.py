"""What every `loradb` command shares: the command registry, flag groups used by several
commands, opening a database or server, and printing.

A command is a function decorated with `@command(...)`, its flags in a function right
above it; `cli/main.py` builds the parser from the registry in the order the area
modules are imported.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loradb.db.interface import Database
from loradb.errors import LoradbError

if TYPE_CHECKING:
    from loradb.db.database import LoraDB

EXIT_BAD_INPUT = 2
DEFAULT_DP_DELTA = 1e-5
BASE_NAMES = "a packaged model: minilm | smollm2"


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise LoradbError(f"{self.prog}: {message} (see `{self.prog} --help`)")


@dataclass(frozen=True)
class Command:
    name: str
    fn: Callable[[argparse.Namespace], int]
    help: str
    flags: Callable[[argparse.ArgumentParser], None] | None
    db: bool  # takes a DB argument first
    url: bool  # ... which may also be a server URL
    json_flag: bool  # has --json
    group: str | None  # a subcommand of this group (`loradb key list`), or top level


COMMANDS: list[Command] = []
GROUPS = {"key": "retrieval keys: list them, or choose a space's default on its records",
          "token": "access tokens for `loradb serve` (create, list, revoke)",
          "index": "the approximate search index of large spaces: its state, or build it now"}


def command(name: str, help: str, *, flags=None, db: bool = True, url: bool = True, json_flag: bool = False,
            group: str | None = None):
    """Register the decorated function as `loradb [group] name`, with `flags(parser)` adding its options."""
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown command group {group!r}")

    def register(fn):
        COMMANDS.append(Command(name, fn, help, flags, db, url, json_flag, group))
        return fn
    return register


def add_command(sub, c: Command) -> argparse.ArgumentParser:
    """The subparser of one registered command."""
    p = sub.add_parser(c.name, help=c.help)
    if c.db:
        p.add_argument("db", help="database directory or postgresql:// URL" + (", or a loradb server URL (http://host:port)" if c.url else ""))
    if c.json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document")
    if c.flags is not None:
        c.flags(p)
    p.set_defaults(fn=c.fn)
    return p


# ---- opening and printing ----------------------------------------------------------------

def print_json(doc) -> None:
    from loradb.io.files import to_json

    print(to_json(doc))


def open_db(target) -> Database:
    """A database directory or postgresql:// URL, or a server URL (http://host:port) used
    through the client: api.open_database, which `loradb.adapt` opens its `db` with too."""
    from loradb.api import open_database

    return open_database(target)


def local_only(target, command: str) -> None:
    from loradb.service.client import is_url

    if is_url(target):
        raise LoradbError(f"`loradb {command}` works on a database directory, on the machine that holds it, not on a URL")


def open_local(target, command: str) -> LoraDB:
    """A database directory (or postgresql:// URL) for a command that runs where the database
    is: a server URL is refused as by local_only."""
    local_only(target, command)
    from loradb.db.database import LoraDB

    return LoraDB(target)


def print_privacy(privacy) -> None:
    if privacy:
        from loradb.retrieval.privacy import statement

        print("z released " + statement(privacy))


# ---- flags several commands share ------------------------------------------------------

def base_dir(value: str) -> str:
    """--base: a directory, or the name of a packaged model (made ready on first use)."""
    from loradb.models.packaged import resolve_base

    return resolve_base(value)


def key_names() -> list[str]:
    from loradb.retrieval.keys import key_names as names

    return names()


def vector_key_names() -> list[str]:
    """The keys that compare vectors (every key but the data-free ones)."""
    from loradb.retrieval.keys import KEYS

    return list(KEYS)


def add_task_flags(p, what: str) -> None:
    g = p.add_argument_group(what)
    g.add_argument("--prompts", metavar="LABELS_JSON", help="labels.json mapping each label to its prompt")
    g.add_argument("--instruction", help="the task's instruction (generation)")


def task_of(args):
    """--prompts labels.json or --instruction TEXT: the task whose embedding the task keys compare."""
    from loradb.retrieval.represent import task_spec

    prompts = getattr(args, "prompts", None)
    if prompts is None:
        return task_spec(instruction=getattr(args, "instruction", None))
    from loradb.models.prompts import read_prompts

    return task_spec(prompts=read_prompts(Path(prompts)), instruction=getattr(args, "instruction", None))


def add_dp_flags(p) -> None:
    g = p.add_argument_group("differential privacy of z computed from --data (see docs/privacy.md)")
    g.add_argument("--dp-epsilon", type=float, help="release z with (epsilon, delta)-differential privacy per example")
    g.add_argument("--dp-delta", type=float, help=f"delta of the guarantee (default {DEFAULT_DP_DELTA:g}; must be below 1/n)")
    g.add_argument("--dp-clip", type=float, help="clip each example's feature vector to this L2 norm (required with --dp-epsilon)")


def dp_config(args):
    """--dp-epsilon E [--dp-delta D] --dp-clip C as a privacy.DPConfig (None without --dp-epsilon)."""
    from loradb.retrieval.privacy import DPConfig

    if args.dp_epsilon is None:
        if args.dp_delta is not None or args.dp_clip is not None:
            raise LoradbError("--dp-delta and --dp-clip go with --dp-epsilon")
        return None
    if args.dp_clip is None:
        raise LoradbError("--dp-epsilon needs --dp-clip C, the bound on each example's feature norm (fix it without "
                          "looking at the private data; docs/privacy.md gives values for the packaged model)")
    return DPConfig(args.dp_epsilon, args.dp_delta if args.dp_delta is not None else DEFAULT_DP_DELTA, args.dp_clip).validate()


def add_recipe_flags(p, *, defaults: bool) -> None:
    p.add_argument("--layer", type=int, default=-1 if defaults else None, help="hidden-state index (0 = embeddings, -1 = last)")
    p.add_argument("--pooling", default="mean" if defaults else None, choices=("mean", "cls", "last"), help="token pooling (default mean)")
    p.add_argument("--max-length", type=int, default=256 if defaults else None, help="tokens per example (default 256)")


def add_text_field_flag(p) -> None:
    p.add_argument("--text-field", metavar="NAME", help="the field/column of .jsonl/.csv/.parquet --data that holds the "
                   "texts (default text, or input in a file of input/target pairs)")


def data_of(args):
    """--data as the library takes it: the path, or a DataFile that reads --text-field."""
    from loradb.io.data import data_file

    if args.data is None:
        if args.text_field is not None:
            raise LoradbError("--text-field names a field of --data, which was not given")
        return None
    return data_file(args.data, args.text_field)


def add_training_flags(p) -> None:
    """Training flags; unset ones take the task's defaults (classification / generation)."""
    from loradb.models.train import GENERATION_TRAIN, TrainConfig

    c, g = TrainConfig(), GENERATION_TRAIN

    def both(name, show=lambda v: v):
        a, b = getattr(c, name), getattr(g, name)
        return f"default {show(a)}" if a == b else f"default {show(a)}; generation {show(b)}"

    p.add_argument("--r", type=int, help=f"LoRA rank ({both('r')})")
    p.add_argument("--alpha", type=float, help=f"LoRA alpha ({both('alpha', lambda v: f'{v:g}')})")
    p.add_argument("--targets", help=f"target modules ({both('targets', ','.join)})")
    p.add_argument("--epochs", type=int, help=both("epochs"))
    p.add_argument("--lr", type=float, help=both("lr", lambda v: f"{v:g}"))
    p.add_argument("--batch-size", type=int, help=both("batch_size"))
    p.add_argument("--max-length", type=int, help=f"tokens per example, for generation of the input ({both('max_length')})")
    p.add_argument("--max-examples", type=int, help="train on a seeded sample of at most this many examples")
    p.add_argument("--seed", type=int, help=both("seed"))
    p.add_argument("--validation", type=float, help="early stopping: hold out this share of the training examples, score "
                   "the adapter on it after every epoch, keep the best epoch (never worse than the base) and stop after "
                   "--patience epochs without improvement; --epochs is then the budget (default 0: off)")
    p.add_argument("--patience", type=int, help=f"epochs without improvement before early stopping ({both('patience')})")


def train_config(args, task: str = "classification"):
    """The task's default training settings with the flags the user gave on top."""
    from dataclasses import replace

    from loradb.models.train import GENERATION_TRAIN, TrainConfig

    given = {k: getattr(args, k) for k in ("r", "alpha", "epochs", "lr", "batch_size", "max_length", "max_examples", "seed",
                                           "validation", "patience") if getattr(args, k, None) is not None}
    if args.targets is not None:
        given["targets"] = tuple(t for t in args.targets.split(",") if t)
    return replace(GENERATION_TRAIN if task == "generation" else TrainConfig(), **given).validate()


def parse_meta(pairs: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE strings -> dict, refusing malformed pairs."""
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LoradbError(f"--meta expects KEY=VALUE, got {pair!r}")
        meta[key] = value
    return meta


def parse_weights(pairs: Iterable[str]) -> dict[str, float]:
    """ID=W strings -> dict, refusing malformed pairs and non-finite numbers."""
    weights = {}
    for pair in pairs:
        ref, sep, value = pair.rpartition("=")
        try:
            w = float(value)
        except ValueError:
            w = None
        if not sep or not ref or w is None or not math.isfinite(w):
            raise LoradbError(f"--weights expects ID=W with a finite number W, got {pair!r}")
        if ref in weights:
            raise LoradbError(f"{ref} is given twice in --weights")
        weights[ref] = w
    return weights
