"""Ingest's entry points as the cases call them: SafeFetcher, download, ingest_token.

Settings keep every wait short (connect 1 s, read 0.3 s, whole request 0.8 s, two
retries with millisecond backoff) so that a drip or a hang ends in seconds; a
case's time bound is stated against ``REQUEST_S``. Stored blobs go to a dict: the
store is not under test, the token's path to it is.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tasks.core.s3 import StoredBlob
from tasks.core.settings import Settings
from tasks.ingest.download import Downloaded, download
from tasks.ingest.fetch import FetchResult, SafeFetcher
from tasks.ingest.manifest import ManifestRow
from tasks.ingest.token import TokenContext, ingest_token
from tasks.ingest.uris import resolve_uri
from tests.data.hostile.case import Env, Violation

REQUEST_S = 0.8  # the deadline one URL gets in all (url_deadline_s), and each attempt
MAX_METADATA = 1 << 20
MAX_IMAGE = 4 << 20
CONTRACT = "0x" + "ab" * 20


def settings(allow: Sequence[str] = (), gateways: Sequence[str] = ()) -> Settings:
    return Settings(
        allow_hosts=tuple(allow),
        ipfs_gateways=tuple(gateways),
        connect_timeout_s=1.0,
        read_timeout_s=0.3,
        request_timeout_s=REQUEST_S,
        url_deadline_s=REQUEST_S,
        max_retries=2,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        max_redirects=5,
        max_metadata_bytes=MAX_METADATA,
        max_image_bytes=MAX_IMAGE,
        concurrency=8,
        per_host_concurrency=8,
    )


def fetch(url: str, allow: Sequence[str] = (), max_bytes: int = MAX_METADATA) -> FetchResult:
    """One SafeFetcher.get, in its own event loop."""

    async def go() -> FetchResult:
        async with SafeFetcher(settings(allow)) as fetcher:
            return await fetcher.get(url, max_bytes=max_bytes)

    return asyncio.run(go())


def fetch_uri(uri: str, s: Settings, max_bytes: int = MAX_METADATA) -> Downloaded:
    """A token URI the way ingest reads metadata: resolve_uri, then download."""

    async def go() -> Downloaded:
        where = resolve_uri(uri, 1, s, max_data_bytes=max_bytes)
        async with SafeFetcher(s) as fetcher:
            return await download(where, fetcher, s.ipfs_gateways, max_bytes)

    return asyncio.run(go())


@contextmanager
def untouched(env: Env) -> Iterator[None]:
    """Raise Violation if the sentinel saw a connection while the block ran."""
    before = env.sentinel.connection_count()
    try:
        yield
    finally:
        seen = env.sentinel.connection_count() - before
        if seen:
            raise Violation(f"the sentinel saw {seen} connection(s)")


class MemoryBlobs:
    """put_blob for TokenContext: content-addressed, in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, data: bytes, mime: str) -> StoredBlob:
        digest = hashlib.sha256(data).hexdigest()
        created = digest not in self.blobs
        self.blobs[digest] = data
        return StoredBlob(f"blobs/sha256/{digest[:2]}/{digest}", digest, len(data), created)


def ingest_tokens(uris: dict[int, str], s: Settings) -> dict[int, ManifestRow]:
    """Ingest these tokens together, as one shard step does; their manifest rows."""

    async def go() -> dict[int, ManifestRow]:
        blobs = MemoryBlobs()
        async with SafeFetcher(s) as fetcher:
            ctx = TokenContext(s, fetcher, blobs.put, "Hostile", CONTRACT)
            rows = await asyncio.gather(*(ingest_token(ctx, i, u) for i, u in uris.items()))
        return dict(zip(uris, rows, strict=True))

    return asyncio.run(go())


class RowsCheck:
    """Each token's row must be ``ok`` or failed with the kind named for it."""

    def __init__(self, expected: dict[int, str]) -> None:
        self.expected = expected

    def __call__(self, rows: dict[int, ManifestRow]) -> str | None:
        wrong = []
        for token_id, want in self.expected.items():
            row = rows[token_id]
            got = "ok" if row.status == "ok" else str(row.error_kind)
            if got != want:
                wrong.append(f"token {token_id}: {got}, not {want} ({(row.error or '')[:80]})")
        return "; ".join(wrong) or None
