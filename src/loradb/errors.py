"""The errors loradb raises for bad input; every message says what was wrong and what to do.

The CLI turns any LoradbError into one line on stderr and exit code 2. Anything else
escaping the library is a bug in loradb, not a user error.
"""

import re
from collections.abc import Mapping


class LoradbError(Exception):
    """Bad input or a refused operation; the database is left unchanged."""


class AdapterError(LoradbError):
    """An adapter directory that is malformed or uses options loradb cannot merge exactly."""


class BaseModelMismatch(LoradbError):
    """An adapter or representation made for a different base model than the one in use."""


class DataError(LoradbError):
    """A dataset file that cannot be read as text examples."""


class StoreError(LoradbError):
    """A database that is missing, not a loradb database, or refers to unknown records."""


class Unavailable(StoreError):
    """A database server that cannot be reached right now (restarting, a network fault):
    the same request may succeed when it is back (HTTP 503)."""


class NotFound(StoreError):
    """A record (or token) that the database does not hold."""


class Conflict(LoradbError):
    """A write that clashes with what is stored, such as a record name already taken."""


class AccessDenied(LoradbError):
    """A request without a token, with an unknown one, or with too narrow a scope or ownership."""

    def __init__(self, message: str, *, authenticated: bool = True):
        super().__init__(message)
        self.authenticated = authenticated  # False: no valid token at all (HTTP 401), else 403


class OverLimit(LoradbError):
    """A request beyond a limit the operator set, such as a server's most adapters per compose."""


class TooLarge(OverLimit):
    """Work that would need more memory than its budget allows (HTTP 413)."""


class RemoteError(LoradbError):
    """A loradb server that cannot be reached or answered with an error."""


def parse_choice(kind, value: str, what: str):
    """`kind(value)` for an Enum of named choices, or one line listing the valid names."""
    try:
        return kind(value)
    except ValueError:
        raise LoradbError(f"unknown {what} {value!r}; choose one of {', '.join(c.value for c in kind)}") from None


def registered(registry: dict, name: str, what: str):
    """`registry[name]` of a registry of named choices (a dict), or one line listing the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise LoradbError(f"unknown {what} {name!r}; choose one of {', '.join(registry)}") from None


_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)`")


def in_terms(message: str, names: Mapping[str, str]) -> str:
    """A library message in a front end's terms: the library names its parameters in
    backticks (`max_k`); the CLI passes its flags (--max-k), the server its fields. A name
    the front end does not know keeps its plain name."""
    return _PARAMETER.sub(lambda m: names.get(m[1], m[1]), message)


class SourceUnavailable(LoradbError):
    """A pinned file could not be had from its registry (gone, unreachable, or not the pinned file)."""


class Abstained(LoradbError):
    """A compose declined because nothing in the library fits the target (its fit block says why);
    `force` composes anyway."""

    def __init__(self, message: str, fit: dict | None = None, result=None):
        super().__init__(message)
        self.fit = fit or {}
        self.result = result  # the SearchResult that abstained, where it is at hand (not over HTTP)
