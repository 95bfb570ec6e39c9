"""Turn a trustless-gateway CAR into verified file bytes.

The gateway is not trusted: every block we use is hashed against the CID that
links to it, starting from the root CID the token names, so the bytes we keep
are exactly the content the token points at, whichever gateway served them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from tasks.core.errors import ItemError
from tasks.ingest.ipfs import unixfs
from tasks.ingest.ipfs.car import read_car
from tasks.ingest.ipfs.cid import CID, SHA2_256
from tasks.ingest.ipfs.importer import add_bytes

# Decoded, already-verified directory nodes by multihash. Tokens of one collection
# share the directory (often HAMT) nodes above their files, so this saves decoding
# and hashing the same nodes for every token. Only verified blocks enter it, not
# huge ones, and it is bounded by their total size.
_VERIFIED_NODES: OrderedDict[bytes, tuple[unixfs.Node, int]] = OrderedDict()
_CACHE_MAX_BLOCK = 1024 * 1024  # kubo shards directories past 256 KiB
_CACHE_MAX_BYTES = 32 * 1024 * 1024
_cache_bytes = 0
_cache_lock = threading.Lock()  # a Dask worker may run shards in several threads
# Blocks in one gateway CAR: a 64 MiB file in kubo's 256 KiB chunks is about 260, and
# this allows 4 KiB chunks on average. Bounds parsing to about 0.5 s and 6 MB.
MAX_CAR_SECTIONS = 16_384
# Links decoded from one CAR's blocks (about 30 us each): a 50,000-entry unsharded
# directory (kubo before 0.12, blocks up to 2 MiB) plus a file's nodes fit.
MAX_CAR_LINKS = 100_000


def _cached(cid: CID) -> unixfs.Node | None:
    with _cache_lock:
        entry = _VERIFIED_NODES.get(cid.multihash)
        if entry is None:
            return None
        _VERIFIED_NODES.move_to_end(cid.multihash)
        return entry[0]


def _remember(cid: CID, node: unixfs.Node, size: int) -> None:
    global _cache_bytes
    if size > _CACHE_MAX_BLOCK:
        return
    with _cache_lock:
        if cid.multihash in _VERIFIED_NODES:
            return
        _VERIFIED_NODES[cid.multihash] = (node, size)
        _cache_bytes += size
        while _cache_bytes > _CACHE_MAX_BYTES:
            _, (_, dropped) = _VERIFIED_NODES.popitem(last=False)
            _cache_bytes -= dropped


class _NotCached(LookupError):
    """A directory node on the path has not been verified in this process yet."""


def resolve_from_cache(root: CID, path: str) -> CID | None:
    """The CID that ``root/path`` names, from verified directory nodes alone; None when
    a node on the way is not cached, the path is empty or does not resolve.

    Tokens of a collection share their directory: once one token's CAR verified it,
    the others' files are asked for by their own CIDs, and their CARs carry the file
    only, not the directory path again (14 KB against 0.6 KB for a small image).
    """
    segments = unixfs.split_path(path)
    if not segments:
        return None

    def get(cid: CID) -> unixfs.Node:
        node = _cached(cid)
        if node is None or node.cid.codec != cid.codec:
            raise _NotCached(str(cid))
        return node

    try:
        target, _ = unixfs.resolve(get, root, segments)
    except (_NotCached, unixfs.UnixFSError, unixfs.PathNotFound):
        return None
    return target


def file_from_car(car: bytes, root: CID, path: str, max_bytes: int) -> tuple[CID, bytes]:
    """Verify and assemble the file at ``root/path``; return its own CID and its bytes.

    ``path`` segments are entry names as stored (already percent-decoded).
    Raises ItemError: "cid_mismatch" (a block does not hash to its CID),
    "bad_car" (malformed CAR or DAG, missing block or entry), "too_large". What the
    gateway got wrong (a malformed CAR, a missing or wrong block) is retryable;
    what verified blocks say (a bad DAG, no such entry, too large) is not.
    """
    _, blocks = read_car(car, max_sections=MAX_CAR_SECTIONS)
    # Index by multihash: a gateway may label a block CIDv1 when we linked it as v0.
    by_hash = {cid.multihash: block for cid, block in blocks.items()}
    nodes: dict[CID, unixfs.Node] = {}
    links_left = MAX_CAR_LINKS

    def get(cid: CID) -> unixfs.Node:
        nonlocal links_left
        node = nodes.get(cid)
        if node is not None:
            return node
        directory = _cached(cid)
        if directory is not None and directory.cid.codec == cid.codec:
            return directory
        block = unixfs.inline_block(cid)
        if block is None:
            block = by_hash.get(cid.multihash)
            if block is None:
                raise ItemError("bad_car", f"block {cid} is missing from the CAR", retryable=True)
            if not cid.digest_matches(block):
                if cid.hash_code != SHA2_256:
                    raise ItemError(
                        "cid_mismatch", f"cannot verify hash 0x{cid.hash_code:x} of {cid}"
                    )
                # The gateway sent other bytes; the content behind the CID is still fine.
                raise ItemError("cid_mismatch", f"block does not hash to {cid}", retryable=True)
        node = nodes[cid] = unixfs.decode(cid, block, links_left)
        links_left -= len(node.links)
        if node.is_directory:
            _remember(cid, node, len(block))
        return node

    try:
        target, _ = unixfs.resolve(get, root, unixfs.split_path(path))
        return target, unixfs.read_file(get, target, max_bytes)
    except unixfs.FileTooLarge as e:
        raise ItemError("too_large", str(e), verified=True) from None
    except (unixfs.UnixFSError, unixfs.PathNotFound) as e:
        raise ItemError("bad_car", str(e), verified=True) from None  # the content's own fault


def file_from_raw(body: bytes, cid: CID, max_bytes: int) -> bytes:
    """``body`` if re-chunking it as kubo's ``ipfs add`` does gives ``cid``; for gateways
    that answer a CAR request with the file itself. Raises ItemError "cid_mismatch".

    Re-chunking proves only a file CID made with kubo's default settings (CIDv0, or
    CIDv1 with or without raw leaves); a file under a directory path cannot be proven
    this way, so callers ask for raw bytes by a file's own CID only.
    """
    if len(body) > max_bytes:
        raise ItemError("too_large", f"raw answer of {len(body)} bytes is over {max_bytes}")
    for version, raw_leaves in ((0, False), (1, True), (1, False)):
        if cid.version != version:
            continue
        built, _ = add_bytes(body, version, raw_leaves=raw_leaves)
        if built.multihash == cid.multihash and built.codec == cid.codec:
            return body
    raise ItemError("cid_mismatch", f"raw answer does not re-chunk to {cid}", retryable=True)
