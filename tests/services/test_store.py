"""ObjectStore against a real S3 server (SeaweedFS): conditional puts, pagination, manifests."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.manifest import COLUMNS, ManifestRow, from_parquet, to_parquet

MANY = 1_100  # more than one list_objects_v2 page (1,000) and one delete_objects call


def test_put_blob_is_content_addressed_and_conditional(store: ObjectStore) -> None:
    data = b"\x89PNG not really, but bytes"
    digest = hashlib.sha256(data).hexdigest()
    first = store.put_blob(data, "image/png")
    assert (first.key, first.sha256, first.size, first.created) == (
        f"{store.prefix}blobs/sha256/{digest[:2]}/{digest}",
        digest,
        len(data),
        True,
    )
    head = store.client.head_object(Bucket=store.bucket, Key=first.key)

    second = store.put_blob(data, "text/plain")  # same bytes, another content type
    assert (second.key, second.sha256, second.size, second.created) == (
        first.key,
        digest,
        len(data),
        False,
    )
    again = store.client.head_object(Bucket=store.bucket, Key=first.key)
    assert again["ContentType"] == "image/png"  # not overwritten
    assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])
    assert store.get(first.key) == data
    assert store.puts == 1

    other = store.put_blob(data + b"!", "image/png")
    assert other.created and other.key != first.key
    assert store.puts == 2
    assert sorted(store.list_keys(store.key("blobs") + "/")) == sorted([first.key, other.key])


def test_get_missing_key_is_none(store: ObjectStore) -> None:
    assert store.get(store.key("no", "such", "key")) is None
    store.put(store.key("present"), b"")
    assert store.get(store.key("present")) == b""


def test_ensure_bucket_creates_once(settings: Settings) -> None:
    fresh = ObjectStore(settings.replace(s3_bucket="nft1000-tests-fresh"))
    fresh.ensure_bucket()
    fresh.ensure_bucket()  # already there: no error
    fresh.put(fresh.key("x"), b"1")
    assert fresh.get(fresh.key("x")) == b"1"


def test_list_keys_paginates_and_delete_batches(store: ObjectStore) -> None:
    keys = [store.key("many", f"{i:05d}.txt") for i in range(MANY)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, k.encode(), "text/plain"), keys))
    assert store.puts == MANY
    store.put(store.key("many-not-under-prefix"), b"")
    listed = store.list_keys(store.key("many") + "/")
    assert len(listed) == MANY
    assert sorted(listed) == keys
    assert store.list_keys(store.key("many", "0000")) == keys[:10]

    store.delete(listed)
    assert store.list_keys(store.key("many") + "/") == []
    assert store.list_keys(store.key("many-not")) == [store.key("many-not-under-prefix")]
    store.delete([])


def _rows() -> list[ManifestRow]:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    ok = ManifestRow(
        collection="Quirks ✓",
        contract="0x" + "ab" * 20,
        token_id=str(2**256 - 1),
        token_uri="data:application/json;base64,e30=",
        metadata_key="p/blobs/sha256/aa/" + "a" * 64,
        metadata_sha256="a" * 64,
        metadata_cid="QmRxLUjzNoBXFHmiuccQpPhnNR2nxtmwHgrFqt39UwkBzo",
        image_uri="ipfs://QmSnwoQ2KLj8S4VkdZUtHXfmBzViqrd6zuKfTya52gy86V/0.png",
        image_key="p/blobs/sha256/bb/" + "b" * 64,
        mime="image/png",
        bytes=5 * 2**30,  # over 32 bits
        sha256="b" * 64,
        cid="QmSnwoQ2KLj8S4VkdZUtHXfmBzViqrd6zuKfTya52gy86V",
        width=42,
        height=42,
        fetched_at=when,
    )
    failed = ManifestRow(
        collection="Quirks ✓",
        contract="0x" + "ab" * 20,
        token_id="0",
        token_uri='http://example.com/"quoted"\n',
        status="failed",
        error_kind="http_status_retryable",
        error="HTTP 503 from http://example.com/ ; ünïcode",
        retryable=True,
        fetched_at=when,
    )
    return [ok, failed]


def test_manifest_round_trip_through_s3(store: ObjectStore, tmp_path: Path) -> None:
    rows = _rows()
    key = store.key("manifests", "0x" + "ab" * 20, "shard-0-9.parquet")
    store.put(key, to_parquet(rows))
    data = store.get(key)
    assert data is not None
    assert from_parquet(data) == rows

    local = tmp_path / "manifest.parquet"
    local.write_bytes(data)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        described = con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(local)]).fetchall()
        types = {name: kind for name, kind, *_ in described}
        assert tuple(types) == COLUMNS
        assert (types["token_id"], types["bytes"], types["retryable"]) == (
            "VARCHAR",
            "BIGINT",
            "BOOLEAN",
        )
        assert types["fetched_at"] == "TIMESTAMP WITH TIME ZONE"
        found = con.execute(
            "SELECT token_id, status, error_kind, bytes, retryable, fetched_at "
            "FROM read_parquet(?) ORDER BY status DESC",
            [str(local)],
        ).fetchall()
    finally:
        con.close()
    assert found == [
        (str(2**256 - 1), "ok", None, 5 * 2**30, False, rows[0].fetched_at),
        ("0", "failed", "http_status_retryable", None, True, rows[1].fetched_at),
    ]

    empty = store.key("manifests", "empty.parquet")
    store.put(empty, to_parquet([]))
    assert from_parquet(store.get(empty) or b"") == []
