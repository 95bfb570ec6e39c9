"""Error containment of one token's ingest: token problems become rows, store failures do not."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
from botocore.exceptions import EndpointConnectionError
from PIL import Image

from tasks.core.errors import ItemError
from tasks.core.s3 import StoredBlob
from tasks.core.settings import Settings
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.token import TokenContext, ingest_token

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><text>bag</text></svg>'
URI = (
    "data:application/json;base64,"
    + base64.b64encode(
        json.dumps(
            {
                "name": "Bag #1",
                "image": "data:image/svg+xml;base64," + base64.b64encode(SVG).decode(),
            }
        ).encode()
    ).decode()
)


async def keep(data: bytes, mime: str) -> StoredBlob:
    digest = hashlib.sha256(data).hexdigest()
    return StoredBlob(f"blobs/{digest}", digest, len(data), created=True)


async def test_data_uri_token_is_stored() -> None:
    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, keep, "Loot", "0xloot")
        row = await ingest_token(ctx, 1, URI)
    assert (row.status, row.mime, row.bytes) == ("ok", "image/svg+xml", len(SVG))
    assert row.sha256 == hashlib.sha256(SVG).hexdigest()
    assert fetcher.requests == 0


async def test_a_bug_met_by_token_data_becomes_a_retryable_row() -> None:
    async def broken(data: bytes, mime: str) -> StoredBlob:
        raise KeyError("something the code did not expect")

    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, broken, "Loot", "0xloot")
        row = await ingest_token(ctx, 1, URI)
    assert (row.status, row.error_kind, row.retryable) == ("failed", "unexpected", True)
    assert row.error is not None and row.error.startswith("KeyError")


async def test_object_store_failure_fails_the_shard_not_the_token() -> None:
    async def unreachable(data: bytes, mime: str) -> StoredBlob:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, unreachable, "Loot", "0xloot")
        with pytest.raises(EndpointConnectionError):
            await ingest_token(ctx, 1, URI)


async def test_errors_from_the_chain_are_recorded() -> None:
    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, keep, "Loot", "0xloot")
        row = await ingest_token(ctx, 9, ItemError("not_minted", "call reverted"))
    assert (row.status, row.error_kind, row.retryable, row.token_uri) == (
        "failed",
        "not_minted",
        False,
        None,
    )


async def test_metadata_kept_when_the_image_stage_hits_a_bug() -> None:
    calls: list[str] = []

    async def metadata_only(data: bytes, mime: str) -> StoredBlob:
        calls.append(mime)
        if mime != "application/json":
            raise KeyError("image store bug")
        return await keep(data, mime)

    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, metadata_only, "Loot", "0xloot")
        row = await ingest_token(ctx, 1, URI)
    assert calls == ["application/json", "image/svg+xml"]
    assert (row.status, row.error_kind) == ("failed", "unexpected")
    assert row.metadata_key is not None and row.metadata_sha256 is not None


async def test_stored_errors_are_printable_text() -> None:
    # A revert's raw bytes, a terminal escape and a bidi override, as a node may relay them.
    message = "call reverted: execution reverted: \x00\x07\x1b[2J\u202egnp.\ud800 ok é"
    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, keep, "Loot", "0xloot")
        row = await ingest_token(ctx, 9, ItemError("not_minted", message + "x" * 5000))
    assert row.error is not None and row.error.isprintable()
    assert row.error.startswith("call reverted: execution reverted: \\x00\\x07\\x1b[2J\\u202e")
    assert "ok é" in row.error
    assert len(row.error) < 1100


@pytest.mark.parametrize("side", [128, 512], ids=["checked-in-place", "checked-in-a-thread"])
async def test_a_truncated_image_fails_its_token(side: int) -> None:
    out = io.BytesIO()
    Image.effect_noise((side, side), 60).convert("RGB").save(out, format="JPEG")
    cut = out.getvalue()[:-200]
    uri = "data:application/json," + json.dumps(
        {"image": "data:image/jpeg;base64," + base64.b64encode(cut).decode()}
    )
    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, keep, "Birds", "0xbirds")
        row = await ingest_token(ctx, 1, uri)
    assert (row.status, row.error_kind) == ("failed", "bad_image")
    assert row.metadata_key is not None


async def test_deeply_nested_metadata_fails_its_token() -> None:
    uri = "data:application/json," + '{"a":' * 100_000 + "1" + "}" * 100_000
    async with SafeFetcher(Settings()) as fetcher:
        ctx = TokenContext(Settings(), fetcher, keep, "Birds", "0xbirds")
        row = await ingest_token(ctx, 1, uri)
    assert (row.status, row.error_kind) == ("failed", "bad_json")
