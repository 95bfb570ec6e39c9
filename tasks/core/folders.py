"""A folder of files that is either local or an S3 prefix, for exports and imports.

Users export to, and import from, ``s3://bucket/prefix`` or a local path; the
code that writes the NFT1000 layout or WebDataset shards does not care which.
Relative paths use ``/`` and may not climb out of the folder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from tasks.core import paths
from tasks.core.s3 import INVALID_RANGE, error_code, is_missing, make_client
from tasks.core.settings import Settings


class Folder(Protocol):
    url: str

    def put(self, path: str, data: bytes) -> None: ...
    def get(self, path: str) -> bytes: ...
    def read(self, path: str, max_bytes: int) -> bytes:
        """At most max_bytes + 1 bytes of a file (so callers see that it is too large).

        FileNotFoundError when it is gone; OSError when it is not a regular file."""
        ...

    def exists(self, path: str) -> bool: ...
    def walk(self, path: str = "") -> Iterator[str]:
        """Relative paths of every file under ``path``, sorted."""
        ...


def open_folder(url: str, settings: Settings) -> Folder:
    """``s3://bucket/prefix`` on the configured endpoint, or a local folder."""
    if url.startswith("s3://"):
        return S3Folder(url, settings)
    return LocalFolder(Path(url))


def _checked(path: str) -> str:
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts or "\\" in path:
        raise ValueError(f"path {path!r} leaves the folder")
    return path


class LocalFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def put(self, path: str, data: bytes) -> None:
        target = self.root / _checked(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a killed export never leaves a half file under the real name.
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)

    def get(self, path: str) -> bytes:
        return (self.root / _checked(path)).read_bytes()

    def read(self, path: str, max_bytes: int) -> bytes:
        # No symlinks (a link could name any file on the machine), no FIFOs or devices.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(self.root / _checked(path), flags)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise OSError(f"{path} is not a regular file")
            return fh.read(max_bytes + 1)

    def exists(self, path: str) -> bool:
        return (self.root / _checked(path)).is_file()

    def walk(self, path: str = "") -> Iterator[str]:
        base = self.root / _checked(path) if path else self.root
        found = (p for p in base.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        yield from sorted(p.relative_to(self.root).as_posix() for p in found)


class S3Folder:
    def __init__(self, url: str, settings: Settings) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.client = make_client(settings)

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{_checked(path)}" if self.prefix else _checked(path)

    def put(self, path: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def get(self, path: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if is_missing(e):
                raise FileNotFoundError(path) from e
            raise
        body: bytes = response["Body"].read()
        return body

    def read(self, path: str, max_bytes: int) -> bytes:
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(path), Range=f"bytes=0-{max_bytes}"
            )
        except ClientError as e:
            if is_missing(e):
                raise FileNotFoundError(path) from e
            if error_code(e) in INVALID_RANGE:
                return b""  # an empty object has no byte 0
            raise
        body: bytes = response["Body"].read()
        return body

    def exists(self, path: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(path))
        except ClientError as e:
            if is_missing(e):
                return False
            raise
        return True

    def walk(self, path: str = "") -> Iterator[str]:
        start = self._key(path) if path else (self.prefix + "/" if self.prefix else "")
        skip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start
        ):
            keys.extend(obj["Key"][skip:] for obj in page.get("Contents", []))
        yield from sorted(keys)


def open_bucket(settings: Settings) -> Folder:
    """The configured bucket and prefix as a folder: its paths are tasks.core.paths keys."""
    return S3Folder(paths.url(settings), settings)
