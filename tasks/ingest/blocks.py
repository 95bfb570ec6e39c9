"""Ingest one shard (the requested ids of one manifest block): the unit Dask runs.

Manifests are keyed by absolute blocks of BLOCK token ids (block k holds ids
[k*BLOCK, (k+1)*BLOCK)), never by a run's range or shard_size: runs over
overlapping ranges, or with another shard_size, find and extend the same
manifest, so no token is fetched twice or sits in two manifests. A shard is the
requested ids inside one block, and the only task of its run that writes that
block's manifest, so parallel tasks never race on a key. A block is therefore
the largest unit of parallelism; a shard_size below it cannot add tasks and
instead sets the step: the shard reads tokenURIs and downloads `step` ids at a
time, one step after another.

Progress is checkpointed as small partial manifests every few seconds, so a
killed run resumes where it stopped; the finished shard rewrites its block's
manifest with every row known so far (rows outside the requested ids are kept
as earlier runs left them). Tokens already done (stored, or failed for good) are
never fetched again: a rerun over an ingested collection sends no HTTP request.
The one exception is asked for: ``refetch_placeholders`` fetches again the tokens
that show the block's placeholder image (a re-ingest after a reveal).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.core import paths
from tasks.core.errors import ItemError
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.chain import ChainReader
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.manifest import ManifestRow, from_parquet, to_parquet
from tasks.ingest.packs import PackWriter, pack_key_of
from tasks.ingest.sources import read_token_uris
from tasks.ingest.summary import PLACEHOLDER_RUN, PLACEHOLDER_SHARE
from tasks.ingest.token import TokenContext, ingest_token
from tasks.ingest.token_source import ERC721, TokenSource

T = TypeVar("T")

# Token ids per manifest. Fixed, not a setting: manifests written with another
# block size would overlap these and hold tokens twice.
BLOCK = 1000
_STORE_THREADS = 4


@dataclass(frozen=True)
class BlockSpec:
    """The requested ids [first, end) inside one manifest block."""

    collection: str
    contract: str  # lowercase 0x address
    first: int  # first token id
    end: int  # one past the last token id
    step: int = BLOCK  # ids read and downloaded together, one step after another
    source: TokenSource = ERC721  # how the collection's token URIs are read
    # The ids known to exist in [first, end), when the plan found them (sparse ids:
    # enumerable or log-listed collections); None: every id of the range.
    only: tuple[int, ...] | None = None
    # Fetch again the stored tokens that show the block's placeholder image (a
    # re-ingest after a reveal); otherwise a stored token is never fetched again.
    refetch_placeholders: bool = False

    def __post_init__(self) -> None:
        # Ids of another block would land in this block's manifest: a token twice.
        if self.first >= self.end or self.first // BLOCK != (self.end - 1) // BLOCK:
            raise ValueError(f"ids {self.first}..{self.end - 1} are not inside one block")
        if self.step < 1:
            raise ValueError(f"step must be at least 1, not {self.step}")
        if self.only is not None and not all(self.first <= i < self.end for i in self.only):
            raise ValueError(f"listed ids fall outside {self.first}..{self.end - 1}")

    @property
    def token_ids(self) -> Sequence[int]:
        """The ids this shard ingests, in order."""
        return range(self.first, self.end) if self.only is None else sorted(set(self.only))

    @property
    def block(self) -> int:
        """The first id of the manifest block."""
        return self.first - self.first % BLOCK

    @property
    def name(self) -> str:
        return f"shard-{self.block}-{self.block + BLOCK - 1}"


@dataclass
class IngestResult:
    collection: str
    contract: str
    tokens: int = 0  # requested ids only, not the block's other rows
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error kind
    skipped: int = 0  # already done by an earlier run
    bytes: int = 0  # image bytes of the shard's ok tokens
    new_bytes: int = 0  # bytes this run wrote to the store
    http_requests: int = 0
    rpc_round_trips: int = 0
    seconds: float = 0.0

    def merge(self, other: IngestResult) -> None:
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


def plan_blocks(
    collection: str,
    contract: str,
    ids: Sequence[int],
    shard_size: int,
    max_tokens: int | None = None,
    source: TokenSource = ERC721,
) -> list[BlockSpec]:
    """One shard per block the ids touch, clipped to the ids; refuse more than max_tokens.

    `ids` is a range, or the sorted distinct ids the plan found (sparse collections):
    then each shard lists its block's ids in `only`, unless they fill its span.
    """
    if isinstance(ids, range):
        count = max(0, ids.stop - ids.start)  # len() overflows past 2**63
        first, last = ids.start, ids.stop - 1
    else:
        count = len(ids)
        first, last = (ids[0], ids[-1]) if ids else (0, -1)
    if max_tokens is not None and count > max_tokens:
        raise ValueError(
            f"{collection}: {count} token ids ({first}..{last}) exceed "
            f"max_tokens_per_collection={max_tokens}; name an explicit range, e.g. "
            f"'{contract}:{first}-{first + 9999}'"
        )
    if count == 0:
        return []
    step = min(shard_size, BLOCK)
    if isinstance(ids, range):
        return [
            BlockSpec(
                collection, contract, max(b, ids.start), min(b + BLOCK, ids.stop), step, source
            )
            for b in range(ids.start - ids.start % BLOCK, ids.stop, BLOCK)
        ]
    by_block: dict[int, list[int]] = {}
    for i in ids:
        by_block.setdefault(i - i % BLOCK, []).append(i)
    specs = []
    for listed in by_block.values():
        dense = listed[-1] - listed[0] + 1 == len(listed)
        only = None if dense else tuple(listed)
        specs.append(BlockSpec(collection, contract, listed[0], listed[-1] + 1, step, source, only))
    return specs


def manifest_key(store: ObjectStore, spec: BlockSpec) -> str:
    return store.key(paths.manifest(spec.contract, spec.name))


def parts_prefix(store: ObjectStore, spec: BlockSpec) -> str:
    return store.key(paths.manifest_parts(spec.contract, spec.name))


def ingest_block(spec: BlockSpec, settings: Settings) -> IngestResult:
    """Ingest a shard to completion (synchronous entry point for Dask workers)."""
    try:
        return asyncio.run(_run_shard(spec, settings))
    except ExceptionGroup as group:
        # Task groups wrap the failure that stopped the shard; Prefect and the flow's
        # summary should name that failure, not "unhandled errors in a TaskGroup".
        raise _first_error(group) from None


async def _run_shard(spec: BlockSpec, settings: Settings) -> IngestResult:
    started, started_ns = time.monotonic(), time.time_ns()
    store = ObjectStore(settings)
    wanted = spec.token_ids
    # Few blocking calls remain per shard (a pack or a checkpoint every few seconds,
    # large blobs): a small pool, so boto3 threads do not fight the event loop for the GIL.
    with ThreadPoolExecutor(max_workers=_STORE_THREADS) as pool:
        blocking = _Offload(pool)
        found = await blocking(load_rows, store, spec)
        rows = found.rows
        todo = [i for i in wanted if i not in rows or not rows[i].done]
        # Placeholder rows asked for again are kept unless the new fetch succeeds.
        again = placeholder_ids(rows, wanted) if spec.refetch_placeholders else []
        before = {i: rows[i] for i in again}
        todo = sorted({*todo, *again})
        result = IngestResult(spec.collection, spec.contract, skipped=len(wanted) - len(todo))
        packs = PackWriter(store, spec.contract, spec.name, blocking, _stored_blobs(rows.values()))
        checkpoint = _Checkpoint(store, spec, blocking, packs)
        if todo:
            rows.update(
                await _ingest_tokens(spec, settings, blocking, packs, checkpoint, todo, result)
            )
            rows.update((i, old) for i, old in before.items() if rows[i].status != "ok")
        # A shard is finished by its manifest; a run killed after its last checkpoint
        # (all rows in parts, no manifest yet) is finished here without fetching anything.
        if todo or found.unfinished:
            final = [rows[i] for i in sorted(rows)]
            await blocking(_put_rows, store, manifest_key(store, spec), final)
            named = {pack_key_of(r.metadata_key) for r in final} | {
                pack_key_of(r.image_key) for r in final
            }
            stale = await blocking(packs.sweep, named, started_ns)
            await blocking(store.delete, [*found.parts, *checkpoint.written, *stale])
    _tally(result, (rows[i] for i in wanted))
    result.seconds = time.monotonic() - started
    return result


async def _ingest_tokens(
    spec: BlockSpec,
    settings: Settings,
    blocking: _Offload,
    packs: PackWriter,
    checkpoint: _Checkpoint,
    todo: list[int],
    result: IngestResult,
) -> dict[int, ManifestRow]:
    """Read tokenURIs and ingest tokens concurrently, a step at a time.

    An object-store failure in one token cancels the others at once: the shard fails
    fast and its retry resumes from the checkpoints.
    """
    rows: dict[int, ManifestRow] = {}
    slots = asyncio.Semaphore(settings.concurrency)
    async with (
        ChainReader(settings.rpc_url, settings.rpc_batch_size) as chain,
        SafeFetcher(settings) as fetcher,
    ):
        ctx = TokenContext(settings, fetcher, packs.add, spec.collection, spec.contract)

        async def one(token_id: int, uri: str | ItemError) -> None:
            async with slots:
                rows[token_id] = await ingest_token(ctx, token_id, uri)
            checkpoint.add(rows[token_id])

        try:
            async with checkpoint.on_timer(settings.checkpoint_interval_s):
                for at in range(0, len(todo), spec.step):
                    part = todo[at : at + spec.step]
                    uris = await read_token_uris(chain, spec.contract, spec.source, part)
                    async with asyncio.TaskGroup() as group:
                        for i in part:
                            group.create_task(one(i, uris[i]))
        finally:
            # Shared image downloads live outside the group; stop them before the
            # session closes under them.
            await _cancel(ctx.images.values())
    result.rpc_round_trips = chain.round_trips
    result.http_requests = fetcher.requests
    result.new_bytes = ctx.bytes_new
    return rows


@dataclass(frozen=True)
class StoredRows:
    """What earlier runs left of a block: its rows, whether it has a manifest, its parts."""

    rows: dict[int, ManifestRow]
    has_manifest: bool
    parts: list[str]  # checkpoint part keys

    @property
    def unfinished(self) -> bool:
        """No manifest yet, or checkpoint parts left behind by a killed run."""
        return not self.has_manifest or bool(self.parts)


def load_rows(store: ObjectStore, spec: BlockSpec) -> StoredRows:
    """The block's rows from earlier runs: its manifest, then newer checkpoint parts."""
    rows: dict[int, ManifestRow] = {}
    final = store.get(manifest_key(store, spec))
    if final is not None:
        rows.update((int(r.token_id), r) for r in from_parquet(final))
    parts = sorted(store.list_keys(parts_prefix(store, spec)))
    for key in parts:
        data = store.get(key)
        if data is not None:
            rows.update((int(r.token_id), r) for r in from_parquet(data))
    return StoredRows(rows, final is not None, parts)


def placeholder_ids(rows: dict[int, ManifestRow], wanted: Sequence[int]) -> list[int]:
    """The stored tokens of ``wanted`` that show the block's placeholder: its most shown
    image, when at least PLACEHOLDER_SHARE of its stored tokens, or PLACEHOLDER_RUN of
    them anywhere in the block, show it. Looser than `nft1000 summary`'s collection
    rule (which wants a run of consecutive ids): refetching a few images that are
    really repeated costs a download each, missing a placeholder costs a wrong row."""
    shown = [(i, rows[i].sha256) for i in wanted if i in rows and rows[i].status == "ok"]
    counts = Counter(digest for _, digest in shown if digest)
    if not counts:
        return []
    digest, count = counts.most_common(1)[0]
    if count < 2 or (count < PLACEHOLDER_SHARE * len(shown) and count < PLACEHOLDER_RUN):
        return []
    return [i for i, d in shown if d == digest]


def _stored_blobs(rows: Iterable[ManifestRow]) -> list[tuple[str, str, int]]:
    """(sha256, reference, size) of every blob the rows name whose size is known: what
    a rerun or a retried token finds stored instead of storing it again."""
    found = []
    for row in rows:
        if row.sha256 and row.image_key and row.bytes is not None:
            found.append((row.sha256, row.image_key, row.bytes))
        span = paths.parse_blob_ref(row.metadata_key) if row.metadata_key else None
        if row.metadata_sha256 and row.metadata_key and span is not None:
            found.append((row.metadata_sha256, row.metadata_key, span[2]))
    return found


def _put_rows(store: ObjectStore, key: str, rows: list[ManifestRow]) -> None:
    store.put(key, to_parquet(rows))


def _tally(result: IngestResult, rows: Iterable[ManifestRow]) -> None:
    for row in rows:
        result.tokens += 1
        if row.status == "ok":
            result.ok += 1
            result.bytes += row.bytes or 0
        else:
            result.failed[row.error_kind or "unknown"] += 1


def _first_error(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks still running and wait until they have stopped."""
    running = [t for t in tasks if not t.done()]
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)


class _Offload:
    """Runs blocking calls (boto3, DuckDB) on the shard's thread pool."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


class _Checkpoint:
    """Buffers finished rows and writes them as partial manifests; keeps their keys.

    The packs holding their blobs are written first, so no stored row names bytes
    that are not stored.
    """

    def __init__(
        self, store: ObjectStore, spec: BlockSpec, blocking: _Offload, packs: PackWriter
    ) -> None:
        self.store = store
        self.spec = spec
        self.blocking = blocking
        self.packs = packs
        self.pending: list[ManifestRow] = []
        self.written: list[str] = []

    def add(self, row: ManifestRow) -> None:
        self.pending.append(row)

    @asynccontextmanager
    async def on_timer(self, interval_s: float) -> AsyncIterator[None]:
        """Flush every interval while the body runs, then the rest when it ends.

        On a timer, not on a row finishing: behind a slow tail, rows finished long
        ago would otherwise wait unflushed and be lost to a kill. A failed flush
        cancels the body.
        """
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._tick(stop, interval_s))
            try:
                yield
            finally:
                stop.set()  # the ticker ends after any flush in progress
        await self.flush()

    async def _tick(self, stop: asyncio.Event, interval_s: float) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                await self.flush()
            else:
                return

    async def flush(self) -> None:
        rows, self.pending = self.pending, []
        if not rows:
            return
        await self.packs.flush()  # after taking the rows: every blob they name is in it
        # Time-ordered names: later parts win when a resumed run reads them.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        key = parts_prefix(self.store, self.spec) + name
        await self.blocking(_put_rows, self.store, key, rows)
        self.written.append(key)
