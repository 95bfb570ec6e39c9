"""JSON-RPC replies from a hostile node, read by the chain reader's ``token_uris``.

The node answers a batch for tokens 1, 2 and 3 (request ids 0, 1, 2); most cases
corrupt the answer for token 2 only, and the other two must come through. Replies
are matched by exact integer id (``true`` is not 1), bounded in depth and size,
and a bad reply for one call costs that token an ItemError, never the batch.
"""

# Case tables: one case a line reads better than wrapped calls.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Sequence
from typing import Any

from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader, NotAContract
from tests.data.hostile.case import Case, Env
from tests.data.hostile.http_behaviour import drip
from tests.data.hostile.servers import Part, head, response, rpc

ADDRESS = "0x" + "cd" * 20
TOKENS = (1, 2, 3)
# A 3 MiB name is 6 MB of hex to read and check: seconds on a loaded 2-core machine.
FACTS_TIMEOUT_S = 4.0
Item = dict[str, Any]
Mutate = Callable[[list[Item]], Any]  # the honest reply items -> the body to send


def uri(token: int) -> str:
    return f"ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy/{token}"


def abi_string(text: str | bytes) -> str:
    """ABI encoding of a string result: offset, length, data padded to 32 bytes."""
    raw = text.encode() if isinstance(text, str) else text
    padded = raw + bytes(-len(raw) % 32)
    return "0x" + ((32).to_bytes(32, "big") + len(raw).to_bytes(32, "big") + padded).hex()


def _honest(payload: list[Item]) -> list[Item]:
    return [
        {"jsonrpc": "2.0", "id": r.get("id"), "result": abi_string(uri(TOKENS[n]))}
        for n, r in enumerate(payload)
    ]


def _abi(*words: int, tail: bytes = b"") -> str:
    return "0x" + b"".join(w.to_bytes(32, "big") for w in words).hex() + tail.hex()


def _read(path: str, mutate: Mutate, raw: bool = False) -> Callable[[Env, Any], dict[int, str]]:
    """Serve the mutated reply and read the three tokenURIs; each token's outcome."""

    def reply(payload: list[Item]) -> Sequence[Part] | bytes:
        body = mutate(_honest(payload))
        if raw:
            return body  # type: ignore[no-any-return]
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    def run(env: Env, data: Any) -> dict[int, str]:
        url = env.origin.route(path, rpc(reply))

        async def go() -> dict[int, str | ItemError]:
            async with ChainReader(url, 10, attempts=2, backoff_s=0.01, timeout_s=1.0) as reader:
                return await reader.token_uris(ADDRESS, list(TOKENS))

        found = asyncio.run(go())
        return {t: v.kind if isinstance(v, ItemError) else f"uri:{v}" for t, v in found.items()}

    return run


def expect(second: set[str], others: set[str] | None = None) -> Callable[[Any], str | None]:
    """Token 2 must end in one of ``second``; tokens 1 and 3 in ``others`` (their URIs)."""

    def check(result: dict[int, str]) -> str | None:
        wrong = []
        for token in TOKENS:
            allowed = second if token == 2 else others or {f"uri:{uri(token)}"}
            allowed = {f"uri:{uri(token)}" if a == "ok" else a for a in allowed}
            if result[token] not in allowed:
                wrong.append(f"token {token}: {result[token][:80]}")
        return "; ".join(wrong) or None

    return check


def _set(index: int, **fields: Any) -> Mutate:
    def mutate(items: list[Item]) -> list[Item]:
        items[index] = {**items[index], **fields}
        return items

    return mutate


def _drop_key(index: int, key: str, **fields: Any) -> Mutate:
    def mutate(items: list[Item]) -> list[Item]:
        item = {k: v for k, v in items[index].items() if k != key}
        items[index] = {**item, **fields}
        return items

    return mutate


def _deep(depth: int) -> Mutate:
    return lambda items: b"[" * depth + b"]" * depth


def _deep_in_second(depth: int) -> Mutate:
    def mutate(items: list[Item]) -> bytes:
        items[1]["result"] = "@"
        text = json.dumps(items)
        return text.replace('"@"', "[" * depth + "]" * depth).encode()

    return mutate


def _gzip_bomb(items: list[Item]) -> list[Part]:
    bomb = gzip.compress(b" " * (96 << 20), 9)
    hdrs = [("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(bomb)))]  # fmt: skip
    return [head(200, hdrs), bomb]


def _facts(mutate: Mutate) -> Callable[[Env, Any], Any]:
    def run(env: Env, data: Any) -> Any:
        url = env.origin.route(
            "/rpc/facts-" + str(id(mutate)),
            rpc(lambda payload: json.dumps(mutate(_facts_honest(payload))).encode()),
        )

        async def go() -> Any:
            async with ChainReader(
                url, 10, attempts=2, backoff_s=0.01, timeout_s=FACTS_TIMEOUT_S
            ) as reader:
                try:
                    return await reader.collection_facts(ADDRESS)
                except NotAContract:
                    return "not a contract"

        return asyncio.run(go())

    return run


def _facts_honest(payload: list[Item]) -> list[Item]:
    results = [abi_string("Name"), abi_string("SYM"), _abi(10), "0x6080", "0x1"]
    return [
        {"jsonrpc": "2.0", "id": r.get("id"), "result": results[n]} for n, r in enumerate(payload)
    ]


def _facts_bounded(facts: Any) -> str | None:
    if facts == "not a contract":
        return None
    for text in (facts.name, facts.symbol):
        if text is not None and len(text) > 1 << 20:
            return f"a name of {len(text)} chars"
    return None


RPC_ERROR = {"rpc_error"}
ALL_FAIL = expect(RPC_ERROR, RPC_ERROR)


def cases() -> list[Case]:
    good = expect({"ok"})
    listed: list[tuple[str, Mutate, Callable[[Any], str | None]]] = [
        ("honest", lambda items: items, good),
        ("replies in reverse order", lambda items: items[::-1], good),
        ("ids offset by 1000", lambda items: [{**i, "id": i["id"] + 1000} for i in items], ALL_FAIL),
        ('"id": true', _set(1, id=True), expect(RPC_ERROR)),
        ('"id": true and no id 1', _set(1, id=True, result=abi_string("http://evil/")),
         expect(RPC_ERROR)),
        ('"id": false for id 0', _set(0, id=False), expect({"ok"}, RPC_ERROR | {f"uri:{uri(3)}"})),
        ('"id": 1.0', _set(1, id=1.0), expect(RPC_ERROR | {"ok"})),
        ('"id": "1"', _set(1, id="1"), expect(RPC_ERROR | {"ok"})),
        ('"id": null', _set(1, id=None), expect(RPC_ERROR)),
        ('"id": -1', _set(1, id=-1), expect(RPC_ERROR)),
        ('"id": 2**64+1', _set(1, id=2**64 + 1), expect(RPC_ERROR)),
        ('"id": [1]', _set(1, id=[1]), expect(RPC_ERROR)),
        ("id 1 twice with different answers",
         lambda items: [*items, {**items[1], "result": abi_string("http://evil/")}],
         expect(RPC_ERROR | {"ok", "uri:http://evil/"})),
        ("no reply for id 1", lambda items: [items[0], items[2]], expect(RPC_ERROR)),
        ("1,000 extra replies", lambda items: items + [{"id": 10 + i, "result": "0x"}
                                                       for i in range(1000)], good),
        ("1,000,000 junk items", lambda items: items + [0] * 1_000_000, good),
        ("reply is an object", lambda items: items[1], ALL_FAIL),
        ("batch-level error", lambda items: {"jsonrpc": "2.0", "id": None,
                                             "error": {"code": -32600, "message": "no"}}, ALL_FAIL),
        ("html body", lambda items: b"<html>502 Bad Gateway</html>", ALL_FAIL),
        ("empty body", lambda items: b"", ALL_FAIL),
        ("truncated JSON", lambda items: json.dumps(items).encode()[:-10], ALL_FAIL),
        ("100,000 deep", _deep(100_000), ALL_FAIL),
        ("1,000,000 deep", _deep(1_000_000), ALL_FAIL),
        ("result of id 1 100,000 deep", _deep_in_second(100_000), expect(RPC_ERROR, RPC_ERROR | {"ok"})),
        ("result 0xZZ", _set(1, result="0xZZ"), expect(RPC_ERROR)),
        ("result without 0x", _set(1, result="hello"), expect(RPC_ERROR)),
        ("result a number", _set(1, result=12345), expect(RPC_ERROR)),
        ("result null", _set(1, result=None), expect(RPC_ERROR)),
        ("result an object", _set(1, result={"a": 1}), expect(RPC_ERROR)),
        ("result 0x", _set(1, result="0x"), expect(RPC_ERROR)),
        ("result odd hex length", _set(1, result="0x123"), expect(RPC_ERROR)),
        ("no result and no error", _drop_key(1, "result"), expect(RPC_ERROR)),
        ("abi offset 2**256-1", _set(1, result=_abi(2**256 - 1, 5, tail=b"x" * 32)), expect(RPC_ERROR)),
        ("abi length 2**255", _set(1, result=_abi(32, 2**255, tail=b"x" * 32)),
         expect(RPC_ERROR | {"too_large"})),
        ("abi length 2**64", _set(1, result=_abi(32, 2**64, tail=b"x" * 32)),
         expect(RPC_ERROR | {"too_large"})),
        ("abi offset past the data", _set(1, result=_abi(4096, 5)), expect(RPC_ERROR)),
        ("abi length past the data", _set(1, result=_abi(32, 64, tail=b"x" * 32)), expect(RPC_ERROR)),
        ("abi offset into itself", _set(1, result=_abi(0, 0)), expect(RPC_ERROR | {"bad_uri", "ok"} | {"uri:"})),
        ("abi string of 2 MiB", _set(1, result=abi_string("a" * (2 << 20))), expect({"too_large"})),
        ("abi string not utf-8", _set(1, result=abi_string(b"\xff\xfe\xfd")), expect({"bad_uri"})),
        ("abi string with NUL and escapes", _set(1, result=abi_string("a\x00b\x1b[31m")),
         expect({"uri:a\x00b\x1b[31m", "bad_uri"})),
        ("bytes32 result not utf-8", _set(1, result="0x" + "ff" * 32), expect({"ok"} | {f"uri:{chr(0xfffd) * 32}", "bad_uri"})),
        ("revert with control characters",
         _drop_key(1, "result", error={"code": 3, "message": "execution reverted\x00\x1b[2J\r\n"}),
         expect({"not_minted"})),
        ("revert message of 5 MB", _drop_key(1, "result", error={"code": 3, "message": "r" * (5 << 20)}),
         expect({"not_minted"})),
        ("error is a string", _drop_key(1, "result", error="boom"), expect(RPC_ERROR | {"not_minted"})),
        ("error is a list", _drop_key(1, "result", error=[1, 2]), expect(RPC_ERROR)),
        ("error is a number", _drop_key(1, "result", error=5), expect(RPC_ERROR)),
        ("error message is an object", _drop_key(1, "result", error={"code": 3, "message": {"a": 1}}),
         expect(RPC_ERROR | {"not_minted"})),
        ("result and error both", _set(1, error={"code": -1, "message": "x"}),
         expect(RPC_ERROR | {"ok", "not_minted"})),
        ("jsonrpc 1.0", lambda items: [{**i, "jsonrpc": "1.0"} for i in items], expect({"ok", "rpc_error"}, {"ok", "rpc_error"})),
    ]  # fmt: skip
    # Seconds: a 2 MB reply's depth check on a loaded machine (5.6 s seen at load 11 on
    # 2 cores); RecursionError was the bug.
    found = [Case(f"reply: {name}", _read(f"/rpc/{n}", mutate), check=check, time_s=10.0,
                  memory_mb=192) for n, (name, mutate, check) in enumerate(listed)]  # fmt: skip
    raw: list[tuple[str, Callable[[list[Item]], Sequence[Part]], Callable[[Any], str | None]]] = [
        ("HTTP 500", lambda items: [response(500, b"{}")], ALL_FAIL),
        ("drips past the timeout", lambda items: [head(200, [("Content-Length", "1000")]),
                                                  *drip(b"[" * 10, 0.3)], ALL_FAIL),
        ("closes mid-body", lambda items: [head(200, [("Content-Length", "1000")]), b"[{"], ALL_FAIL),
        ("never answers", lambda items: [3600.0], ALL_FAIL),
        ("gzip bomb", _gzip_bomb, expect({"rpc_error", "too_large"}, {"rpc_error", "too_large"})),
    ]  # fmt: skip
    found += [
        Case(
            f"reply: {name}",
            _read(f"/rpc/raw{n}", mutate, raw=True),
            check=check,
            time_s=6.0,
            memory_mb=256,
        )
        for n, (name, mutate, check) in enumerate(raw)
    ]
    facts: list[tuple[str, Mutate]] = [
        ("name of 3 MiB", _set(0, result=abi_string("n" * (3 << 20)))),
        ("totalSupply 2**256-1", _set(2, result=_abi(2**256 - 1))),
        ("no code at the address", _set(3, result="0x")),
        ("chain id garbage", _set(4, result="0x" + "f" * 100)),
        ("every reply an error", lambda items: [{"id": i["id"], "error": {"code": 3, "message": "x"}}
                                               for i in items]),
    ]  # fmt: skip
    found += [
        Case(f"facts: {name}", _facts(m), check=_facts_bounded, time_s=2 * FACTS_TIMEOUT_S)
        for name, m in facts
    ]
    return found
