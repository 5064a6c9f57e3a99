"""Files written whole or not at all, file hashes, strict JSON, and where loradb caches.

Every layer writes through these helpers, so an interrupted command never leaves a
half-written output, cache entry or document that later looks complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import contextlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from loradb.errors import LoradbError


def cache_dir() -> Path:
    """Where loradb keeps machine-local caches (LORADB_CACHE_DIR overrides)."""
    return Path(os.environ.get("LORADB_CACHE_DIR") or Path.home() / ".cache" / "loradb")


def _umask_by_setting() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_by_setting()  # done once, before any thread of loradb writes a file


def current_umask() -> int:
    """The process's umask: Linux says it in /proc; elsewhere it can only be read by setting it,
    which is not safe beside other threads, so the value at import stands in."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def with_umask_mode(path: Path | str, *, directory: bool = False, umask: int | None = None) -> None:
    """Give a file or folder made by `tempfile` (0600 / 0700, private while it is written) the mode
    an ordinary `open`/`mkdir` would have given it: 0644 / 0755 under umask 022. A shared database
    folder or an output handed to a team is then readable as the user's umask intends."""
    os.chmod(path, (0o777 if directory else 0o666) & ~(current_umask() if umask is None else umask))


def with_umask_modes(folder: Path) -> None:
    """`with_umask_mode` for a folder and everything in it: what tempfile made, and what writers
    such as safetensors' `save_file` create private (0600) whatever the umask."""
    umask = current_umask()  # read once for the whole tree
    with_umask_mode(folder, directory=True, umask=umask)
    for path in Path(folder).rglob("*"):
        if not path.is_symlink():
            with_umask_mode(path, directory=path.is_dir(), umask=umask)


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (resolved path, size, mtime_ns)."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = cache_dir() / "file-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache[key] = digest
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return digest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_output_dir(out: Path):
    """Yield a temp directory that becomes `out` only if the body finishes."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LoradbError(f"{out} already exists and is not empty; remove it or choose another `out`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        with_umask_modes(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def replaced_dir(out: Path):
    """Yield a temp directory that replaces `out` (any earlier one) only if the body finishes:
    how caches are built, so a crash never leaves half an entry that later looks complete.

    Processes building the same entry at once (two jobs on one cache) never fail each other:
    an entry another process put in place while this one built stands (a cache entry is made
    from what names it: the same), so its readers never see it go; an entry that was there
    before (stale) is renamed aside in one step and replaced."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    before = _inode(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    aside = tmp.with_name(tmp.name + ".old")
    try:
        yield tmp
        with_umask_modes(tmp)
        now = _inode(out)
        if now is not None and now != before:  # built meanwhile by another process: it stands
            return
        if now is not None:  # the stale entry this build replaces
            with contextlib.suppress(FileNotFoundError):  # (or another process moved it already)
                os.replace(out, aside)
        try:
            os.replace(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # else another process's build took the place first
                raise
    finally:
        for leftover in (tmp, aside):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


@contextmanager
def atomic_file(path: Path):
    """Yield a binary file that becomes `path` whole, with the umask's mode, only if the body
    finishes (a crash leaves the old file or none, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        with_umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a file whole or not at all (a crash leaves the old file or none, never half)."""
    path = Path(path)
    if path.is_dir():
        raise LoradbError(f"{path} is a directory; `out` takes a file name")
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path


def finite_or_none(value):
    """JSON has no NaN or Infinity: non-finite numbers (e.g. the distance of a given weight)
    become null, so strict parsers read every document loradb writes or prints."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def to_json(doc, *, indent: int | None = 2) -> str:
    """`doc` as strict JSON (numpy values made plain, non-finite numbers as null)."""
    plain = json.loads(json.dumps(doc, default=json_ready))  # numpy -> Python first, so NaN inside arrays is caught too
    return json.dumps(finite_or_none(plain), indent=indent, allow_nan=False)


def json_ready(value):
    """numpy scalars/arrays -> plain Python for json.dumps."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
