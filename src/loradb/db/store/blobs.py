"""Content-addressed blobs on local disk: blobs/<sha[:2]>/<sha256>.

A blob is copied to a temp file while hashed, fsynced, then renamed into place and the
directory fsynced, so a crash leaves either nothing or a complete blob (at worst an
orphan or a stray temp file, which `loradb check` reports and `loradb gc` removes).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from loradb.errors import StoreError
from loradb.io.files import sha256_file, with_umask_mode

_SHA = re.compile(r"^[0-9a-f]{64}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """Blobs under `root/blobs`, temp files under `root/tmp`."""

    def __init__(self, root: Path):
        self.dir = root / "blobs"
        self.tmp = root / "tmp"

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise StoreError(f"{sha256!r} is not a sha256 digest")
        return self.dir / sha256[:2] / sha256

    def put(self, src: Path) -> str:
        """Copy a file in; returns its sha256. Idempotent for identical content."""
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            with_umask_mode(tmp)
            final = self.path(digest)
            for attempt in range(3):  # a concurrent delete may remove the emptied folder in between
                final.parent.mkdir(exist_ok=True)
                try:
                    os.replace(tmp, final)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
            _fsync_dir(final.parent)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    def problem(self, sha256: str) -> str | None:
        """None when the blob is there and matches its sha256, else what is wrong."""
        p = self.path(sha256)
        if not p.is_file():
            return f"blob {sha256[:12]} is missing from {self.dir}"
        if sha256_file(p) != sha256:
            return f"blob {sha256[:12]} in {self.dir} does not match its sha256"
        return None

    def fetch(self, sha256: str) -> Path:
        """A local file holding the blob, verified against its sha256."""
        if self.problem(sha256) is not None:
            raise StoreError(f"blob {sha256[:12]} is missing or corrupt; run `loradb check`")
        return self.path(sha256)

    def describe(self) -> str:
        return str(self.dir)

    def delete(self, sha256: str) -> None:
        path = self.path(sha256)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the two-letter folder goes once empty; kept while it holds a blob
            path.parent.rmdir()

    def list(self) -> Iterator[str]:
        for p in sorted(self.dir.glob("??/*")):
            if p.is_file():
                yield p.name

    def stray_temp_files(self) -> builtins.list[Path]:
        return sorted(p for p in self.tmp.iterdir() if p.is_file()) if self.tmp.is_dir() else []
