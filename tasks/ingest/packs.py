"""A shard's blobs written in packs: a few large objects instead of one PUT per blob.

Small blobs (metadata JSON, pixel-art PNGs: most tokens) are appended to the
shard's open pack; the pack is written as one object just before the checkpoint
that first names it (tasks.ingest.blocks), so a manifest row never names bytes
that are not stored. A row names its blob by a reference, ``<pack key>#<offset>+
<length>`` (tasks.core.paths.blob_ref), read back with one ranged GET
(ObjectStore.read_blob).

Identical bytes are stored once:
- within a block, by digest: every token naming them shares one reference, and a
  rerun or a retried token starts from the digests the block's rows already name;
- across blocks and runs, above ``ALONE_BYTES``: such blobs are stored alone
  under their SHA-256 with a conditional PUT, as before packs. Below it, bytes
  repeated in two blocks are stored once per block: at most ``ALONE_BYTES`` each,
  the price of not asking the store about every small blob.

A run killed after writing a pack but before a checkpoint named it leaves the pack
unnamed; the block's next finish deletes such packs (``sweep``) once they are
older than the shard that finds them, so nothing is stored twice in the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from tasks.core import paths
from tasks.core.s3 import ObjectStore, StoredBlob

# Runs a blocking call (boto3) off the event loop.
Offload = Callable[..., Awaitable[Any]]

# Blobs this large are stored alone and content-addressed across the whole store:
# their PUT costs little next to their bytes, and a placeholder image repeated in
# every block of an unrevealed collection is stored once.
ALONE_BYTES = 256 * 1024
# An open pack this large is written at once, so a shard's memory stays bounded.
MAX_PACK_BYTES = 64 * 1024 * 1024


class PackWriter:
    """Collects one block's blobs into packs. Used from one event loop only."""

    def __init__(
        self,
        store: ObjectStore,
        contract: str,
        block: str,
        blocking: Offload,
        known: Iterable[tuple[str, str, int]] = (),
    ) -> None:
        """``known``: (sha256, reference, size) of blobs the block's rows already name."""
        self.store = store
        self.contract = contract
        self.block = block
        self._blocking = blocking
        self._known: dict[str, StoredBlob] = {
            digest: StoredBlob(ref, digest, size, created=False) for digest, ref, size in known
        }
        self._open_key = ""
        self._parts: list[bytes] = []
        self._size = 0
        self._writes: set[asyncio.Task[None]] = set()
        self.written: list[str] = []  # pack keys this writer stored

    async def add(self, data: bytes, content_type: str) -> StoredBlob:
        """Store bytes (or find them stored); where they are, for a manifest row."""
        digest = hashlib.sha256(data).hexdigest()
        found = self._known.get(digest)
        if found is not None:
            return found
        if len(data) >= ALONE_BYTES:
            blob: StoredBlob = await self._blocking(self.store.put_blob, data, content_type)
        else:
            blob = self._append(data, digest)
        # A second token with the same bytes, arriving while the first is stored, finds
        # them here; the alone-PUT is conditional, so a race stores them once anyway.
        self._known.setdefault(digest, replace(blob, created=False))
        if self._size >= MAX_PACK_BYTES:
            self._seal()
        return blob

    async def flush(self) -> None:
        """Write the open pack and wait for every pack write: after this, every
        reference handed out names stored bytes. A failed write raises."""
        self._seal()
        writes, self._writes = list(self._writes), set()
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def sweep(self, named: set[str], started_ns: int) -> list[str]:
        """Keys of the block's packs that no row names and that are older than this
        shard (left by a killed run): what the finished block may delete."""
        prefix = self.store.key(paths.pack_prefix(self.contract, self.block))
        stale = []
        for key in self.store.list_keys(prefix):
            stamp = key[len(prefix) :].split("-", 1)[0]
            if key not in named and stamp.isdigit() and int(stamp) < started_ns:
                stale.append(key)
        return stale

    def _append(self, data: bytes, digest: str) -> StoredBlob:
        if not self._open_key:
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            self._open_key = self.store.key(paths.pack(self.contract, self.block, name))
        ref = paths.blob_ref(self._open_key, self._size, len(data))
        self._parts.append(data)
        self._size += len(data)
        return StoredBlob(ref, digest, len(data), created=True)

    def _seal(self) -> None:
        """Start writing the open pack; later blobs go to a new one."""
        if not self._parts:
            return
        key, body = self._open_key, b"".join(self._parts)
        self._open_key, self._parts, self._size = "", [], 0
        task = asyncio.ensure_future(self._blocking(self.store.put, key, body))
        self._writes.add(task)
        self.written.append(key)


def pack_key_of(ref: str | None) -> str | None:
    """The pack a reference points into, or None for a plain key (or no reference)."""
    span = None if ref is None else paths.parse_blob_ref(ref)
    return None if span is None else span[0]
