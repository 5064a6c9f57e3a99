"""Reading user datasets as a stream of text examples.

Formats: .jsonl (field "text"), .csv (column "text"), .parquet (column "text", needs
pyarrow: `pip install loradb[parquet]`), .txt (one example a line, blank lines skipped);
another field is named with a DataFile (`--text-field`). Labeled and (input -> target)
datasets are tables of the first three formats.
A file of (input -> target) pairs, which has "input" and no "text", is read as its
inputs: what a model reads, and all that unlabeled target data would have.
Files are read lazily so a dataset never has to fit in memory.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loradb.errors import DataError

FORMATS = (".jsonl", ".csv", ".parquet", ".txt")


def _check_text(value, where: str, field: str = "text") -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
    return value


def _jsonl_rows(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """(where, row) for each non-blank line, each row a JSON object holding `fields`."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or any(k not in row for k in fields):
                names = " and ".join(repr(k) for k in fields)
                holding = f" with {names} field{'s' * (len(fields) > 1)}" if fields else ""
                raise DataError(f"{path}:{lineno}: each line must be a JSON object{holding}")
            yield f"{path}:{lineno}", row


DEFAULT_FIELD = "text"
PAIRS_FIELD = "input"  # read in place of the default field by files of (input -> target) pairs


@dataclass(frozen=True)
class DataFile:
    """A dataset file whose texts are in a named field or column (`--text-field`). It is a path
    like any other to the code it passes through; `iter_texts` reads its field."""

    path: Path
    field: str

    def __fspath__(self) -> str:
        return str(self.path)


def data_file(path: str | os.PathLike, field: str | None) -> str | os.PathLike:
    """`path` as given when no field is named, else a DataFile reading that field."""
    if field is None:
        return path
    if not field.strip():
        raise DataError("the text field's name is empty")
    if Path(path).suffix.lower() == ".txt":
        raise DataError(f"{path}: a .txt file has one text a line and no fields; leave out the text field")
    return DataFile(Path(path), field)


def _default_or_pairs(field: str, names) -> str:
    return PAIRS_FIELD if field == DEFAULT_FIELD and DEFAULT_FIELD not in names and PAIRS_FIELD in names else field


def _jsonl(path: Path, field: str) -> Iterator[str]:
    chosen = None
    for where, row in _jsonl_rows(path, ()):
        chosen = chosen or _default_or_pairs(field, row)  # the first row decides; every row must then hold it
        if chosen not in row:
            raise DataError(f"{where}: each line must be a JSON object with a {chosen!r} field")
        yield _check_text(row[chosen], where)


def _csv(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        field = _default_or_pairs(field, reader.fieldnames or [])
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise DataError(f"{path}: needs a header row with a {field!r} column (found {reader.fieldnames})")
        for lineno, row in enumerate(reader, 2):
            yield _check_text(row[field], f"{path}:{lineno}")


def _parquet_file(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow; install it with `pip install 'loradb[parquet]'`") from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({e})") from None


def _parquet(path: Path, field: str) -> Iterator[str]:
    pf = _parquet_file(path)
    field = _default_or_pairs(field, pf.schema_arrow.names)
    if field not in pf.schema_arrow.names:
        raise DataError(f"{path}: needs a {field!r} column (found {pf.schema_arrow.names})")
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for i, value in enumerate(batch.column(0).to_pylist()):
            yield _check_text(value, f"{path} row {i}")


def _txt(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


_READERS = {".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet, ".txt": _txt}


def iter_texts(path: str | os.PathLike, field: str = DEFAULT_FIELD) -> Iterator[str]:
    """Yield the text examples of a dataset file, in order.

    Args:
        path: a .jsonl, .csv, .parquet or .txt file.
        field: the field/column holding the text (not used for .txt); with the default,
            a file with "input" and no "text" column is read as its inputs.
    Raises:
        DataError: unknown format, missing file, missing field, non-string text, or no
            examples at all (raised when the stream ends empty).
    """
    if isinstance(path, DataFile):
        field = path.field
    p = Path(path)
    reader = _READERS.get(p.suffix.lower())
    if reader is None:
        raise DataError(f"{p}: unknown data format {p.suffix!r}; use one of {', '.join(FORMATS)}")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    count = 0
    try:
        for text in reader(p, field):
            count += 1
            yield text
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{p}: malformed CSV ({e})") from None
    if count == 0:
        raise DataError(f"{p}: holds no examples")


TABLE_FORMATS = (".jsonl", ".csv", ".parquet")  # what labeled and (input -> target) datasets are read from


def _table_rows(p: Path, fields: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """(where, row) for each example of a .jsonl, .csv or .parquet file; every row holds `fields`."""
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_rows(p, fields)
    elif suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [k for k in fields if k not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{p}: needs a header row with {_named(fields)} columns (found {reader.fieldnames})")
            for lineno, row in enumerate(reader, 2):
                yield f"{p}:{lineno}", row
    else:  # .parquet (_read_columns has refused anything but TABLE_FORMATS)
        pf = _parquet_file(p)
        if any(k not in pf.schema_arrow.names for k in fields):
            raise DataError(f"{p}: needs {_named(fields)} columns (found {pf.schema_arrow.names})")
        i = 0
        for batch in pf.iter_batches(columns=list(fields), batch_size=1024):
            for row in batch.to_pylist():
                yield f"{p} row {i}", row
                i += 1


def _named(fields: tuple[str, ...]) -> str:
    return " and ".join(repr(k) for k in fields)


def _read_columns(path: str | os.PathLike, fields: tuple[str, str], pair) -> tuple[list[str], list[str]]:
    """Two parallel lists from a table (.jsonl, .csv, .parquet) whose rows hold `fields`;
    pair(where, row) checks one row and returns its two values."""
    p = Path(path)
    if p.suffix.lower() not in TABLE_FORMATS:
        raise DataError(f"{p}: a labeled dataset is a .jsonl, .csv or .parquet file with {_named(fields)} fields")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if len(set(fields)) < 2:
        raise DataError(f"the two fields must differ; both are {fields[0]!r}")
    first, second = [], []
    try:
        for where, row in _table_rows(p, fields):
            a, b = pair(where, row)
            first.append(a)
            second.append(b)
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise DataError(f"{p}: malformed CSV ({e})") from None
    if not first:
        raise DataError(f"{p}: holds no examples")
    return first, second


def read_labeled(path: str | os.PathLike, text_field: str = "text", label_field: str = "label") -> tuple[list[str], list[str]]:
    """A labeled dataset (.jsonl, .csv or .parquet; fields "text" and "label" unless named) as
    parallel lists.

    Labels are kept as strings (1 and "1" are the same label) so that label sets can be
    compared across files and used in prompts.
    Raises:
        DataError: missing file or field, non-string text, a label that is not a
            string/number/bool, or no examples.
    """
    def pair(where: str, row: dict) -> tuple[str, str]:
        label = row[label_field]
        if isinstance(label, bool) or not isinstance(label, (str, int, float)) or str(label).strip() == "":
            raise DataError(f"{where}: {label_field!r} must be a string or a number, got {label!r}")
        return _check_text(row[text_field], where, text_field), str(label)

    return _read_columns(path, (text_field, label_field), pair)


def read_pairs(path: str | os.PathLike, input_field: str = "input", target_field: str = "target") -> tuple[list[str], list[str]]:
    """An (input -> target) dataset (.jsonl, .csv or .parquet; fields "input" and "target" unless
    named, both strings) as parallel lists.

    Raises:
        DataError: missing file or field, a value that is not a non-empty string, or no examples.
    """
    def pair(where: str, row: dict) -> tuple[str, str]:
        for field in (input_field, target_field):
            if not isinstance(row[field], str) or not row[field].strip():
                raise DataError(f"{where}: {field!r} must be a non-empty string, got {row[field]!r}")
        return row[input_field], row[target_field]

    return _read_columns(path, (input_field, target_field), pair)


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
