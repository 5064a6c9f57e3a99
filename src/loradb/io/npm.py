"""npm tarballs fetched with npm itself (`npm pack`): no install, no package script runs.

npm checks the registry's sha512 of the tarball as it downloads; loradb then compares that
digest with the pinned one, and PinnedFile.fetch verifies the pinned sha256 before the file
enters the cache or anything reads it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from loradb.errors import SourceUnavailable


def npm_command() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("npm is not installed; it is needed to fetch npm packages (e.g. `apt-get install npm`)")
    return npm


def npm_pack(requirement: str, filename: str, integrity: str | None, into: Path) -> Path:
    """The tarball of `requirement` (NAME@VERSION) downloaded into `into` as `filename`, its
    npm digest compared with `integrity`; not yet sha256-verified (the caller does that)."""
    cmd = [npm_command(), "pack", requirement, "--ignore-scripts", "--json", "--silent",
           "--pack-destination", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=into)
    got = into / filename
    if proc.returncode != 0 or not got.is_file():
        raise SourceUnavailable(f"could not download {requirement} with npm ({npm_error(proc)}); "
                                "it comes from the npm registry")
    try:
        got_integrity = json.loads(proc.stdout)[0].get("integrity")
    except (ValueError, IndexError, AttributeError):
        got_integrity = None
    if integrity and got_integrity and got_integrity != integrity:
        raise SourceUnavailable(f"the download of {requirement} has npm integrity {got_integrity[:20]}…, "
                                f"not the pinned {integrity[:20]}…: refused, nothing cached")
    return got


def npm_error(proc: subprocess.CompletedProcess) -> str:
    """npm's own one-line reason for a failed --json command."""
    try:
        error = json.loads(proc.stdout)["error"]
        return f"{error.get('code', 'error')}: {error.get('summary', '').strip()}"
    except (ValueError, KeyError, TypeError):
        return (proc.stderr.strip().splitlines() or ["no output"])[-1].strip()
