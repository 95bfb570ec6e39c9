"""CID parsing and printing: the canonical text kubo prints, and strict rejection of the rest."""

from __future__ import annotations

import hashlib

import pytest

from tasks.ingest.ipfs.cid import CID, DAG_PB, IDENTITY, RAW, SHA2_256, b58encode

# "Hello Worlds!\n" added by kubo (its sharness test t0040): CIDv0, and the same node as CIDv1.
V0 = "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"
# "base32 test\n": kubo prints this CIDv1 for `ipfs add --cid-base=base32` of a CIDv0 node.
V1_DAG_PB = "bafybeibyosqxljd2eptb4ebbtvk7pb4aoxzqa6ttdsflty6rsslz5y6i34"
V1_RAW_EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # raw leaf of b""


@pytest.mark.parametrize("text", [V0, V1_DAG_PB, V1_RAW_EMPTY])
def test_text_and_bytes_round_trip(text: str) -> None:
    cid = CID.parse(text)
    assert str(cid) == text
    assert CID.from_bytes(cid.to_bytes()) == cid
    assert CID.parse(str(cid)) == cid


def test_fields_of_known_cids() -> None:
    v0 = CID.parse(V0)
    assert (v0.version, v0.codec, v0.hash_code, len(v0.digest)) == (0, DAG_PB, SHA2_256, 32)
    assert v0.to_bytes() == v0.multihash  # a CIDv0 is its bare multihash
    raw = CID.parse(V1_RAW_EMPTY)
    assert (raw.version, raw.codec) == (1, RAW)
    assert raw.digest == hashlib.sha256(b"").digest()
    assert raw.digest_matches(b"")
    assert not raw.digest_matches(b"x")


def test_v0_and_v1_of_one_node_share_the_multihash() -> None:
    v1 = CID.parse(V1_DAG_PB)
    v0 = CID(0, DAG_PB, v1.multihash)
    assert str(v0).startswith("Qm") and len(str(v0)) == 46
    assert str(CID(1, DAG_PB, v0.multihash)) == V1_DAG_PB


def test_base58_multibase_is_accepted_and_printed_as_base32() -> None:
    v1 = CID.parse(V1_DAG_PB)
    z_text = "z" + b58encode(v1.to_bytes())
    assert CID.parse(z_text) == v1
    assert str(CID.parse(z_text)) == V1_DAG_PB


def test_read_reports_where_the_cid_ends() -> None:
    v1 = CID.parse(V1_RAW_EMPTY)
    v0 = CID.parse(V0)
    buf = b"xx" + v1.to_bytes() + v0.to_bytes() + b"tail"
    first, pos = CID.read(buf, 2)
    second, end = CID.read(buf, pos)
    assert (first, second, buf[end:]) == (v1, v0, b"tail")


def test_identity_cid_carries_its_block() -> None:
    cid = CID(1, RAW, bytes([IDENTITY, 5]) + b"hello")
    assert cid.digest_matches(b"hello")
    assert not cid.digest_matches(b"hellO")
    assert CID.parse(str(cid)) == cid


def test_unsupported_hash_never_matches() -> None:
    blake2b_256 = bytes([0xA0, 0xE4, 0x02, 32]) + hashlib.blake2b(b"x", digest_size=32).digest()
    cid = CID(1, RAW, blake2b_256)
    assert cid.hash_code == 0xB220
    assert not cid.digest_matches(b"x")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Qm",
        V0[:-1],  # too short for v0, not multibase either
        V0[:-1] + "0",  # '0' is not base58
        "f" + CID.parse(V1_DAG_PB).to_bytes().hex() + "g",  # not hex
        "k" + "!" * 40,  # not base36
        V1_DAG_PB[:-3],  # truncated digest
        V1_DAG_PB + "aa",  # trailing bytes
        "b" + "a" * 5000,
        "z" + V0,  # a CIDv0 must be bare base58
    ],
)
def test_malformed_text_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        CID.parse(text)


def _base36(data: bytes) -> str:
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 36)
        text = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + text
    return text


def test_other_multibases_name_the_same_cid() -> None:
    cid = CID.parse(V1_DAG_PB)
    raw = cid.to_bytes()
    for text in (
        V1_DAG_PB.upper(),
        "B" + V1_DAG_PB[1:].upper(),
        "f" + raw.hex(),
        "k" + _base36(raw),
    ):
        assert CID.parse(text) == cid, text


def test_invalid_binary_is_rejected() -> None:
    good = CID.parse(V1_DAG_PB).to_bytes()
    for bad in (b"", good[:-1], good + b"\0", b"\x02" + good[1:], b"\x01\x70\x12\xff"):
        with pytest.raises(ValueError):
            CID.from_bytes(bad)
    with pytest.raises(ValueError):
        CID(0, RAW, CID.parse(V0).multihash)  # CIDv0 is dag-pb only
