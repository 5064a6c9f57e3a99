"""The local read cache of a remote blob store: verified copies, bounded in size.

Each cached blob is a file named by its sha256. A read hashes the file again (a damaged
copy is dropped and fetched anew) and marks it used by touching its mtime; after a new copy
arrives, the least recently used files are removed until the cache fits its bound
(`LORADB_BLOB_CACHE_MB`, default DEFAULT_MB). The copy just written is never evicted by its
own call, so a blob larger than the bound is still served. A reader is handed a private hard
link to the copy (`.in-use/`), not the copy's name: another process evicting the copy before
the reader opens it removes only the name, and the reader's path stays whole. Several
processes may share the folder: files appear by atomic rename, and a file another process
evicted is simply fetched again.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from loradb.errors import StoreError
from loradb.io.files import sha256_file, with_umask_mode

DEFAULT_MB = 2048.0
IN_USE_DIR = ".in-use"  # private hard links handed to readers (dot-named: not cache entries)
IN_USE_SECONDS = 120  # a reader opens its link at once; links this old are removed
ENV = "LORADB_BLOB_CACHE_MB"


def bound_bytes() -> int:
    """The cache's size bound in bytes, from LORADB_BLOB_CACHE_MB (megabytes, may be fractional)."""
    text = os.environ.get(ENV)
    if text is None or text == "":
        return int(DEFAULT_MB * 2**20)
    try:
        mb = float(text)
    except ValueError:
        raise StoreError(f"{ENV}={text!r} is not a number of megabytes") from None
    if not mb >= 0 or mb == float("inf"):
        raise StoreError(f"{ENV}={text!r} must be a finite number of megabytes, 0 or more")
    return int(mb * 2**20)


class BlobCache:
    def __init__(self, folder: Path, bound: int | None = None):
        self.folder = folder
        self.bound = bound_bytes() if bound is None else bound
        self._swept = 0.0  # when this process last cleared old reader links

    def get(self, sha256: str) -> Path | None:
        """The cached copy, verified and marked as used; None when absent or damaged."""
        path = self.folder / sha256
        try:
            if sha256_file(path) != sha256:
                path.unlink(missing_ok=True)
                return None
            os.utime(path)
            return self._hand_out(path)
        except FileNotFoundError:  # never cached, or evicted by another process meanwhile
            return None

    def fill(self, sha256: str, download: Callable[[Path], None], where: str) -> Path:
        """Download a blob into the cache with `download(tmp_path)`, verify it, evict to fit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.folder, prefix=".fetch-", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            download(tmp)
            if sha256_file(tmp) != sha256:
                raise StoreError(f"blob {sha256[:12]} in {where} does not match its sha256; run `loradb check`")
            with_umask_mode(tmp)
            path = self.folder / sha256
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        link = self._hand_out(path)
        self.evict(keep=path)
        return link

    def discard(self, sha256: str) -> None:
        (self.folder / sha256).unlink(missing_ok=True)

    def size(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            if path.name.startswith("."):
                continue  # another process's download in flight
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        return entries

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used copies until the cache fits its bound; returns them."""
        entries = sorted(self._entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in entries:
            if total <= self.bound:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        return removed

    def _hand_out(self, path: Path) -> Path:
        """A private hard link to a cached copy, for one reader: evicting the copy (by this
        process or another) removes only its name in the cache, so the reader's path stays
        whole. A link's name starts with when it was made (a link shares the copy's mtime, so
        that cannot date it); links older than IN_USE_SECONDS, whose readers are long done,
        are removed. Where no link can be made (a filesystem without them, or a copy at its
        link limit) the copy's own path is handed out, as before links."""
        in_use = self.folder / IN_USE_DIR
        in_use.mkdir(exist_ok=True)
        now = time.time()
        if now - self._swept > IN_USE_SECONDS / 4:  # a sweep now and then, not a listing per read
            self._swept = now
            for old in in_use.iterdir():
                made = old.name.split("-", 1)[0]
                if not made.isdigit() or int(made) < now - IN_USE_SECONDS:
                    old.unlink(missing_ok=True)
        link = in_use / f"{int(now)}-{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}"
        try:
            os.link(path, link)
        except FileNotFoundError:
            raise
        except OSError:
            return path
        return link
