"""The object store: content-addressed blobs and shard manifests in one S3 bucket.

Blobs are keyed by the SHA-256 of their bytes, so identical images are stored
once however many tokens name them. Writes are conditional (``If-None-Match: *``):
a blob that already exists is never written again, which is what makes reruns
and resumed runs store each object exactly once. Any S3-compatible endpoint
works: AWS S3, MinIO, SeaweedFS.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tasks.core import paths
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class Head:
    etag: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    size: int
    created: bool  # False when an identical blob was already there


def boto3_session() -> boto3.Session:
    """The session every S3 client and DuckDB's S3 secret take credentials from: boto3's
    default one (its usual chain: environment, profiles, instance roles), which a caller
    may replace with ``boto3.setup_default_session(...)`` instead of editing os.environ."""
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    return cast(boto3.Session, boto3.DEFAULT_SESSION)


def make_client(settings: Settings) -> S3Client:
    """A boto3 S3 client for the configured endpoint (None = AWS)."""
    client: S3Client = boto3_session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            max_pool_connections=max(10, settings.concurrency),
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )
    return client


LINK_SECONDS = 7 * 24 * 3600  # the longest an S3 presigned URL may live


def presigned_link(settings: Settings, path: str) -> str:
    """A week-long GET link to ``path`` under the prefix, for plots in Prefect artifacts."""
    return make_client(settings).generate_presigned_url(
        "get_object",
        Params={"Bucket": settings.s3_bucket, "Key": f"{settings.s3_prefix}{path}"},
        ExpiresIn=LINK_SECONDS,
    )


class ObjectStore:
    """Blobs and manifests under one bucket and prefix. Safe to share between threads."""

    def __init__(self, settings: Settings, client: S3Client | None = None) -> None:
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.client = client or make_client(settings)
        self._lock = threading.Lock()
        self.puts = 0  # objects written (blobs created and manifests)

    def key(self, *parts: str) -> str:
        """The bucket key of a tasks.core.paths key (the prefix prepended)."""
        return self.prefix + "/".join(parts)

    def blob_key(self, sha256: str) -> str:
        return self.key(paths.blob(sha256))

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (local stacks; production buckets exist)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_blob(self, data: bytes, content_type: str) -> StoredBlob:
        """Store bytes under their SHA-256 unless an identical blob exists."""
        digest = hashlib.sha256(data).hexdigest()
        key = self.blob_key(digest)
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as e:
            if error_code(e) in PRECONDITION_FAILED:
                return StoredBlob(key, digest, len(data), created=False)
            raise
        self._count_put()
        return StoredBlob(key, digest, len(data), created=True)

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata=metadata or {},
        )
        self._count_put()

    def get(self, key: str, if_match: str | None = None) -> bytes | None:
        """An object's bytes, or None when it does not exist. ``if_match``: only the version
        with that ETag (a newer one raises), so what was checked is what is read."""
        try:
            response = (
                self.client.get_object(Bucket=self.bucket, Key=key, IfMatch=if_match)
                if if_match
                else self.client.get_object(Bucket=self.bucket, Key=key)
            )
        except ClientError as e:
            if is_missing(e):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def read_blob(self, ref: str) -> bytes | None:
        """A blob's bytes by the reference a manifest holds (tasks.core.paths.blob_ref: a
        byte range of a pack, one ranged GET; or a plain key), None when it is missing."""
        span = paths.parse_blob_ref(ref)
        if span is None:
            return self.get(ref)
        key, offset, length = span
        if length == 0:
            return b"" if self.head(key) is not None else None
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
            )
        except ClientError as e:
            if is_missing(e) or error_code(e) in INVALID_RANGE:
                return None
            raise
        body: bytes = response["Body"].read()
        return body if len(body) == length else None

    def head(self, key: str) -> Head | None:
        """An object's ETag and user metadata, or None when it does not exist."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if is_missing(e):
                return None
            raise
        return Head(str(response["ETag"]), dict(response.get("Metadata", {})))

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under a prefix (paginated)."""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk: Any = [{"Key": k} for k in keys[start : start + 1000]]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
            )
            if errors := response.get("Errors"):
                raise RuntimeError(f"could not delete {len(errors)} objects, e.g. {errors[0]}")

    def _count_put(self) -> None:
        with self._lock:
            self.puts += 1


# The error codes S3-compatible servers give: AWS and MinIO name them, SeaweedFS and
# HEAD requests (no body) give the bare HTTP status.
MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
INVALID_RANGE = frozenset({"InvalidRange", "416"})


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_missing(error: ClientError) -> bool:
    """Whether an S3 error says the object is not there: the one test every reader uses."""
    return error_code(error) in MISSING
