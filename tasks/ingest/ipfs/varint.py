"""Unsigned LEB128 varints, shared by multiformats, protobuf and CAR framing.

Decoding is bounded because the bytes come from gateways we do not trust.
"""

from __future__ import annotations

MULTIFORMATS_MAX_BYTES = 9  # the multiformats spec caps varints at 63 bits
PROTOBUF_MAX_BYTES = 10  # a protobuf uint64


def encode(value: int) -> bytes:
    """The varint encoding of a non-negative integer."""
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode(
    buf: bytes | memoryview, pos: int, max_bytes: int = MULTIFORMATS_MAX_BYTES
) -> tuple[int, int]:
    """Read one varint at ``pos``; return (value, position after it). ValueError if malformed."""
    value = 0
    shift = 0
    end = min(len(buf), pos + max_bytes)
    i = pos
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            if byte == 0 and i - pos > 1:
                raise ValueError("varint is not minimally encoded")
            return value, i
        shift += 7
    raise ValueError("varint truncated or too long")
