"""HAMT-sharded UnixFS directories, laid out exactly as kubo (boxo) lays them out.

Kubo turns a directory into a HAMT once its links grow past 256 KiB, so a big
NFT folder (10,000 ``<id>.png``) is a HAMT; we need the same shape to get the
same CIDs and to find a name in a shard fetched from a gateway. Facts taken
from boxo's ``ipld/unixfs/hamt`` and ``go-bitfield``: murmur3-x64-64 (seed 0,
the first half of x64_128, big endian) of the name; each level consumes
log2(fanout) bits, most significant first; links are named by the slot index
in upper-case hex padded to ``len(hex(fanout - 1))`` characters, followed by
the entry name for values (a bare index names a child shard); the bitfield in
Data is the big-endian integer with bit ``i`` set per used slot, leading zero
bytes dropped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import mmh3

from tasks.ingest.ipfs import dagpb
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.dagpb import PBLink, UnixFSData

FANOUT = 256
MURMUR3_X64_64 = 0x22
HASH_BITS = 64


def name_hash(name: str) -> int:
    """The 64-bit HAMT key of an entry name."""
    h1, _ = mmh3.hash64(name.encode("utf-8"), seed=0, x64arch=True, signed=False)
    return int(h1)


def prefix_len(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def slot(key: int, depth: int, fanout: int) -> int:
    """The slot of ``key`` at ``depth``; ValueError once the 64 hash bits run out."""
    bits = fanout.bit_length() - 1
    shift = HASH_BITS - (depth + 1) * bits
    if shift < 0:
        raise ValueError("HAMT deeper than its hash allows")
    return (key >> shift) & (fanout - 1)


def valid_fanout(fanout: int) -> bool:
    """Powers of two that fill whole bitfield bytes, up to boxo's 1024 limit."""
    return 8 <= fanout <= 1024 and fanout & (fanout - 1) == 0


def build(entries: Sequence[PBLink], put: Callable[[bytes], CID]) -> tuple[CID, int]:
    """Store the shards for ``entries`` through ``put``; return the root CID and its Tsize."""
    keyed = [(name_hash(e.name), e) for e in entries]
    return _build(keyed, 0, put)


def _build(
    keyed: list[tuple[int, PBLink]], depth: int, put: Callable[[bytes], CID]
) -> tuple[CID, int]:
    slots: defaultdict[int, list[tuple[int, PBLink]]] = defaultdict(list)
    for key, entry in keyed:
        slots[slot(key, depth, FANOUT)].append((key, entry))
    pad = prefix_len(FANOUT)
    links: list[PBLink] = []
    bitfield = 0
    for index in sorted(slots):
        bitfield |= 1 << index
        group = slots[index]
        label = f"{index:0{pad}X}"
        if len(group) == 1:
            entry = group[0][1]
            links.append(PBLink(entry.cid, label + entry.name, entry.tsize))
        else:
            child, tsize = _build(group, depth + 1, put)
            links.append(PBLink(child, label, tsize))
    links.sort(key=lambda link: link.name.encode("utf-8"))
    bits = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big") or None
    data = dagpb.encode_unixfs(
        UnixFSData(dagpb.TYPE_HAMT_SHARD, data=bits, hash_type=MURMUR3_X64_64, fanout=FANOUT)
    )
    block = dagpb.encode_node(links, data)
    return put(block), len(block) + sum(link.tsize for link in links)
