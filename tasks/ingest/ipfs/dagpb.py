"""dag-pb nodes and their UnixFS payload, encoded byte for byte as kubo writes them.

CIDs hash these bytes, so field order and presence matter: Links (field 2)
before Data (field 1); each link writes Hash, Name (even when empty) and
Tsize. Decoding is strict and bounded because blocks come from gateways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks.ingest.ipfs import varint
from tasks.ingest.ipfs.cid import CID

# UnixFS Data.Type values.
TYPE_RAW = 0
TYPE_DIRECTORY = 1
TYPE_FILE = 2
TYPE_HAMT_SHARD = 5

_VARINT = 0
_LEN = 2


class DecodeError(ValueError):
    """Bytes that are not a well-formed dag-pb node or UnixFS message."""


@dataclass(frozen=True)
class PBLink:
    cid: CID
    name: str
    tsize: int


@dataclass(frozen=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


@dataclass(frozen=True)
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None


def _tag(number: int, wire: int) -> bytes:
    return varint.encode(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _tag(number, _LEN) + varint.encode(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _tag(number, _VARINT) + varint.encode(value)


def encode_node(links: Sequence[PBLink], data: bytes) -> bytes:
    """A dag-pb block; links must already be in their final (name-sorted) order."""
    out = bytearray()
    for link in links:
        body = (
            _len_field(1, link.cid.to_bytes())
            + _len_field(2, link.name.encode("utf-8"))
            + _int_field(3, link.tsize)
        )
        out += _len_field(2, body)
    out += _len_field(1, data)
    return bytes(out)


def encode_unixfs(u: UnixFSData) -> bytes:
    """A UnixFS Data message, fields in number order as gogo-protobuf emits them."""
    out = bytearray(_int_field(1, u.type))
    if u.data is not None:
        out += _len_field(2, u.data)
    if u.filesize is not None:
        out += _int_field(3, u.filesize)
    for size in u.blocksizes:
        out += _int_field(4, size)
    if u.hash_type is not None:
        out += _int_field(5, u.hash_type)
    if u.fanout is not None:
        out += _int_field(6, u.fanout)
    return bytes(out)


def _fields(buf: bytes, max_fields: int | None = None) -> list[tuple[int, int, int | bytes]]:
    """Split a protobuf message into (field number, wire type, value); only varint and bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    try:
        while pos < len(buf):
            if max_fields is not None and len(out) >= max_fields:
                raise DecodeError(f"more than {max_fields} protobuf fields")
            key, pos = varint.decode(buf, pos, varint.PROTOBUF_MAX_BYTES)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise DecodeError("protobuf field number 0")
            if wire == _VARINT:
                value, pos = varint.decode(buf, pos, varint.PROTOBUF_MAX_BYTES)
                out.append((number, wire, value))
            elif wire == _LEN:
                length, pos = varint.decode(buf, pos, varint.PROTOBUF_MAX_BYTES)
                if pos + length > len(buf):
                    raise DecodeError("protobuf field runs past the end")
                out.append((number, wire, buf[pos : pos + length]))
                pos += length
            else:
                raise DecodeError(f"unsupported protobuf wire type {wire}")
    except ValueError as e:
        raise DecodeError(str(e)) from None
    return out


def decode_node(block: bytes, max_links: int | None = None) -> PBNode:
    """Parse a dag-pb block following the spec's strict rules (links first, no unknown fields).

    Decoding costs about 30 us per link, so callers bounding their work pass
    ``max_links``: past it, DecodeError before the links are decoded.
    """
    links: list[PBLink] = []
    data: bytes | None = None
    max_fields = None if max_links is None else max_links + 1  # the links, then Data
    for number, wire, value in _fields(block, max_fields):
        if number == 2 and wire == _LEN and isinstance(value, bytes):
            if data is not None:
                raise DecodeError("dag-pb Links after Data")
            links.append(_decode_link(value))
        elif number == 1 and wire == _LEN and isinstance(value, bytes) and data is None:
            data = value
        else:
            raise DecodeError(f"unexpected dag-pb field {number}")
    return PBNode(tuple(links), data)


def _decode_link(buf: bytes) -> PBLink:
    cid: CID | None = None
    name = ""
    tsize = 0
    seen: set[int] = set()
    for number, _wire, value in _fields(buf):
        if number in seen:
            raise DecodeError(f"repeated dag-pb link field {number}")
        seen.add(number)
        if number == 1 and isinstance(value, bytes):
            try:
                cid = CID.from_bytes(value)
            except ValueError as e:
                raise DecodeError(f"bad link CID: {e}") from None
        elif number == 2 and isinstance(value, bytes):
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("link name is not UTF-8") from None
        elif number == 3 and isinstance(value, int):
            tsize = value
        else:
            raise DecodeError(f"unexpected dag-pb link field {number}")
    if cid is None:
        raise DecodeError("dag-pb link without Hash")
    return PBLink(cid, name, tsize)


def decode_unixfs(buf: bytes) -> UnixFSData:
    """Parse UnixFS Data; unknown fields (mode, mtime, ...) are skipped."""
    values: dict[int, int | bytes] = {}
    blocksizes: list[int] = []
    for number, wire, value in _fields(buf):
        if number == 4:
            blocksizes.extend(_blocksizes(value))
        elif (number in (1, 3, 5, 6) and wire != _VARINT) or (number == 2 and wire != _LEN):
            raise DecodeError(f"UnixFS field {number} has the wrong wire type")
        else:
            values[number] = value
    typ = values.get(1)
    if not isinstance(typ, int):
        raise DecodeError("UnixFS Data without Type")

    def opt_int(n: int) -> int | None:
        v = values.get(n)
        return v if isinstance(v, int) else None

    data = values.get(2)
    return UnixFSData(
        type=typ,
        data=data if isinstance(data, bytes) else None,
        filesize=opt_int(3),
        blocksizes=tuple(blocksizes),
        hash_type=opt_int(5),
        fanout=opt_int(6),
    )


def _blocksizes(value: int | bytes) -> list[int]:
    if isinstance(value, int):
        return [value]
    out = []  # packed encoding, which other writers may use
    pos = 0
    try:
        while pos < len(value):
            size, pos = varint.decode(value, pos, varint.PROTOBUF_MAX_BYTES)
            out.append(size)
    except ValueError as e:
        raise DecodeError(str(e)) from None
    return out
