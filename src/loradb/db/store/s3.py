"""Content-addressed blobs in S3-compatible object storage: s3://bucket/prefix/<sha[:2]>/<sha256>.

The client is boto3 configured the usual way: AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3)
for a non-AWS server, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
An object appears whole or not at all (a PUT is atomic), so there are no temp files.
Reads download into the local read cache (bounded: blobcache.py) and are verified against
the sha256 in the name.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterator
from pathlib import Path

from loradb.errors import StoreError
from loradb.io.files import sha256_file

_SHA = re.compile(r"^[0-9a-f]{64}$")


class S3BlobStore:
    def __init__(self, url: str):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StoreError("S3 blobs need boto3: pip install 'loradb[scale]'") from None
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise StoreError(f"{url!r} names no bucket; use s3://bucket/prefix")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self._errors = __import__("botocore.exceptions", fromlist=["BotoCoreError", "ClientError"])
        self.client = boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                                   config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        from loradb.db.store.blobcache import BlobCache
        from loradb.io.files import cache_dir

        self.cache = BlobCache(cache_dir() / "blobs")

    def describe(self) -> str:
        return self.url

    def _key(self, sha256: str) -> str:
        if not _SHA.match(sha256):
            raise StoreError(f"{sha256!r} is not a sha256 digest")
        return "/".join(p for p in (self.prefix, sha256[:2], sha256) if p)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (self._errors.BotoCoreError, self._errors.ClientError) as e:
            raise StoreError(f"object storage {self.url}: {what} failed ({e})") from None

    def create(self) -> None:
        """Make the bucket if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors.ClientError:
            self._call("creating the bucket", self.client.create_bucket, Bucket=self.bucket)
        except self._errors.BotoCoreError as e:
            raise StoreError(f"object storage {self.url} cannot be reached ({e}); set AWS_ENDPOINT_URL and credentials") from None

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
            return True
        except self._errors.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"object storage {self.url}: {e}") from None
        except self._errors.BotoCoreError as e:
            raise StoreError(f"object storage {self.url} cannot be reached ({e})") from None

    def put(self, src: Path) -> str:
        """Upload a file under its sha256 (skipped when already there); returns the sha256."""
        digest = sha256_file(src)
        if not self.exists(digest):
            self._call("upload", self.client.upload_file, str(src), self.bucket, self._key(digest))
        return digest

    def fetch(self, sha256: str) -> Path:
        """A local copy of the blob, verified against its sha256, from the bounded read cache
        (blobcache.py) or downloaded into it."""
        self._key(sha256)
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached

        def download(tmp: Path) -> None:
            try:
                self.client.download_file(self.bucket, self._key(sha256), str(tmp))
            except (self._errors.BotoCoreError, self._errors.ClientError) as e:
                raise StoreError(f"blob {sha256[:12]} cannot be read from {self.url} ({e})") from None

        return self.cache.fill(sha256, download, self.url)

    def problem(self, sha256: str) -> str | None:
        """None when the object in the bucket is there and matches its sha256, else what is
        wrong. Reads the object store itself, never the local read cache: `check` must see
        an object deleted or altered in the bucket even when a good copy is cached here."""
        import hashlib

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except self._errors.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return f"blob {sha256[:12]} is missing from {self.url}"
            raise StoreError(f"object storage {self.url}: reading blob {sha256[:12]} failed ({e})") from None
        except self._errors.BotoCoreError as e:
            raise StoreError(f"object storage {self.url} cannot be reached ({e})") from None
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
        except (self._errors.BotoCoreError, self._errors.ClientError) as e:
            raise StoreError(f"object storage {self.url}: reading blob {sha256[:12]} failed ({e})") from None
        finally:
            body.close()
        if digest.hexdigest() != sha256:
            return f"blob {sha256[:12]} in {self.url} does not match its sha256"
        return None

    def delete(self, sha256: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self._key(sha256))
        self.cache.discard(sha256)

    def list(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"].rsplit("/", 1)[-1]
                    if _SHA.match(name):
                        yield name
        except (self._errors.BotoCoreError, self._errors.ClientError) as e:
            raise StoreError(f"object storage {self.url}: listing failed ({e})") from None

    def stray_temp_files(self) -> builtins.list[Path]:
        return []  # uploads are atomic: nothing half-written to clean up
