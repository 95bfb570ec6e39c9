"""Build UnixFS DAGs with the CIDs kubo's ``ipfs add`` prints (its default settings).

Why: the demo must publish content whose CIDs match real IPFS, and tests need
reference DAGs. Settings as in kubo (boxo balanced layout, profile
"unixfs-v0-2015"): 256 KiB fixed chunks, at most 174 links per file node,
dag-pb UnixFS leaves for CIDv0 and raw leaves for CIDv1, directory links sorted
by name bytes, and a HAMT once sum(len(name) + len(cid bytes)) >= 256 KiB.
The ``>=`` is what kubo 0.22 (our test reference) and older boxo do; boxo
since its IPIP-499 profiles uses ``>``, so only a directory at exactly 256 KiB differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

from tasks.ingest.ipfs import dagpb, hamt
from tasks.ingest.ipfs.cid import CID, DAG_PB, RAW
from tasks.ingest.ipfs.dagpb import PBLink, UnixFSData

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
HAMT_THRESHOLD = 256 * 1024

Tree: TypeAlias = Mapping[str, "bytes | Tree"]


class _Builder:
    """Collects the blocks of one import under one CID version."""

    def __init__(self, cid_version: int, raw_leaves: bool | None = None) -> None:
        if cid_version not in (0, 1):
            raise ValueError(f"unsupported CID version {cid_version}")
        self.version = cid_version
        # kubo: --cid-version=1 implies --raw-leaves unless told otherwise.
        self.raw_leaves = cid_version == 1 if raw_leaves is None else raw_leaves
        self.blocks: dict[CID, bytes] = {}

    def put(self, block: bytes, codec: int = DAG_PB) -> CID:
        cid = CID.for_block(block, codec, self.version)
        self.blocks[cid] = block
        return cid

    def file(self, data: bytes) -> tuple[CID, int]:
        """Store a file; return its root CID and Tsize (bytes of all its blocks)."""
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]
        level = [self._leaf(chunk) for chunk in chunks]
        # Grouping level by level gives the same tree as boxo's balanced layout:
        # every subtree is full except the rightmost, all leaves at one depth.
        while len(level) > 1:
            level = [
                self._file_node(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)
            ]
        cid, tsize, _ = level[0]
        return cid, tsize

    def _leaf(self, chunk: bytes) -> tuple[CID, int, int]:
        if self.raw_leaves:
            return self.put(chunk, RAW), len(chunk), len(chunk)
        data = dagpb.encode_unixfs(
            UnixFSData(dagpb.TYPE_FILE, data=chunk or None, filesize=len(chunk))
        )
        block = dagpb.encode_node([], data)
        return self.put(block), len(block), len(chunk)

    def _file_node(self, children: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        sizes = tuple(size for _, _, size in children)
        data = dagpb.encode_unixfs(
            UnixFSData(dagpb.TYPE_FILE, filesize=sum(sizes), blocksizes=sizes)
        )
        links = [PBLink(cid, "", tsize) for cid, tsize, _ in children]
        block = dagpb.encode_node(links, data)
        return self.put(block), len(block) + sum(link.tsize for link in links), sum(sizes)

    def directory(self, entries: Tree) -> tuple[CID, int]:
        links = []
        for name, value in entries.items():
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"invalid entry name {name!r}")
            if isinstance(value, bytes):
                cid, tsize = self.file(value)
            elif isinstance(value, Mapping):
                cid, tsize = self.directory(value)
            else:
                raise TypeError(f"entry {name!r} is neither bytes nor a mapping")
            links.append(PBLink(cid, name, tsize))
        estimate = sum(len(link.name.encode("utf-8")) + len(link.cid.to_bytes()) for link in links)
        if estimate >= HAMT_THRESHOLD:
            return hamt.build(links, self.put)
        links.sort(key=lambda link: link.name.encode("utf-8"))
        block = dagpb.encode_node(links, dagpb.encode_unixfs(UnixFSData(dagpb.TYPE_DIRECTORY)))
        return self.put(block), len(block) + sum(link.tsize for link in links)


def add_bytes(
    data: bytes, cid_version: int = 0, *, raw_leaves: bool | None = None
) -> tuple[CID, dict[CID, bytes]]:
    """The CID ``ipfs add [--cid-version=1] [--raw-leaves=…]`` gives ``data``, and every
    block of its DAG."""
    builder = _Builder(cid_version, raw_leaves)
    cid, _ = builder.file(data)
    return cid, builder.blocks


def add_directory(entries: Tree, cid_version: int = 0) -> tuple[CID, dict[CID, bytes]]:
    """The CID ``ipfs add -r folder`` prints for the folder (nested mappings are subfolders)."""
    builder = _Builder(cid_version)
    cid, _ = builder.directory(entries)
    return cid, builder.blocks
