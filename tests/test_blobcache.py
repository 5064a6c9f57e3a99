"""The read cache of remote blobs: verified, bounded by LORADB_BLOB_CACHE_MB, least recently
used evicted first."""

import hashlib
import os
import time

import pytest

from loradb.db.store.blobcache import BlobCache, bound_bytes
from loradb.errors import StoreError

KB = 1024


def blob(i: int, size: int = 30 * KB) -> tuple[str, bytes]:
    data = bytes([i % 256]) * size
    return hashlib.sha256(data).hexdigest(), data


def fill(cache: BlobCache, i: int, size: int = 30 * KB):
    sha, data = blob(i, size)
    return sha, cache.fill(sha, lambda tmp: tmp.write_bytes(data), "test store")


def age(cache: BlobCache, sha: str, seconds_ago: float) -> None:
    """Mark a copy as last used some time ago (mtime is the cache's recency)."""
    t = time.time() - seconds_ago
    os.utime(cache.folder / sha, (t, t))


def entries(cache: BlobCache) -> set[str]:
    """The cache's copies (not the private links handed to readers, in its dot-folder)."""
    return {p.name for p in cache.folder.iterdir() if not p.name.startswith(".")}


def test_the_bound_holds_and_the_least_recently_used_go_first(tmp_path):
    cache = BlobCache(tmp_path / "blobs", bound=100 * KB)  # room for three 30 KB blobs
    shas = []
    for i in range(3):
        shas.append(fill(cache, i)[0])
        age(cache, shas[-1], 100 - i)  # 0 is the oldest, 2 the newest
    assert cache.get(shas[0]) is not None  # reading 0 makes it the most recently used
    new, _ = fill(cache, 3)
    assert cache.size() <= 100 * KB
    kept = entries(cache)
    assert kept == {shas[0], shas[2], new}  # 1 was the least recently used
    for i in range(4, 12):
        fill(cache, i)
        assert cache.size() <= 100 * KB


def test_a_blob_larger_than_the_bound_is_still_served(tmp_path):
    cache = BlobCache(tmp_path / "blobs", bound=10 * KB)
    fill(cache, 1)
    sha, path = fill(cache, 2, size=50 * KB)
    assert path.read_bytes() == blob(2, 50 * KB)[1]
    assert entries(cache) == {sha}  # everything else made room


def test_a_copy_handed_out_stays_whole_when_another_process_evicts_it(tmp_path, monkeypatch):
    """Two processes share the folder: one is handed a copy, the other fills the cache past its
    bound and evicts that copy before the first opens it. The reader's path is a private link,
    so it still reads whole (it was the copy's own name, and the reader's request failed); the
    bound holds for the copies, and old links are cleared by a later hand-out."""
    from loradb.db.store import blobcache

    reader, writer = BlobCache(tmp_path / "blobs", bound=40 * KB), BlobCache(tmp_path / "blobs", bound=40 * KB)
    sha, _ = fill(writer, 1)
    age(writer, sha, 120)  # cached long ago
    path = reader.get(sha)  # handed out to a reader in one process...
    assert path is not None
    fill(writer, 2)  # ...while another fills the cache past its bound
    assert sha not in entries(writer) and writer.size() <= 40 * KB  # evicted: the bound holds
    assert path.read_bytes() == blob(1)[1]  # and the reader still reads it whole
    later = time.time() + blobcache.IN_USE_SECONDS + 1
    monkeypatch.setattr(blobcache.time, "time", lambda: later)  # long after: that reader is done
    fill(writer, 3)
    assert not path.exists()  # a link that old is cleared (dated by its name: it shares the copy's mtime)


def test_a_damaged_copy_is_dropped_and_a_wrong_download_refused(tmp_path):
    cache = BlobCache(tmp_path / "blobs", bound=100 * KB)
    sha, _ = fill(cache, 1)
    copy = cache.folder / sha
    copy.write_bytes(b"tampered")
    assert cache.get(sha) is None and not copy.exists()
    with pytest.raises(StoreError, match="does not match its sha256"):
        cache.fill(sha, lambda tmp: tmp.write_bytes(b"something else"), "test store")
    assert [p.name for p in cache.folder.iterdir()] == [".in-use"]  # no copy, no temp file left behind


@pytest.mark.parametrize("value, expected", [(None, 2048 * 2**20), ("0.5", 2**19), ("0", 0)])
def test_the_bound_comes_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("LORADB_BLOB_CACHE_MB", raising=False)
    else:
        monkeypatch.setenv("LORADB_BLOB_CACHE_MB", value)
    assert bound_bytes() == expected


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_a_bad_bound_is_refused(monkeypatch, value):
    monkeypatch.setenv("LORADB_BLOB_CACHE_MB", value)
    with pytest.raises(StoreError, match="LORADB_BLOB_CACHE_MB"):
        bound_bytes()
