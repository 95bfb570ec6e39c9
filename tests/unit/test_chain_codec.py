"""ChainReader's ABI codec, and what it records when no node answers (no anvil needed)."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode

from infra.process import free_port
from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader, StringTooLarge, decode_string, encode_call


async def test_node_down_fails_every_token() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ChainReader(url, batch_size=2, attempts=2, backoff_s=0.01) as reader:
        uris = await reader.token_uris("0x" + "11" * 20, range(5))
        assert reader.round_trips == 3 * 2
    for uri in uris.values():
        assert isinstance(uri, ItemError) and uri.kind == "rpc_error" and uri.retryable


def test_encode_call() -> None:
    assert encode_call("tokenURI(uint256)", ["uint256"], [1]) == "0xc87b56dd" + "00" * 31 + "01"
    assert encode_call("totalSupply()", [], []) == "0x18160ddd"


def test_decode_string() -> None:
    assert decode_string("0x" + encode(["string"], ["ipfs://x/1"]).hex()) == "ipfs://x/1"
    assert decode_string("0x" + encode(["string"], [""]).hex()) == ""
    assert decode_string("0x" + b"MKR".ljust(32, b"\0").hex()) == "MKR"  # bytes32 name
    with pytest.raises(StringTooLarge):
        decode_string("0x" + encode(["string"], ["a" * 100]).hex(), max_bytes=50)
    for garbage in ("0x", "0x1234", "nothex", "0x" + encode(["bytes"], [b"\xff"]).hex()):
        with pytest.raises(ValueError):
            decode_string(garbage)
