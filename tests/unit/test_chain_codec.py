"""ChainReader's ABI codec, and what it records when a node is down or answers badly
(a loopback fake node; no anvil needed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_abi.abi import encode
from eth_abi.exceptions import EncodingError
from eth_hash.auto import keccak

from infra.process import free_port
from tasks.core.errors import ItemError
from tasks.ingest.chain import (
    ChainReader,
    StringTooLarge,
    decode_string,
    encode_call,
    match_replies,
)


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


Answer = Callable[[list[dict[str, Any]]], bytes]


@pytest.fixture
async def node() -> AsyncIterator[tuple[str, list[Answer]]]:
    """A loopback JSON-RPC endpoint that answers each batch with ``answers[0](batch)``."""
    answers: list[Answer] = []

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answers[0](await request.json()), content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/", answers
    await server.close()


def uri_of(n: int) -> str:
    return "0x" + encode(["string"], [f"ipfs://x/{n}"]).hex()


async def read_uris(node: tuple[str, list[Answer]], answer: Answer) -> list[str | ItemError]:
    url, answers = node
    answers[:] = [answer]
    async with ChainReader(url, batch_size=4, attempts=1) as reader:
        found = await reader.token_uris("0x" + "11" * 20, range(4))
    return [found[i] for i in range(4)]


def kinds(found: list[str | ItemError]) -> list[str]:
    return [f.kind if isinstance(f, ItemError) else f for f in found]


async def test_replies_are_matched_by_int_id_in_any_order(node: tuple[str, list[Answer]]) -> None:
    def shuffled(batch: list[dict[str, Any]]) -> bytes:
        return json.dumps(
            [{"id": c["id"], "result": uri_of(c["id"])} for c in batch[::-1]]
        ).encode()

    assert await read_uris(node, shuffled) == [f"ipfs://x/{i}" for i in range(4)]


async def test_ids_that_only_look_like_ours_answer_nothing(node: tuple[str, list[Answer]]) -> None:
    # true == 1 and 2.0 == 2 in Python; "3" is a string; 7 was never sent.
    def lookalikes(batch: list[dict[str, Any]]) -> bytes:
        ids: list[Any] = [0, True, 2.0, "3", 7]
        return json.dumps([{"id": i, "result": uri_of(9)} for i in ids]).encode()

    found = await read_uris(node, lookalikes)
    assert kinds(found) == ["ipfs://x/9", "rpc_error", "rpc_error", "rpc_error"]


async def test_a_call_answered_twice_is_an_rpc_error(node: tuple[str, list[Answer]]) -> None:
    def twice(batch: list[dict[str, Any]]) -> bytes:
        replies = [{"id": c["id"], "result": uri_of(c["id"])} for c in batch]
        return json.dumps([*replies, {"id": 2, "result": uri_of(8)}]).encode()

    found = await read_uris(node, twice)
    assert kinds(found) == ["ipfs://x/0", "ipfs://x/1", "rpc_error", "ipfs://x/3"]
    assert isinstance(found[2], ItemError) and "more than once" in found[2].message


@pytest.mark.parametrize(
    "reply",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"id": 0, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
        b"[" * 100_000,
        b'{"id": 0}',
        b"\xff\xfe",
    ],
    ids=["deep", "deep-result", "unbalanced", "not-a-batch", "not-utf8"],
)
async def test_hostile_reply_shapes_are_rpc_errors(
    node: tuple[str, list[Answer]], reply: bytes
) -> None:
    found = await read_uris(node, lambda batch: reply)
    assert kinds(found) == ["rpc_error"] * 4


def test_match_replies_ignores_non_objects() -> None:
    assert match_replies([None, 1, "x", [], {"id": 0, "result": "0x"}], 1) == {
        0: {"id": 0, "result": "0x"}
    }


@pytest.mark.parametrize("token_id", [0, 1, 3_000_000, 2**64 + 5, 2**256 - 1])
def test_a_uint256_call_encodes_as_eth_abi_does(token_id: int) -> None:
    expected = keccak(b"tokenURI(uint256)")[:4] + encode(["uint256"], [token_id])
    assert encode_call("tokenURI(uint256)", ["uint256"], [token_id]) == "0x" + expected.hex()


@pytest.mark.parametrize("bad", [-1, 2**256, True])
def test_values_outside_uint256_are_left_to_eth_abi(bad: int) -> None:
    with pytest.raises(EncodingError):
        encode_call("tokenURI(uint256)", ["uint256"], [bad])
