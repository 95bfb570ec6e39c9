"""Ingest one token: URI -> metadata -> image -> object store -> one manifest row.

Every failure becomes the row's status and error; whatever was already stored
(the metadata when only the image fails) stays recorded in the row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tasks.core.content import (
    ImageInfo,
    image_reference,
    inspect_image,
    parse_metadata,
    pixel_count,
)
from tasks.core.errors import ItemError
from tasks.core.s3 import StoredBlob
from tasks.core.settings import Settings
from tasks.ingest.download import download
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.gateways import GatewayPool
from tasks.ingest.manifest import ManifestRow, clip_uri, error_text
from tasks.ingest.uris import DataLocation, Location, resolve_uri

log = logging.getLogger(__name__)

# An image as stored: where, what it is, and its IPFS CID if it came from IPFS.
StoredImage = tuple[StoredBlob, ImageInfo, str | None]
# Stores bytes with a content type, off the event loop; returns where they went.
PutBlob = Callable[[bytes, str], Awaitable[StoredBlob]]
# Image checks decode pixels (up to seconds for a big PNG): off the event loop, so
# downloads keep flowing, and one at a time per process, so memory holds one image.
# Up to 256 x 256 pixels (under a millisecond) the hand-over would cost more.
_IMAGE_CHECKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-check")
_CHECK_IN_PLACE_PIXELS = 256 * 256


@dataclass
class TokenContext:
    """What every token of a shard shares: settings, the HTTP client, the store."""

    settings: Settings
    fetcher: SafeFetcher
    put_blob: PutBlob
    collection: str
    contract: str
    # One download per distinct image location in a shard (unrevealed
    # collections point every token at the same image).
    images: dict[Location, asyncio.Task[StoredImage | ItemError]] = field(default_factory=dict)
    bytes_new: int = 0
    gateways: GatewayPool = field(init=False)

    def __post_init__(self) -> None:
        self.gateways = GatewayPool(self.settings.ipfs_gateways)

    async def store(self, data: bytes, mime: str) -> StoredBlob:
        blob = await self.put_blob(data, mime)
        if blob.created:
            self.bytes_new += blob.size
        return blob


async def ingest_token(ctx: TokenContext, token_id: int, uri: str | ItemError) -> ManifestRow:
    """Produce the token's manifest row; never raises for problems of the token's data."""
    row = ManifestRow(ctx.collection, ctx.contract, str(token_id))
    try:
        if isinstance(uri, ItemError):
            raise uri
        row = replace(row, token_uri=clip_uri(uri))
        row, metadata = await _metadata(ctx, token_id, uri, row)
        return await _with_image(ctx, token_id, metadata, row)
    except ItemError as e:
        return _failed(row, e)
    except (BotoCoreError, ClientError):
        raise  # the object store failed, not the token: the shard's retry resumes
    except Exception as e:
        # Token data that trips a bug must not stop the other 999 tokens of the shard;
        # the row keeps what was already stored (the metadata, say).
        log.exception("token %s of %s: unexpected error", token_id, ctx.contract)
        return _failed(row, ItemError("unexpected", f"{type(e).__name__}: {e}"))


async def _metadata(
    ctx: TokenContext, token_id: int, uri: str, row: ManifestRow
) -> tuple[ManifestRow, dict[str, Any]]:
    """Fetch, parse and store the metadata; the row with its key, and the parsed JSON."""
    s = ctx.settings
    where = resolve_uri(uri, token_id, s, max_data_bytes=s.max_metadata_bytes)
    meta = await download(where, ctx.fetcher, ctx.gateways, s.max_metadata_bytes)
    metadata = parse_metadata(meta.data)
    stored = await ctx.store(meta.data, "application/json")
    row = replace(
        row, metadata_key=stored.key, metadata_sha256=stored.sha256, metadata_cid=meta.cid
    )
    return row, metadata


async def _with_image(
    ctx: TokenContext, token_id: int, metadata: dict[str, Any], row: ManifestRow
) -> ManifestRow:
    """Fetch, check and store the image the metadata names; the finished row."""
    s = ctx.settings
    reference: str | bytes | None = None
    try:
        reference = image_reference(metadata)
        if isinstance(reference, bytes):
            image_uri, image = "(inline SVG)", await _store_image(ctx, reference, None)
        else:
            image_uri = reference
            where = resolve_uri(reference, token_id, s, max_data_bytes=s.max_image_bytes)
            image = await _image(ctx, where)
    except ItemError as e:
        return _failed(replace(row, image_uri=clip_uri(_as_text(reference))), e)
    blob, info, cid = image
    return replace(
        row,
        image_uri=clip_uri(image_uri),
        image_key=blob.key,
        mime=info.mime,
        bytes=blob.size,
        sha256=blob.sha256,
        cid=cid,
        width=info.width,
        height=info.height,
    )


async def _image(ctx: TokenContext, where: Location) -> StoredImage:
    """Fetch, check and store an image once per shard however many tokens name it."""
    if isinstance(where, DataLocation):
        return await _fetch_image(ctx, where)
    task = ctx.images.get(where)
    if task is None:
        task = ctx.images[where] = asyncio.ensure_future(_outcome(ctx, where))
    outcome = await asyncio.shield(task)
    if isinstance(outcome, ItemError):
        raise ItemError(outcome.kind, outcome.message, retryable=outcome.retryable)
    return outcome


async def _outcome(ctx: TokenContext, where: Location) -> StoredImage | ItemError:
    """The image, or its error as a fresh object: a raised error's traceback would keep
    the downloaded bytes alive in the shard's cache until the shard ends."""
    try:
        return await _fetch_image(ctx, where)
    except ItemError as e:
        return ItemError(e.kind, e.message, retryable=e.retryable)


async def _fetch_image(ctx: TokenContext, where: Location) -> StoredImage:
    s = ctx.settings
    image = await download(where, ctx.fetcher, ctx.gateways, s.max_image_bytes)
    return await _store_image(ctx, image.data, image.cid)


async def _store_image(ctx: TokenContext, data: bytes, cid: str | None) -> StoredImage:
    if pixel_count(data) <= _CHECK_IN_PLACE_PIXELS:
        info = inspect_image(data)
    else:
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(_IMAGE_CHECKS, inspect_image, data)
    return await ctx.store(data, info.mime), info, cid


def _as_text(reference: str | bytes | None) -> str | None:
    return reference if isinstance(reference, str) else None


def _failed(row: ManifestRow, error: ItemError) -> ManifestRow:
    return replace(
        row,
        status="failed",
        error_kind=error.kind,
        error=error_text(error.message),
        retryable=error.retryable,
    )
