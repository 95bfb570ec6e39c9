"""Reading UnixFS DAGs: resolve a path through directories and HAMT shards, assemble a file.

Shared by the verifier (blocks from an untrusted CAR) and the demo gateway
(blocks from its own store); each passes a ``get`` that turns a CID into a
decoded node and decides what a missing block means. Every loop is bounded:
a hostile DAG can reuse one block many times.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasks.ingest.ipfs import dagpb, hamt
from tasks.ingest.ipfs.cid import CID, DAG_PB, IDENTITY, RAW
from tasks.ingest.ipfs.dagpb import PBLink, UnixFSData

MIN_VISIT_BUDGET = 1024
BYTES_PER_VISIT = 64  # a file may need one node per 64 bytes before we call it a bomb


class UnixFSError(ValueError):
    """A block that is not the UnixFS we expect (malformed, wrong type, unsupported)."""


class PathNotFound(LookupError):
    """A path segment names no entry in its directory."""


class FileTooLarge(ValueError):
    """The file is (or declares to be) bigger than the caller's limit."""


@dataclass(frozen=True)
class Node:
    """A decoded block: raw bytes, or dag-pb links plus UnixFS metadata."""

    cid: CID
    raw: bytes | None = None
    links: tuple[PBLink, ...] = ()
    unixfs: UnixFSData | None = None

    @property
    def is_directory(self) -> bool:
        return self.unixfs is not None and self.unixfs.type in (
            dagpb.TYPE_DIRECTORY,
            dagpb.TYPE_HAMT_SHARD,
        )

    @functools.cached_property
    def entries(self) -> dict[str, CID]:
        """Link name to CID, the first link of a name winning: built once per node, so a
        cached directory of 10,000 files answers each token's lookup at once."""
        found: dict[str, CID] = {}
        for link in self.links:
            found.setdefault(link.name, link.cid)
        return found


Getter = Callable[[CID], Node]


def inline_block(cid: CID) -> bytes | None:
    """The block an identity CID carries inside itself, else None."""
    return cid.digest if cid.hash_code == IDENTITY else None


def decode(cid: CID, block: bytes, max_links: int | None = None) -> Node:
    """Decode a block by its CID's codec (raw or dag-pb with UnixFS Data), with at most
    ``max_links`` links (UnixFSError past it)."""
    if cid.codec == RAW:
        return Node(cid, raw=block)
    if cid.codec != DAG_PB:
        raise UnixFSError(f"{cid}: unsupported codec 0x{cid.codec:x}")
    try:
        pb = dagpb.decode_node(block, max_links)
        if pb.data is None:
            raise UnixFSError(f"{cid}: dag-pb node without UnixFS Data")
        return Node(cid, links=pb.links, unixfs=dagpb.decode_unixfs(pb.data))
    except dagpb.DecodeError as e:
        raise UnixFSError(f"{cid}: {e}") from None


def split_path(path: str) -> list[str]:
    """Path segments; empty segments (leading, trailing or doubled slashes) are dropped."""
    return [segment for segment in path.split("/") if segment]


def resolve(get: Getter, root: CID, segments: Sequence[str]) -> tuple[CID, list[CID]]:
    """Follow ``segments`` from ``root``; return the target CID and every block traversed."""
    traversed: list[CID] = []
    cid = root
    for segment in segments:
        node = get(cid)
        traversed.append(cid)
        fs = node.unixfs
        if fs is not None and fs.type == dagpb.TYPE_DIRECTORY:
            found = node.entries.get(segment)
            if found is None:
                raise PathNotFound(f"{segment!r} not in directory {cid}")
            cid = found
        elif fs is not None and fs.type == dagpb.TYPE_HAMT_SHARD:
            cid = _hamt_find(get, node, segment, traversed)
        else:
            raise PathNotFound(f"{segment!r}: {cid} is not a directory")
    return cid, traversed


def _fanout(node: Node) -> int:
    fs = node.unixfs
    if fs is None or fs.type != dagpb.TYPE_HAMT_SHARD:
        raise UnixFSError(f"{node.cid}: expected a HAMT shard")
    if fs.hash_type != hamt.MURMUR3_X64_64 or fs.fanout is None or not hamt.valid_fanout(fs.fanout):
        raise UnixFSError(f"{node.cid}: unsupported HAMT hash {fs.hash_type} or fanout {fs.fanout}")
    return fs.fanout


def _hamt_find(get: Getter, node: Node, name: str, traversed: list[CID]) -> CID:
    key = hamt.name_hash(name)
    depth = 0
    while True:
        fanout = _fanout(node)
        pad = hamt.prefix_len(fanout)
        try:
            label = f"{hamt.slot(key, depth, fanout):0{pad}X}"
        except ValueError as e:
            raise UnixFSError(f"{node.cid}: {e}") from None
        child: CID | None = None
        entry = label + name
        for link in node.links:
            if link.name == label:
                child = link.cid
            elif link.name == entry:
                return link.cid
        if child is None:
            raise PathNotFound(f"{name!r} not in sharded directory")
        node = get(child)
        traversed.append(child)
        depth += 1


def _file_unixfs(node: Node) -> UnixFSData:
    fs = node.unixfs
    if fs is None or fs.type not in (dagpb.TYPE_FILE, dagpb.TYPE_RAW):
        kind = "directory" if node.is_directory else "non-file"
        raise UnixFSError(f"{node.cid}: is a {kind} node")
    return fs


def declared_size(node: Node) -> int:
    """The file size a node claims, before we fetch any child.

    A dag-pb file node must be self-consistent: one blocksize per link, and a
    filesize (when given) equal to its own data plus the blocksizes.
    """
    if node.raw is not None:
        return len(node.raw)
    fs = _file_unixfs(node)
    if len(fs.blocksizes) != len(node.links):
        raise UnixFSError(
            f"{node.cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes"
        )
    size = len(fs.data or b"") + sum(fs.blocksizes)
    if fs.filesize is not None and fs.filesize != size:
        raise UnixFSError(f"{node.cid}: filesize {fs.filesize} but its parts hold {size}")
    return size


def read_file(get: Getter, cid: CID, max_bytes: int) -> bytes:
    """The bytes of the file at ``cid``; FileTooLarge past ``max_bytes`` (declared or actual).

    The root's declared size is checked before any child is fetched, each child
    must declare exactly the size its parent gives it, and every link followed
    counts against a budget set by that size: a DAG that links one block many
    times costs at most the budget, never more than its declared bytes.
    """
    root = get(cid)
    size = declared_size(root)
    if size > max_bytes:
        raise FileTooLarge(f"{cid} declares {size} bytes, limit is {max_bytes}")
    budget = MIN_VISIT_BUDGET + size // BYTES_PER_VISIT
    out = bytearray()
    # Depth first: a node's own data, then its children in order; each with the size
    # its parent declared for it.
    stack: list[tuple[CID, int]] = [(cid, size)]
    while stack:
        current, expected = stack.pop()
        node = get(current)
        if declared_size(node) != expected:
            raise UnixFSError(f"{current} declares {declared_size(node)} bytes, not {expected}")
        budget -= len(node.links)
        if budget < 0:
            raise UnixFSError(f"{cid}: more links than a file of {size} bytes needs")
        out += _own_data(node)
        if len(out) > max_bytes:
            raise FileTooLarge(f"{cid} holds more than {max_bytes} bytes")
        sizes = node.unixfs.blocksizes if node.unixfs is not None else ()
        stack.extend(zip((link.cid for link in reversed(node.links)), reversed(sizes), strict=True))
    if len(out) != size:
        raise UnixFSError(f"{cid} declares {size} bytes but holds {len(out)}")
    return bytes(out)


def _own_data(node: Node) -> bytes:
    if node.raw is not None:
        return node.raw
    return _file_unixfs(node).data or b""


def entity_cids(get: Getter, cid: CID) -> list[CID]:
    """Every block of the entity at ``cid`` (a whole file; a directory's own node or shards)."""
    out: list[CID] = []
    seen: set[CID] = set()
    stack = [cid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        node = get(current)
        if inline_block(current) is None:
            out.append(current)
        fs = node.unixfs
        if fs is not None and fs.type == dagpb.TYPE_DIRECTORY:
            continue
        if fs is not None and fs.type == dagpb.TYPE_HAMT_SHARD:
            pad = hamt.prefix_len(_fanout(node))
            children = [link.cid for link in node.links if len(link.name) == pad]
        else:
            children = [link.cid for link in node.links]
        stack.extend(reversed(children))
    return out
