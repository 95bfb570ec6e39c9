"""Ingest one shard (about 1,000 tokens of one collection): the unit Dask runs.

A shard reads its tokenURIs in JSON-RPC batches, then downloads concurrently
inside one event loop. Progress is checkpointed as small partial manifests every
few seconds, so a killed run resumes where it stopped; the finished shard is one
manifest parquet. Tokens already done (stored, or failed for good) are never
fetched again: a rerun over an ingested collection sends no HTTP request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.chain import ChainReader
from tasks.fetch import SafeFetcher
from tasks.manifest import ManifestRow, from_parquet, to_parquet
from tasks.settings import Settings
from tasks.store import ObjectStore, StoredBlob
from tasks.token import TokenContext, ingest_token

T = TypeVar("T")


@dataclass(frozen=True)
class ShardSpec:
    collection: str
    contract: str  # lowercase 0x address
    first: int  # first token id
    end: int  # one past the last token id

    @property
    def name(self) -> str:
        return f"shard-{self.first}-{self.end - 1}"


@dataclass
class ShardResult:
    collection: str
    contract: str
    tokens: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error kind
    skipped: int = 0  # already done by an earlier run
    bytes: int = 0  # image bytes of the shard's ok tokens
    new_bytes: int = 0  # bytes this run wrote to the store
    http_requests: int = 0
    rpc_round_trips: int = 0
    seconds: float = 0.0

    def merge(self, other: ShardResult) -> None:
        """Add another result's counts to this one (collection and run totals)."""
        self.tokens += other.tokens
        self.ok += other.ok
        self.failed.update(other.failed)
        self.skipped += other.skipped
        self.bytes += other.bytes
        self.new_bytes += other.new_bytes
        self.http_requests += other.http_requests
        self.rpc_round_trips += other.rpc_round_trips
        self.seconds += other.seconds


def plan_shards(
    collection: str, contract: str, ids: range, shard_size: int, max_tokens: int | None = None
) -> list[ShardSpec]:
    """Split a token id range into consecutive shards; refuse ranges over max_tokens."""
    count = max(0, ids.stop - ids.start)  # len() overflows past 2**63
    if max_tokens is not None and count > max_tokens:
        raise ValueError(
            f"{collection}: {count} token ids ({ids.start}..{ids.stop - 1}) exceed "
            f"max_tokens_per_collection={max_tokens}; name an explicit range, e.g. "
            f"'{contract}:{ids.start}-{ids.start + 9999}'"
        )
    return [
        ShardSpec(collection, contract, start, min(start + shard_size, ids.stop))
        for start in range(ids.start, ids.stop, shard_size)
    ]


def manifest_key(store: ObjectStore, spec: ShardSpec) -> str:
    return store.key("manifests", spec.contract, f"{spec.name}.parquet")


def parts_prefix(store: ObjectStore, spec: ShardSpec) -> str:
    return store.key("manifests", spec.contract, "_parts", spec.name) + "/"


def run_shard(spec: ShardSpec, settings: Settings) -> ShardResult:
    """Ingest a shard to completion (synchronous entry point for Dask workers)."""
    return asyncio.run(_run_shard(spec, settings))


async def _run_shard(spec: ShardSpec, settings: Settings) -> ShardResult:
    started = time.monotonic()
    store = ObjectStore(settings)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        blocking = _Offload(pool)
        previous = await blocking(load_rows, store, spec)
        rows = {int(r.token_id): r for r in previous.values() if r.done}
        todo = [i for i in range(spec.first, spec.end) if i not in rows]
        result = ShardResult(spec.collection, spec.contract, skipped=len(rows))
        if todo:
            rows.update(await _ingest_tokens(spec, settings, store, blocking, todo, result))
        # A shard is finished by its manifest; a run killed after its last checkpoint
        # (all rows in parts, no manifest yet) is finished here without fetching anything.
        finish: bool = bool(todo) or await blocking(_unfinished, store, spec)
        if finish:
            final = [rows[i] for i in sorted(rows)]
            await blocking(store.put, manifest_key(store, spec), to_parquet(final))
            await blocking(_drop_parts, store, spec)
    _tally(result, rows.values())
    result.seconds = time.monotonic() - started
    return result


async def _ingest_tokens(
    spec: ShardSpec,
    settings: Settings,
    store: ObjectStore,
    blocking: _Offload,
    todo: list[int],
    result: ShardResult,
) -> dict[int, ManifestRow]:
    """Read the tokenURIs of `todo` in RPC batches, then ingest the tokens concurrently."""
    async with ChainReader(settings.rpc_url, settings.rpc_batch_size) as chain:
        uris = await chain.token_uris(spec.contract, todo)
    result.rpc_round_trips = chain.round_trips

    async def put_blob(data: bytes, mime: str) -> StoredBlob:
        return await blocking(store.put_blob, data, mime)

    rows: dict[int, ManifestRow] = {}
    async with SafeFetcher(settings) as fetcher:
        ctx = TokenContext(settings, fetcher, put_blob, spec.collection, spec.contract)
        checkpoint = _Checkpoint(store, spec, settings.checkpoint_interval_s)
        slots = asyncio.Semaphore(settings.concurrency)

        async def one(token_id: int) -> None:
            async with slots:
                rows[token_id] = await ingest_token(ctx, token_id, uris[token_id])
            await checkpoint.add(rows[token_id], blocking)

        await asyncio.gather(*(one(i) for i in todo))
        await checkpoint.flush(blocking)
    result.http_requests = fetcher.requests
    result.new_bytes = ctx.bytes_new
    return rows


def _unfinished(store: ObjectStore, spec: ShardSpec) -> bool:
    """No manifest yet, or checkpoint parts left behind by a killed run."""
    return store.get(manifest_key(store, spec)) is None or bool(
        store.list_keys(parts_prefix(store, spec))
    )


def load_rows(store: ObjectStore, spec: ShardSpec) -> dict[str, ManifestRow]:
    """The shard's rows from an earlier run: its manifest, then newer checkpoint parts."""
    rows: dict[str, ManifestRow] = {}
    final = store.get(manifest_key(store, spec))
    if final is not None:
        rows.update((r.token_id, r) for r in from_parquet(final))
    for key in sorted(store.list_keys(parts_prefix(store, spec))):
        data = store.get(key)
        if data is not None:
            rows.update((r.token_id, r) for r in from_parquet(data))
    return rows


def _drop_parts(store: ObjectStore, spec: ShardSpec) -> None:
    store.delete(store.list_keys(parts_prefix(store, spec)))


def _tally(result: ShardResult, rows: Iterable[ManifestRow]) -> None:
    for row in rows:
        result.tokens += 1
        if row.status == "ok":
            result.ok += 1
            result.bytes += row.bytes or 0
        else:
            result.failed[row.error_kind or "unknown"] += 1


class _Offload:
    """Runs blocking calls (boto3, DuckDB) on the shard's thread pool."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class _Checkpoint:
    """Buffers finished rows and writes them as a partial manifest every interval."""

    def __init__(self, store: ObjectStore, spec: ShardSpec, interval_s: float) -> None:
        self.store = store
        self.spec = spec
        self.interval_s = interval_s
        self.pending: list[ManifestRow] = []
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def add(self, row: ManifestRow, blocking: _Offload) -> None:
        self.pending.append(row)
        if time.monotonic() - self.last >= self.interval_s:
            await self.flush(blocking)

    async def flush(self, blocking: _Offload) -> None:
        async with self.lock:
            rows, self.pending = self.pending, []
            self.last = time.monotonic()
            if not rows:
                return
            # Time-ordered names: later parts win when a resumed run reads them.
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            key = parts_prefix(self.store, self.spec) + name
            await blocking(self.store.put, key, to_parquet(rows))
