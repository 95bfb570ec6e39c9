"""CAR v1 files: how trustless gateways send IPFS blocks, and how the demo ships its content.

Layout: varint(header length) + dag-cbor ``{"roots": [CID...], "version": 1}``,
then sections of varint(len) + CID bytes + block. Reading is bounded: the
input comes from gateways, so no length or count is trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tasks.core.errors import ItemError
from tasks.ingest.ipfs import varint
from tasks.ingest.ipfs.cid import CID

MAX_HEADER_BYTES = 64 * 1024
MAX_BLOCK_BYTES = 4 * 1024 * 1024  # well above the 2 MiB blocks IPFS exchanges
_CID_TAG = 42
_MAX_CBOR_DEPTH = 4


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise ValueError("CBOR argument too large")


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def _cbor_cid(cid: CID) -> bytes:
    raw = b"\0" + cid.to_bytes()  # dag-cbor links carry a leading multibase-identity byte
    return _cbor_head(6, _CID_TAG) + _cbor_head(2, len(raw)) + raw


def write_car(roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]) -> bytes:
    """A CAR v1 with these roots and blocks, in the order given."""
    roots_item = _cbor_head(4, len(roots)) + b"".join(_cbor_cid(c) for c in roots)
    # dag-cbor orders map keys by length first: "roots" before "version".
    header = (
        _cbor_head(5, 2)
        + _cbor_text("roots")
        + roots_item
        + _cbor_text("version")
        + _cbor_head(0, 1)
    )
    out = bytearray(varint.encode(len(header)) + header)
    for cid, block in blocks:
        raw = cid.to_bytes()
        out += varint.encode(len(raw) + len(block)) + raw + block
    return bytes(out)


def read_car(data: bytes, *, max_sections: int | None = None) -> tuple[list[CID], dict[CID, bytes]]:
    """Parse a CAR v1; ItemError("bad_car") on anything malformed. Blocks are not verified here.

    Each section costs about 30 us and 330 bytes however small its block, so a CAR
    from a gateway passes ``max_sections``; None is for CARs this project wrote.
    """
    try:
        return _read(memoryview(data), max_sections)
    except ValueError as e:
        # The gateway's answer, not the content, is bad (cut short, say): ask again.
        raise ItemError("bad_car", f"malformed CAR: {e}", retryable=True) from None


def _read(buf: memoryview, max_sections: int | None) -> tuple[list[CID], dict[CID, bytes]]:
    header_len, pos = varint.decode(buf, 0)
    if header_len == 0 or header_len > MAX_HEADER_BYTES or pos + header_len > len(buf):
        raise ValueError("bad header length")
    header, end = _cbor_item(buf[: pos + header_len], pos, 0)
    if end != pos + header_len:
        raise ValueError("trailing bytes in header")
    roots = _header_roots(header)
    pos = end
    blocks: dict[CID, bytes] = {}
    sections = 0
    while pos < len(buf):
        sections += 1
        if max_sections is not None and sections > max_sections:
            raise ValueError(f"more than {max_sections} sections")
        section_len, pos = varint.decode(buf, pos)
        end = pos + section_len
        if section_len == 0 or end > len(buf):
            raise ValueError("empty or truncated section")
        cid, block_start = CID.read(buf[:end], pos)
        if end - block_start > MAX_BLOCK_BYTES:
            raise ValueError(f"block {cid} is larger than {MAX_BLOCK_BYTES} bytes")
        blocks.setdefault(cid, bytes(buf[block_start:end]))
        pos = end
    return roots, blocks


def _header_roots(header: object) -> list[CID]:
    if not isinstance(header, dict):
        raise ValueError("header is not a map")
    if header.get("version") != 1:
        raise ValueError(f"unsupported CAR version {header.get('version')!r}")
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise ValueError("header roots are not a list of CIDs")
    return roots


def _cbor_item(buf: memoryview, pos: int, depth: int) -> tuple[object, int]:
    """Decode the dag-cbor subset a CAR header uses: ints, strings, lists, maps, CIDs."""
    if depth > _MAX_CBOR_DEPTH or pos >= len(buf):
        raise ValueError("header too deep or truncated")
    major, info = buf[pos] >> 5, buf[pos] & 31
    pos += 1
    if info < 24:
        arg = info
    elif info <= 27:
        size = 1 << (info - 24)
        if pos + size > len(buf):
            raise ValueError("truncated header")
        arg = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    else:
        raise ValueError("indefinite or reserved CBOR item")
    if major == 0:
        return arg, pos
    if major in (2, 3):
        if pos + arg > len(buf):
            raise ValueError("truncated header string")
        raw = bytes(buf[pos : pos + arg])
        return (raw if major == 2 else raw.decode("utf-8")), pos + arg
    if major == 4:
        if arg > len(buf) - pos:
            raise ValueError("header list longer than the header")
        items = []
        for _ in range(arg):
            item, pos = _cbor_item(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if 2 * arg > len(buf) - pos:
            raise ValueError("header map longer than the header")
        out: dict[str, object] = {}
        for _ in range(arg):
            key, pos = _cbor_item(buf, pos, depth + 1)
            if not isinstance(key, str):
                raise ValueError("header map key is not a string")
            out[key], pos = _cbor_item(buf, pos, depth + 1)
        return out, pos
    if major == 6 and arg == _CID_TAG:
        link, pos = _cbor_item(buf, pos, depth + 1)
        if not isinstance(link, bytes) or link[:1] != b"\0":
            raise ValueError("bad CID in header")
        return CID.from_bytes(link[1:]), pos
    raise ValueError(f"unsupported CBOR item (major type {major})")
