"""Is a pinned file still published? Asked of its registry without downloading the file.

PyPI: the index's JSON page of the project (PEP 691) lists every file with its sha256.
npm: `npm view NAME@VERSION dist` gives the tarball's sha512 integrity. A file is "ok" when
the registry lists that exact file with the pinned digest, "gone" when it lists no such
file (or no such package), and "hash changed" when the file is there with another digest.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

from loradb.io.pipindex import pypi_index
from loradb.io.pypi import PinnedFile

OK, GONE, CHANGED, UNREACHABLE = "ok", "gone", "hash changed", "unreachable"
TIMEOUT = 60


@dataclass(frozen=True)
class Offer:
    pinned: PinnedFile
    status: str  # OK | GONE | CHANGED | UNREACHABLE
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def offered(pinned: PinnedFile) -> Offer:
    """What the pinned file's registry says of it today."""
    return _npm(pinned) if pinned.registry == "npm" else _pypi(pinned)


def _pypi(pinned: PinnedFile) -> Offer:
    name = re.sub(r"[-_.]+", "-", pinned.package).lower()
    request = urllib.request.Request(f"{pypi_index()}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            page = json.load(response)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return Offer(pinned, GONE, f"the index has no project {pinned.package}")
        return Offer(pinned, UNREACHABLE, f"the index answered HTTP {e.code}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        return Offer(pinned, UNREACHABLE, f"the index could not be read ({e})")
    files = {f.get("filename"): f for f in page.get("files", [])}
    listed = files.get(pinned.filename)
    if listed is None:
        versions = page.get("versions") or sorted({_version_of(f) for f in files})
        return Offer(pinned, GONE, f"not listed; the index offers {pinned.package} {', '.join(versions[-5:]) or 'nothing'}")
    digest = (listed.get("hashes") or {}).get("sha256")
    if digest != pinned.sha256:
        return Offer(pinned, CHANGED, f"listed with sha256 {str(digest)[:16]}…, pinned {pinned.sha256[:16]}…")
    if listed.get("yanked"):
        return Offer(pinned, OK, "listed, but yanked (pip still downloads an exact pin)")
    return Offer(pinned, OK)


def _version_of(filename: str) -> str:
    parts = re.split(r"-(?=\d)", filename, maxsplit=1)
    return re.sub(r"(\.tar\.gz|\.zip|-py.*\.whl|-cp.*\.whl)$", "", parts[1]) if len(parts) == 2 else "?"


def _npm(pinned: PinnedFile) -> Offer:
    from loradb.errors import SourceUnavailable
    from loradb.io.npm import npm_command, npm_error

    try:
        cmd = [npm_command(), "view", pinned.requirement, "dist", "--json"]
    except SourceUnavailable as e:
        return Offer(pinned, UNREACHABLE, str(e))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return Offer(pinned, UNREACHABLE, f"npm view did not answer in {TIMEOUT} s")
    if proc.returncode != 0:
        reason = npm_error(proc)
        return Offer(pinned, GONE if "E404" in reason else UNREACHABLE, reason)
    if not proc.stdout.strip():  # npm view of a version that does not exist prints nothing and exits 0
        return Offer(pinned, GONE, f"the registry has no version {pinned.version} of {pinned.package}")
    try:
        dist = json.loads(proc.stdout)
    except ValueError:  # a proxy's page, a warning on stdout: not an answer about the package
        return Offer(pinned, UNREACHABLE, f"npm view answered what is not JSON: {proc.stdout.strip()[:120]!r}")
    if isinstance(dist, list):  # a range matched several versions; an exact pin never does
        dist = dist[-1] if dist else {}
    integrity = dist.get("integrity") if isinstance(dist, dict) else None
    if pinned.integrity is None:
        return Offer(pinned, OK, "offered (no npm digest pinned to compare)")
    if integrity != pinned.integrity:
        return Offer(pinned, CHANGED, f"offered with integrity {str(integrity)[:20]}…, pinned {pinned.integrity[:20]}…")
    return Offer(pinned, OK)
