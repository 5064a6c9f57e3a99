"""One exact file from the places pip is configured to look, fetched without pip.

`pip download` of a source distribution prepares its metadata, which installs unpinned build
tools and runs the package's own setup code: a pinned file must be fetched as bytes and
nothing of it run. So the file is looked up by its exact name where pip would look: the
find-links folders and pages, then the index and the extra indexes (simple pages, HTML or
PEP 691 JSON, over http(s) or file://), read from pip's own configuration (`pip config
list`: PIP_* variables and pip.conf files). The caller verifies the sha256.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

TIMEOUT = 60  # seconds per request
# the sections of `pip config list` that apply to a download, highest precedence first: the
# PIP_* variables, then the [download] and [global] sections (pip has merged its files already)
SCOPES = (":env:", "download", "global")


@dataclass(frozen=True)
class Sources:
    find_links: tuple[str, ...]  # folders or pages, searched first
    indexes: tuple[str, ...]  # simple index URLs: the index, then the extra ones


@dataclass(frozen=True)
class Located:
    url: str  # where the file is (http(s):// or file://)
    sha256: str | None  # the digest the listing gives, if any


def pypi_index() -> str:
    """The index pip itself uses: PIP_INDEX_URL, else pip's default."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        from pip._internal.models.index import PyPI  # pip's own default, so no host is written here

        url = PyPI.simple_url
    return url.rstrip("/")


def pip_sources() -> Sources:
    """Where pip would look for a file, from its configuration."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, tuple[int, list[str]]] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if not sep or scope not in SCOPES:
            continue
        rank = SCOPES.index(scope)
        if name not in settings or rank < settings[name][0]:
            settings[name] = (rank, value.strip().strip("'\"").split())
    index = (settings.get("index-url") or (0, [pypi_index()]))[1][:1]
    no_index = bool(settings.get("no-index")) and settings["no-index"][1][:1] in (["1"], ["true"], ["yes"], ["on"])
    return Sources(find_links=tuple(settings.get("find-links", (0, []))[1]),
                   indexes=() if no_index else (*index, *settings.get("extra-index-url", (0, []))[1]))


class Unreachable(OSError):
    """No place pip looks lists the file, and some could not be read at all (the network or an
    index is down): the file may well still be offered. Its message names them."""


def locate(project: str, filename: str, sources: Sources) -> Located | None:
    """The first listing of `filename` in `sources`, in pip's order (None: listed nowhere).

    Raises:
        Unreachable: listed nowhere that could be read, and some places could not be.
    """
    unread: list[str] = []
    for place in sources.find_links:
        folder = _folder(place)
        if folder is not None:  # a local folder of files, as pip reads one
            if (folder / filename).is_file():
                return Located((folder / filename).resolve().as_uri(), None)
            continue
        found = _find(_page(place, unread), place, filename)
        if found:
            return found
    name = re.sub(r"[-_.]+", "-", project).lower()
    for index in sources.indexes:
        page_url = f"{index.rstrip('/')}/{name}/"
        found = _find(_page(page_url, unread), page_url, filename)
        if found:
            return found
    if unread:
        raise Unreachable(f"could not read {'; '.join(unread)}")
    return None


def download(located: Located, dest: Path) -> None:
    """The located file's bytes into `dest` (nothing is unpacked, nothing run); OSError when
    they cannot be had (a refused, cut or malformed transfer included)."""
    if located.url.startswith("file:"):
        shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(located.url).path), dest)
        return
    try:
        with urllib.request.urlopen(located.url, timeout=TIMEOUT) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (http.client.HTTPException, ValueError) as e:  # a cut transfer, a malformed URL: not OSErrors
        raise OSError(f"{type(e).__name__}: {e}") from None


def _folder(place: str) -> Path | None:
    """A find-links entry that is a local folder (a path or a file:// URL of one)."""
    if place.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(place).path))
    elif "://" in place:
        return None
    else:
        path = Path(place)
    return path if path.is_dir() else None


def _page(url: str, unread: list[str]) -> str | dict | None:
    """A listing page: its JSON (PEP 691) or HTML; None when it does not exist (404: the project
    is not there) or cannot be read (then `url` and why go to `unread`)."""
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        page = path / "index.html" if path.is_dir() else path
        return page.read_text(errors="replace") if page.is_file() else None
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body = response.read().decode("utf-8", errors="replace")
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        if e.code not in (404, 410):  # the index answered, but not with the page: it may list the file when it is back
            unread.append(f"{url} (HTTP {e.code})")
        return None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        unread.append(f"{url} ({getattr(e, 'reason', None) or e})")
        return None
    if "json" in kind:
        try:
            return json.loads(body)
        except ValueError:
            return None
    return body


def _find(page: str | dict | None, page_url: str, filename: str) -> Located | None:
    if page is None:
        return None
    if isinstance(page, dict):  # PEP 691
        for f in page.get("files", []):
            if isinstance(f, dict) and f.get("filename") == filename and isinstance(f.get("url"), str):
                digest = (f.get("hashes") or {}).get("sha256")
                return Located(urllib.parse.urljoin(page_url, f["url"]), digest if isinstance(digest, str) else None)
        return None
    links = _Links()
    links.feed(page)
    for href in links.hrefs:
        url, _, fragment = href.partition("#")
        if urllib.parse.unquote(url.rsplit("/", 1)[-1]) == filename:
            digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
            return Located(urllib.parse.urljoin(page_url, url), digest)
    return None


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]
