"""A shard's blobs in packs, against a real S3 server: one object per pack, ranged
reads back, identical bytes stored once, large blobs alone, stale packs swept."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tasks.core import paths
from tasks.core.s3 import ObjectStore, StoredBlob
from tasks.ingest.packs import ALONE_BYTES, PackWriter, pack_key_of

CONTRACT = "0x" + "ab" * 20


def _offload(pool: ThreadPoolExecutor) -> Callable[..., Any]:
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    return run


def _writer(store: ObjectStore, pool: ThreadPoolExecutor, **kw: Any) -> PackWriter:
    return PackWriter(store, CONTRACT, "shard-0-999", _offload(pool), **kw)


def _packs(store: ObjectStore) -> list[str]:
    return store.list_keys(store.key(paths.pack_prefix(CONTRACT, "shard-0-999")))


def test_small_blobs_share_one_object_and_read_back_by_range(store: ObjectStore) -> None:
    blobs = [f"token {i} metadata".encode() * (i + 1) for i in range(50)]

    async def run() -> list[StoredBlob]:
        with ThreadPoolExecutor(2) as pool:
            writer = _writer(store, pool)
            stored = [await writer.add(b, "application/json") for b in blobs]
            assert _packs(store) == []  # nothing written before a flush
            await writer.flush()
            return stored

    stored = asyncio.run(run())
    assert len(_packs(store)) == 1
    assert store.puts == 1
    for data, blob in zip(blobs, stored, strict=True):
        assert blob.created and blob.size == len(data)
        assert blob.sha256 == hashlib.sha256(data).hexdigest()
        assert pack_key_of(blob.key) == _packs(store)[0]
        assert store.read_blob(blob.key) == data


def test_identical_bytes_are_stored_once_and_large_blobs_alone(store: ObjectStore) -> None:
    small, large = b"placeholder metadata", bytes(range(256)) * (ALONE_BYTES // 256 + 1)

    async def run() -> tuple[list[StoredBlob], list[StoredBlob]]:
        with ThreadPoolExecutor(2) as pool:
            writer = _writer(store, pool)
            first = [await writer.add(small, "a"), await writer.add(large, "image/png")]
            again = [await writer.add(small, "a"), await writer.add(large, "image/png")]
            await writer.flush()
            return first, again

    first, again = asyncio.run(run())
    assert [b.key for b in first] == [b.key for b in again]
    assert [b.created for b in first] == [True, True]
    assert [b.created for b in again] == [False, False]  # counted as new bytes once
    assert first[1].key == store.blob_key(hashlib.sha256(large).hexdigest())
    assert store.read_blob(first[1].key) == large  # a plain key reads as before
    assert store.read_blob(first[0].key) == small

    # Another block, another run: the large blob is found stored, the small one packed.
    async def other_block() -> list[StoredBlob]:
        with ThreadPoolExecutor(2) as pool:
            writer = PackWriter(store, CONTRACT, "shard-1000-1999", _offload(pool))
            out = [await writer.add(small, "a"), await writer.add(large, "image/png")]
            await writer.flush()
            return out

    small2, large2 = asyncio.run(other_block())
    assert (large2.key, large2.created) == (first[1].key, False)
    assert small2.created and pack_key_of(small2.key) != pack_key_of(first[0].key)


def test_known_blobs_of_earlier_runs_are_not_stored_again(store: ObjectStore) -> None:
    data = b"stored by an earlier run"

    async def run(known: list[tuple[str, str, int]]) -> StoredBlob:
        with ThreadPoolExecutor(2) as pool:
            writer = _writer(store, pool, known=known)
            blob = await writer.add(data, "a")
            await writer.flush()
            return blob

    earlier = asyncio.run(run([]))
    puts = store.puts
    again = asyncio.run(run([(earlier.sha256, earlier.key, earlier.size)]))
    assert (again.key, again.created) == (earlier.key, False)
    assert store.puts == puts


def test_sweep_lists_only_unnamed_packs_older_than_the_shard(store: ObjectStore) -> None:
    async def run() -> tuple[StoredBlob, StoredBlob]:
        with ThreadPoolExecutor(2) as pool:
            writer = _writer(store, pool)
            named = await writer.add(b"named", "a")
            await writer.flush()
            orphan = await writer.add(b"orphan", "a")
            await writer.flush()
            return named, orphan

    named, orphan = asyncio.run(run())
    started_ns = time.time_ns()
    with ThreadPoolExecutor(2) as pool:
        writer = _writer(store, pool)
        keep = {pack_key_of(named.key)}
        assert writer.sweep(keep, started_ns) == [pack_key_of(orphan.key)]
        assert writer.sweep(keep, 0) == []  # a pack newer than the shard may be a live run's


def test_a_missing_or_cut_pack_reads_as_missing(store: ObjectStore) -> None:
    ref = paths.blob_ref(store.key("packs", "nowhere.pack"), 0, 10)
    assert store.read_blob(ref) is None
    key = store.key("packs", "short.pack")
    store.put(key, b"12345")
    assert store.read_blob(paths.blob_ref(key, 2, 3)) == b"345"
    assert store.read_blob(paths.blob_ref(key, 2, 10)) is None  # past its end
    with pytest.raises(ValueError):
        paths.parse_blob_ref(key + "#x+1")
