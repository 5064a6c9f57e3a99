"""The errors loradb raises for bad input; every message says what was wrong and what to do.

The CLI turns any LoradbError into one line on stderr and exit code 2. Anything else
escaping the library is a bug in loradb, not a user error.
"""


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
