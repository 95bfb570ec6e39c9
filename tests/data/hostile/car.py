"""CAR files and UnixFS DAGs from an untrusted gateway: wrong hashes, cuts, varints,
lying sizes, many links to one block, deep chains, HAMT shapes, odd codecs.

Most cases call ``file_from_car`` (the verifier download uses) on a CAR built
here block by block; the last few serve CARs from the loopback origin acting as
the only gateway, through ``download``. Each must end in cid_mismatch, bad_car or
too_large (or the exact honest bytes), fast and within memory, however the DAG
reuses blocks.
"""

# Case tables: one case a line reads better than wrapped calls.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Callable
from typing import Any

from tasks.ingest.download import download
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.ipfs import dagpb, varint
from tasks.ingest.ipfs.car import write_car
from tasks.ingest.ipfs.cid import CID, DAG_PB, IDENTITY, RAW
from tasks.ingest.ipfs.dagpb import PBLink, UnixFSData
from tasks.ingest.ipfs.hamt import MURMUR3_X64_64
from tasks.ingest.ipfs.importer import add_bytes, add_directory
from tasks.ingest.ipfs.verify import file_from_car
from tasks.ingest.uris import IpfsLocation
from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.http_behaviour import DEADLINE, drip
from tests.data.hostile.ingesting import settings, untouched
from tests.data.hostile.servers import Part, head, response
from tests.support.servers import corrupt_car

MAX = 1 << 20  # the file cap in these cases
METADATA, SYMLINK = 3, 4  # UnixFS types the verifier does not read
BAD = refused("bad_car", "cid_mismatch", "too_large")
# (car bytes, root, path, max bytes, the honest file bytes or None)
Input = tuple[bytes, CID, str, int, bytes | None]
Make = Callable[[], Input]


def _put(blocks: dict[CID, bytes], block: bytes, codec: int = DAG_PB) -> CID:
    cid = CID.for_block(block, codec, 1)
    blocks[cid] = block
    return cid


def _file_node(links: list[PBLink], sizes: list[int], filesize: int | None = None) -> bytes:
    total = sum(sizes) if filesize is None else filesize
    data = UnixFSData(dagpb.TYPE_FILE, filesize=total, blocksizes=tuple(sizes))
    return dagpb.encode_node(links, dagpb.encode_unixfs(data))


def _leaf_node(data: bytes, filesize: int | None = None) -> bytes:
    size = len(data) if filesize is None else filesize
    return dagpb.encode_node([], dagpb.encode_unixfs(UnixFSData(dagpb.TYPE_FILE, data, size)))


def _honest(data: bytes = b"hello hostile world\n" * 50, version: int = 0) -> Input:
    root, blocks = add_bytes(data, version)
    return write_car([root], blocks.items()), root, "", MAX, data


def _honest_dir() -> Input:
    root, blocks = add_directory({"a": {"b.png": b"png bytes" * 100}, "c.json": b"{}"}, 1)
    return write_car([root], blocks.items()), root, "a/b.png", MAX, b"png bytes" * 100


def _tampered() -> Input:
    root, blocks = add_bytes(b"x" * 600_000, 1)
    bad = [
        (c, b[:-1] + bytes([b[-1] ^ 1])) if c.codec == RAW else (c, b) for c, b in blocks.items()
    ]
    return write_car([root], bad), root, "", MAX, None


def _without(which: str) -> Input:
    root, blocks = add_bytes(b"y" * 600_000, 1)
    kept = [(c, b) for c, b in blocks.items() if (c != root) == (which == "root")]
    return write_car([root], kept), root, "", MAX, None


def _cut(at: float | int) -> Input:
    car, root, path, cap, _ = _honest(b"z" * 300_000, 1)
    end = int(len(car) * at) if isinstance(at, float) else at
    return car[:end], root, path, cap, None


def _header(raw_header: bytes, body: bytes = b"") -> Input:
    _, root, path, cap, _ = _honest()
    return varint.encode(len(raw_header)) + raw_header + body, root, path, cap, None


def _raw_prefix(prefix: bytes) -> Input:
    _, root, path, cap, _ = _honest()
    return prefix, root, path, cap, None


def _fan(width: int, levels: int, leaf: bytes = b"L" * 1024) -> Input:
    """A file whose every node links ``width`` times to the one node below it."""
    blocks: dict[CID, bytes] = {}
    cid = _put(blocks, leaf, RAW)
    size = len(leaf)
    for _ in range(levels):
        block = _file_node([PBLink(cid, "", size)] * width, [size] * width)
        size *= width
        cid = _put(blocks, block)
    return write_car([cid], blocks.items()), cid, "", MAX, None


def _fan_lying(width: int) -> Input:
    """Many links to one block, each declared 1 byte: the sizes lie to pass the cap."""
    blocks: dict[CID, bytes] = {}
    leaf = _put(blocks, b"L" * 4096, RAW)
    mid = _put(blocks, _file_node([PBLink(leaf, "", 1)] * width, [1] * width))
    root = _put(blocks, _file_node([PBLink(mid, "", width)] * width, [width] * width))
    return write_car([root], blocks.items()), root, "", MAX, None


def _chain(depth: int) -> Input:
    blocks: dict[CID, bytes] = {}
    cid = _put(blocks, b"end", RAW)
    for _ in range(depth):
        cid = _put(blocks, _file_node([PBLink(cid, "", 3)], [3]))
    return write_car([cid], blocks.items()), cid, "", MAX, b"end"


def _dir_chain(depth: int) -> Input:
    blocks: dict[CID, bytes] = {}
    cid = _put(blocks, b"deep file", RAW)
    empty_dir = dagpb.encode_unixfs(UnixFSData(dagpb.TYPE_DIRECTORY))
    for _ in range(depth):
        cid = _put(blocks, dagpb.encode_node([PBLink(cid, "d", 10)], empty_dir))
    path = "/".join(["d"] * depth)
    return write_car([cid], blocks.items()), cid, path, MAX, b"deep file"


def _wide_dir(count: int) -> Input:
    blocks: dict[CID, bytes] = {}
    file = _put(blocks, b"same file", RAW)
    links = sorted((PBLink(file, f"n{i:06d}", 9) for i in range(count)), key=lambda link: link.name)
    empty_dir = dagpb.encode_unixfs(UnixFSData(dagpb.TYPE_DIRECTORY))
    root = _put(blocks, dagpb.encode_node(links, empty_dir))
    return write_car([root], blocks.items()), root, f"n{count - 1:06d}", MAX, b"same file"


def _file_with(unixfs: UnixFSData, links: list[PBLink] | None = None, path: str = "") -> Input:
    blocks: dict[CID, bytes] = {}
    root = _put(blocks, dagpb.encode_node(links or [], dagpb.encode_unixfs(unixfs)))
    return write_car([root], blocks.items()), root, path, MAX, None


def _hamt(fanout: int, hash_type: int = MURMUR3_X64_64, names: tuple[str, ...] = ("FFx",)) -> Input:
    blocks: dict[CID, bytes] = {}
    file = _put(blocks, b"sharded", RAW)
    shard = UnixFSData(dagpb.TYPE_HAMT_SHARD, data=b"\xff" * 32, hash_type=hash_type, fanout=fanout)
    links = [PBLink(file, name, 7) for name in names]
    root = _put(blocks, dagpb.encode_node(links, dagpb.encode_unixfs(shard)))
    return write_car([root], blocks.items()), root, "x", MAX, None


def _hamt_self_loop_chain(depth: int) -> Input:
    """Shards nested ``depth`` deep under one label each: past 64 bits of hash, a bomb."""
    blocks: dict[CID, bytes] = {}
    leaf = _put(blocks, b"never", RAW)
    shard = UnixFSData(dagpb.TYPE_HAMT_SHARD, data=b"\xff" * 32, hash_type=MURMUR3_X64_64,
                       fanout=256)  # fmt: skip
    cid = _put(blocks, dagpb.encode_node([PBLink(leaf, "00other", 5)], dagpb.encode_unixfs(shard)))
    for _ in range(depth):
        labels = [PBLink(cid, f"{i:02X}", 5) for i in range(256)]
        cid = _put(blocks, dagpb.encode_node(labels, dagpb.encode_unixfs(shard)))
    return write_car([cid], blocks.items()), cid, "x", MAX, None


def _codec(codec: int) -> Input:
    blocks: dict[CID, bytes] = {}
    root = _put(blocks, b"\xa1aa\x01", codec)
    return write_car([root], blocks.items()), root, "", MAX, None


def _other_hash() -> Input:
    block = b"data under another hash"
    mh = varint.encode(0xB220) + varint.encode(32)
    root = CID(1, RAW, mh + hashlib.blake2b(block, digest_size=32).digest())
    return write_car([root], [(root, block)]), root, "", MAX, None


def _identity(size: int) -> Input:
    data = b"i" * size
    root = CID(1, RAW, varint.encode(IDENTITY) + varint.encode(size) + data)
    return write_car([root], []), root, "", MAX, data


def _many_sections(count: int) -> Input:
    car, root, path, cap, data = _honest()
    _, blocks = add_bytes(b"dup", 1)
    extra = b"".join(varint.encode(len(c.to_bytes()) + len(b)) + c.to_bytes() + b
                     for c, b in blocks.items()) * count  # fmt: skip
    return car + extra, root, path, cap, data


def _verify(env: Env, data: Input) -> bytes:
    car, root, path, cap, _ = data
    return file_from_car(car, root, path, cap)[1]


def _same(expected: bytes | None) -> Callable[[Any], str | None]:
    def check(result: bytes) -> str | None:
        if expected is not None and result == expected:
            return None
        return f"returned {len(result)} bytes that are not the honest file"

    return check


def _gateway(
    serve: Callable[[Env, Input], list[Part]], honest_second: bool = False
) -> Callable[[Env, Input], bytes]:
    """The origin as the gateway (a second, honest one after it if asked)."""

    def run(env: Env, data: Input) -> bytes:
        car, root, _, cap, _ = data
        first, second = f"/gw1-{id(serve)}", f"/gw2-{id(serve)}"
        gateways = [env.origin.url + first]
        env.origin.serve(f"{first}/ipfs/{root}", *serve(env, data))
        if honest_second:
            gateways.append(env.origin.url + second)
            env.origin.serve(f"{second}/ipfs/{root}", response(200, car))
        s = settings([env.origin.host_port], gateways)

        async def go() -> bytes:
            async with SafeFetcher(s) as fetcher:
                where = IpfsLocation(str(root), "")
                return (await download(where, fetcher, s.ipfs_gateways, cap)).data

        with untouched(env):
            return asyncio.run(go())

    return run


def _lying(env: Env, data: Input) -> list[Part]:
    return [response(200, corrupt_car(data[0]))]


def _gz_bomb(env: Env, data: Input) -> list[Part]:
    bomb = gzip.compress(bytes(16 << 20), 9)  # over the CAR cap of MAX + 10% + 4 MiB
    return [head(200, [("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb)))]), bomb]


def _inward(env: Env, data: Input) -> list[Part]:
    return [response(302, b"", [("Location", f"http://127.0.0.1:{env.sentinel.port}/x.car")])]


def cases() -> list[Case]:
    honest: dict[str, Make] = {
        "honest small file": lambda: _honest(),
        "honest 1 MiB file, raw leaves": lambda: _honest(b"r" * MAX, 1),
        "honest file in a directory": _honest_dir,
        "identity root of 1 kB": lambda: _identity(1024),
        "honest file after 100,000 duplicate sections": lambda: _many_sections(100_000),
        "file at the end of a chain of 2,000 nodes": lambda: _chain(2000),
        "path of 1,000 directories": lambda: _dir_chain(1000),
        "directory of 20,000 links to one file": lambda: _wide_dir(20_000),
    }
    bad: dict[str, tuple[Make, frozenset[str]]] = {
        "a block that does not hash to its CID": (_tampered, refused("cid_mismatch")),
        "root missing": (lambda: _without("root"), refused("bad_car")),
        "leaves missing": (lambda: _without("leaves"), refused("bad_car")),
        "cut inside the header": (lambda: _cut(5), refused("bad_car")),
        "cut after the header": (lambda: _cut(60), refused("bad_car")),
        "cut at 50%": (lambda: _cut(0.5), refused("bad_car")),
        "cut one byte short": (lambda: _cut(-1), refused("bad_car")),
        "header length varint of 2**63": (lambda: _raw_prefix(varint.encode(2**63) + b"\xa2"), refused("bad_car")),
        "eleven-byte varint": (lambda: _raw_prefix(b"\xff" * 10 + b"\x01"), refused("bad_car")),
        "non-minimal varint": (lambda: _raw_prefix(b"\x80\x00"), refused("bad_car")),
        "header is a list": (lambda: _header(b"\x82\x01\x02"), refused("bad_car")),
        "header version 2": (lambda: _header(b"\xa2eroots\x80gversion\x02"), refused("bad_car")),
        "header roots not CIDs": (lambda: _header(b"\xa2eroots\x81\x01gversion\x01"), refused("bad_car")),
        "header with indefinite lengths": (lambda: _header(b"\xbf\xff"), refused("bad_car")),
        "header nested 10,000 deep": (lambda: _header(b"\x81" * 10_000 + b"\x01"), refused("bad_car")),
        "header claims a list of 2**64-1": (lambda: _header(b"\x9b" + b"\xff" * 8), refused("bad_car")),
        "section length 2**63": (lambda: _honest_with(varint.encode(2**63)), refused("bad_car")),
        "section of 5 MiB": (lambda: _big_block(), refused("bad_car")),
        "1,000 links per level, 3 levels, to one block": (lambda: _fan(1000, 3), refused("too_large", "bad_car")),
        "174 links per level, 4 levels, to one block": (lambda: _fan(174, 4), refused("too_large", "bad_car")),
        "links to one block declared 1 byte each": (lambda: _fan_lying(1000), refused("bad_car", "too_large")),
        "filesize says 10, parts say more": (lambda: _file_with(UnixFSData(dagpb.TYPE_FILE, b"x" * 100, 10)), refused("bad_car")),
        "filesize 2**64-1": (lambda: _file_with(UnixFSData(dagpb.TYPE_FILE, None, 2**64 - 1)), refused("bad_car", "too_large")),
        "blocksizes without links": (lambda: _file_with(UnixFSData(dagpb.TYPE_FILE, None, 10, (5, 5))), refused("bad_car")),
        "chain of 20,000 nodes": (lambda: _chain(20_000), refused("bad_car", "too_large")),
        "symlink at the path": (lambda: _file_with(UnixFSData(SYMLINK, b"/etc/passwd")), refused("bad_car")),
        "metadata node": (lambda: _file_with(UnixFSData(METADATA, b"m")), refused("bad_car")),
        "directory where a file is expected": (lambda: _file_with(UnixFSData(dagpb.TYPE_DIRECTORY)), refused("bad_car")),
        "unknown unixfs type 99": (lambda: _file_with(UnixFSData(99, b"x")), refused("bad_car")),
        "path through a raw block": (lambda: (lambda i: (i[0], i[1], "a/b", i[3], None))(_honest(b"raw", 1)), refused("bad_car")),
        "name with a slash": (lambda: _file_with(UnixFSData(dagpb.TYPE_DIRECTORY), [PBLink(CID.for_block(b"q", RAW, 1), "a/b", 1)], "a/b"), refused("bad_car")),
        "dag-cbor root": (lambda: _codec(0x71), refused("bad_car")),
        "dag-json root": (lambda: _codec(0x0129), refused("bad_car")),
        "blake2b-256 CID": (_other_hash, refused("cid_mismatch", "bad_car")),
        "hamt fanout 3": (lambda: _hamt(3), refused("bad_car")),
        "hamt fanout 2**20": (lambda: _hamt(1 << 20), refused("bad_car")),
        "hamt fanout 0": (lambda: _hamt(0), refused("bad_car")),
        "hamt with sha256 names": (lambda: _hamt(256, 0x12), refused("bad_car")),
        "hamt with the entry under the wrong label": (lambda: _hamt(256, names=("00x", "01x")), refused("bad_car")),
        "hamt shards nested 70 deep": (lambda: _hamt_self_loop_chain(70), refused("bad_car")),
        "garbage protobuf": (lambda: _garbage_pb(), refused("bad_car")),
    }  # fmt: skip
    found: list[Case] = []
    for name, make in honest.items():
        # Honest but extreme shapes may also be refused as bad_car (caps on sections,
        # block size, links visited); what they may not do is return other bytes.
        found.append(Case(f"verify: {name}", _verify_honest, refused("bad_car"), make=make,
                          check=_matches, time_s=3.0, memory_mb=256))  # fmt: skip
    for name, (make, kinds) in bad.items():
        found.append(Case(f"verify: {name}", _verify, kinds, make=make, time_s=3.0,
                          memory_mb=128))  # fmt: skip
    small = lambda: _honest()  # noqa: E731
    found += [
        Case("gateway: honest", _gateway(lambda e, d: [response(200, d[0])]),
             check=_same(b"hello hostile world\n" * 50), make=small, time_s=2.0),
        Case("gateway: lies", _gateway(_lying), refused("cid_mismatch"), make=small),
        Case("gateway: lies, the second is honest", _gateway(_lying, honest_second=True),
             check=_same(b"hello hostile world\n" * 50), make=small),
        Case("gateway: html", _gateway(lambda e, d: [response(200, b"<html>hi</html>")]),
             refused("bad_car"), make=small),
        Case("gateway: gzip bomb", _gateway(_gz_bomb), refused("too_large", "bad_car"),
             make=small, memory_mb=96),
        Case("gateway: redirects inward", _gateway(_inward), refused("blocked_address"),
             make=small),
        Case("gateway: drips", _gateway(lambda e, d: [head(200, [("Content-Length", "999")]),
                                                      *drip(b"\x01" * 100, 0.1)]),
             refused("timeout"), make=small, time_s=DEADLINE),
        Case("gateway: redirect loop", _gateway(lambda e, d: [response(302, b"", [("Location", ".")])]),
             refused("http_status", "bad_car"), make=small),
    ]  # fmt: skip
    return found


def _verify_honest(env: Env, data: Input) -> tuple[bytes, bytes | None]:
    """The verified bytes beside the honest ones, for ``_matches``."""
    return _verify(env, data), data[4]


def _matches(result: tuple[bytes, bytes | None]) -> str | None:
    return _same(result[1])(result[0])


def _honest_with(section: bytes) -> Input:
    car, root, path, cap, _ = _honest()
    return car + section + b"\x01", root, path, cap, None


def _big_block() -> Input:
    blocks: dict[CID, bytes] = {}
    root = _put(blocks, b"B" * (5 << 20), RAW)
    return write_car([root], blocks.items()), root, "", 8 << 20, None


def _garbage_pb() -> Input:
    blocks: dict[CID, bytes] = {}
    root = _put(blocks, b"\x0d\x01\x02\x03\x04\x1b\xff\xff")
    return write_car([root], blocks.items()), root, "", MAX, None
