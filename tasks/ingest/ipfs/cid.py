"""Content identifiers (CIDv0 and CIDv1), parsed and printed exactly as kubo does.

A token URI names its content by CID; every check we make on IPFS data starts
from this value, so parsing is strict and rejects anything ambiguous.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

from tasks.ingest.ipfs import varint

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
IDENTITY = 0x00

MAX_TEXT_LEN = 4096  # longer CIDs are only ever huge identity hashes: refuse them
MAX_DIGEST_LEN = 2048

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def b58encode(data: bytes) -> str:
    """Bitcoin base58 (multibase 'z' and CIDv0)."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    zeros = len(text) - len(text.lstrip("1"))
    n = 0
    for ch in text:
        digit = _B58_INDEX.get(ch)
        if digit is None:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + digit
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase 'b')."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    if not set(text) <= _B32_CHARS:
        raise ValueError("invalid base32 character")
    if len(text) % 8 in (1, 3, 6):
        raise ValueError("invalid base32 length")
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error as e:
        raise ValueError(f"invalid base32: {e}") from None


def _split_multihash(mh: bytes) -> tuple[int, bytes]:
    code, pos = varint.decode(mh, 0)
    length, pos = varint.decode(mh, pos)
    if length > MAX_DIGEST_LEN or pos + length != len(mh):
        raise ValueError("multihash length does not match its digest")
    return code, mh[pos:]


@dataclass(frozen=True)
class CID:
    """A CID: version, content codec and multihash (hash code, length, digest)."""

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        code, digest = _split_multihash(self.multihash)
        if self.version == 0:
            if self.codec != DAG_PB or code != SHA2_256 or len(digest) != 32:
                raise ValueError("CIDv0 must be dag-pb with a 32-byte sha2-256 digest")
        elif self.version != 1:
            raise ValueError(f"unsupported CID version {self.version}")

    @property
    def hash_code(self) -> int:
        return _split_multihash(self.multihash)[0]

    @property
    def digest(self) -> bytes:
        return _split_multihash(self.multihash)[1]

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse CID text: v0 base58 ('Qm...'), or v1 in the multibases tokens use:
        base32 ('b...', 'B...'), base58btc ('z...'), base36 ('k...'), base16 ('f...')."""
        if not text or len(text) > MAX_TEXT_LEN:
            raise ValueError("CID text is empty or too long")
        if len(text) == 46 and text.startswith("Qm"):
            return cls(0, DAG_PB, b58decode(text))
        prefix, body = text[0], text[1:]
        if prefix in "bB":
            raw = b32decode(body.lower())
        elif prefix == "z":
            raw = b58decode(body)
        elif prefix == "k":
            raw = _b36decode(body)
        elif prefix == "f":
            raw = bytes.fromhex(body)
        else:
            raise ValueError(f"unsupported CID text {text[:16]!r}")
        cid = cls.from_bytes(raw)
        if cid.version == 0:
            raise ValueError("a CIDv0 must be written in bare base58")
        return cid

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        """Decode the binary form; the whole input must be one CID."""
        cid, end = cls.read(data, 0)
        if end != len(data):
            raise ValueError("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, data: bytes | memoryview, pos: int) -> tuple[CID, int]:
        """Decode a CID at ``pos`` inside a larger buffer; return it and the position after it."""
        if len(data) - pos >= 34 and data[pos] == SHA2_256 and data[pos + 1] == 32:
            return cls(0, DAG_PB, bytes(data[pos : pos + 34])), pos + 34
        version, p = varint.decode(data, pos)
        if version != 1:
            raise ValueError(f"unsupported CID version {version}")
        codec, p = varint.decode(data, p)
        mh_start = p
        _, p = varint.decode(data, p)
        length, p = varint.decode(data, p)
        if length > MAX_DIGEST_LEN or p + length > len(data):
            raise ValueError("CID digest truncated")
        return cls(1, codec, bytes(data[mh_start : p + length])), p + length

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return varint.encode(1) + varint.encode(self.codec) + self.multihash

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __str__(self) -> str:
        return self.text

    @functools.cached_property
    def text(self) -> str:
        """The CID's text (base58 for v0, base32 for v1), computed once: base58 is a
        pure-Python big-number loop, and each download names its CID twice."""
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def digest_matches(self, block: bytes) -> bool:
        """Whether ``block`` hashes to this CID; False for hash functions we cannot compute."""
        code, digest = _split_multihash(self.multihash)
        if code == SHA2_256:
            return hashlib.sha256(block).digest() == digest
        if code == IDENTITY:
            return block == digest
        return False

    @classmethod
    def for_block(cls, block: bytes, codec: int, version: int) -> CID:
        """The sha2-256 CID of a block we built ourselves."""
        mh = bytes([SHA2_256, 32]) + hashlib.sha256(block).digest()
        return cls(version, codec, mh)


def _b36decode(text: str) -> bytes:
    """Multibase base36 (lowercase); leading '0's stand for leading zero bytes."""
    if not text or text.strip("0123456789abcdefghijklmnopqrstuvwxyz"):
        raise ValueError("invalid base36")
    zeros = len(text) - len(text.lstrip("0"))
    number = int(text, 36)
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
