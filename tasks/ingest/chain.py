"""Read collection facts and token URIs from an Ethereum node over JSON-RPC batches.

One HTTP request carries up to ``batch_size`` ``eth_call``s, so reading a 10,000-token
collection takes a few dozen round trips instead of 10,000. What a contract returns is
attacker-controlled: every per-token failure becomes an ``ItemError``, and decoded
strings are bounded. The RPC URL itself is operator configuration, but its replies
are still read with bounded size and JSON depth, and matched to their calls by id
strictly (an int, not ``true``; each call answered exactly once).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_hash.auto import keccak

from tasks.core.errors import ItemError
from tasks.core.json_bounded import loads_bounded
from tasks.core.retry import backoff_delay

T = TypeVar("T")

MAX_STRING_BYTES = 1 << 20  # a tokenURI, name or symbol longer than this is refused
MAX_RESPONSE_BYTES = 64 << 20  # one HTTP reply; a larger one is split into smaller batches
# One eth_getLogs reply: a larger one is refused (LogsRefused) and asked again in halves,
# so a contract's hostile log data never costs more than this much parsed JSON at once.
MAX_LOGS_REPLY_BYTES = 16 << 20
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# What a call answered more than once in one batch reply gets instead of an answer.
_DUPLICATE: Mapping[str, Any] = MappingProxyType(
    {"error": {"message": "the node's batch reply answers this call more than once"}}
)


class RpcError(RuntimeError):
    """The node could not be asked: unreachable, HTTP error or malformed batch reply."""


class StringTooLarge(ValueError):
    """A returned string is over its byte cap."""


class _ReplyTooLarge(RpcError):
    """An HTTP reply is over MAX_RESPONSE_BYTES: not retried, the batch is split instead."""


class LogsRefused(RpcError):
    """The node refused an eth_getLogs query (too many results, too wide a block span,
    a reply over MAX_LOGS_REPLY_BYTES, or logs not served at all): a narrower span may pass.
    """

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported  # the node has no eth_getLogs: no span will pass


class Reverted(ItemError):
    """An eth_call that reverted, with the revert data when the node relays it.

    Empty data is what a call to a function the contract lacks (and no fallback) gives,
    so planning tells "no tokenURI at all" from "no such token" by it.
    """

    def __init__(self, message: str, data: bytes | None) -> None:
        super().__init__("not_minted", f"call reverted: {message}")
        self.data = data


class NotAContract(ValueError):
    """The address holds no code on the node's chain: a collection-level error (a wrong
    address, or a node of another chain than the collection's)."""


@dataclass(frozen=True)
class CollectionFacts:
    address: str  # lowercase 0x-hex
    name: str | None
    symbol: str | None
    total_supply: int | None


@functools.lru_cache(maxsize=256)
def selector(signature: str) -> bytes:
    """The 4-byte keccak selector of a function signature (a few kinds per run)."""
    return bytes(keccak(signature.encode())[:4])


def encode_call(signature: str, types: list[str], args: list[Any]) -> str:
    """Calldata as 0x-hex: the 4-byte keccak selector of `signature`, then the ABI args.

    One uint256 (tokenURI(id), a call per token) is its 32 big-endian bytes: the same
    bytes eth_abi writes, without its per-call cost (about 30 us).
    """
    if types == ["uint256"] and type(args[0]) is int and 0 <= args[0] < 1 << 256:
        return "0x" + (selector(signature) + args[0].to_bytes(32, "big")).hex()
    return "0x" + (selector(signature) + encode(types, args)).hex()


def _hex_bytes(hex_result: str) -> bytes:
    if not hex_result.startswith("0x"):
        raise ValueError("result is not 0x-hex")
    return bytes.fromhex(hex_result[2:])


def decode_string(hex_result: str, max_bytes: int = MAX_STRING_BYTES) -> str:
    """An ABI string result; a 32-byte result is read as a NUL-padded bytes32 (old tokens)."""
    if len(hex_result) > 2 * max_bytes + 200:
        raise StringTooLarge(f"result of {len(hex_result) // 2} bytes is over {max_bytes}")
    data = _hex_bytes(hex_result)
    if len(data) == 32:
        return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    try:
        (raw,) = decode(["bytes"], data)
    except (DecodingError, OverflowError) as e:  # a hostile length word can overflow
        raise ValueError(f"not an ABI string: {e}") from e
    if len(raw) > max_bytes:
        raise StringTooLarge(f"string of {len(raw)} bytes is over {max_bytes}")
    return str(raw.decode("utf-8"))


def _decode_uint(hex_result: str) -> int:
    data = _hex_bytes(hex_result)
    if len(data) < 32:
        raise ValueError(f"{len(data)}-byte result is too short for a uint256")
    return int.from_bytes(data[:32], "big")


_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


def _quantity(reply: Mapping[str, Any] | None) -> int | None:
    """A JSON-RPC quantity result (``0x1``), or None for anything else the node said."""
    result = (reply or {}).get("result")
    return int(result, 16) if isinstance(result, str) and _QUANTITY.fullmatch(result) else None


def _address(address: str) -> str:
    if not ADDRESS.fullmatch(address):
        raise ValueError(f"not a contract address: {address!r}")
    return address.lower()


def _reply_hex(reply: Mapping[str, Any] | None) -> str | ItemError:
    """The hex result of one eth_call reply, or why there is none."""
    if reply is None:
        return ItemError("rpc_error", "the node's batch reply has no answer for this call")
    error = reply.get("error")
    if error is not None:
        message = str(error.get("message", error) if isinstance(error, dict) else error)[:300]
        code = error.get("code") if isinstance(error, dict) else None
        if code == 3 or "revert" in message.lower():
            return Reverted(message, _revert_data(error))
        return ItemError("rpc_error", f"eth_call failed: {message}")
    result = reply.get("result")
    if not isinstance(result, str):
        return ItemError("rpc_error", f"eth_call result is not a hex string: {result!r:.100}")
    return result


def _revert_data(error: Any) -> bytes | None:
    """The revert data a node put beside its error message (geth, anvil: ``data``)."""
    data = error.get("data") if isinstance(error, dict) else None
    if not isinstance(data, str) or not data.startswith("0x"):
        return None
    try:
        return bytes.fromhex(data[2:])
    except ValueError:
        return None


def string_reply(
    result: str | ItemError,
    function: str,
    *,
    max_bytes: int = MAX_STRING_BYTES,
    not_utf8: str = "bad_uri",
) -> str | ItemError:
    """A string-returning call's answer (0x-hex, or why there is none) decoded within
    max_bytes, or the token's error; ``not_utf8`` is the kind for bytes that are not
    UTF-8 (a URI's bad_uri by default)."""
    if isinstance(result, ItemError):
        return result
    try:
        return decode_string(result, max_bytes)
    except StringTooLarge as e:
        return ItemError("too_large", f"{function}: {e}")
    except UnicodeDecodeError as e:
        return ItemError(not_utf8, f"{function} is not UTF-8: {e}")
    except ValueError as e:
        # The contract answered, with something that is not an ABI string: asking
        # again gets the same answer.
        return ItemError("rpc_error", f"{function} result is undecodable: {e}", retryable=False)


def _optional(reply: Mapping[str, Any] | None, decode: Callable[[str], T]) -> T | None:
    """A decoded answer to an optional call (name, ownerOf...), or None if it has none."""
    result = _reply_hex(reply)
    if isinstance(result, ItemError):
        return None
    try:
        return decode(result)
    except ValueError:
        return None


def _optional_string(reply: Mapping[str, Any] | None) -> str | None:
    return _optional(reply, decode_string)


def _optional_uint(reply: Mapping[str, Any] | None) -> int | None:
    return _optional(reply, _decode_uint)


def match_replies(reply: list[Any], calls: int) -> dict[int, Mapping[str, Any]]:
    """Each call's reply by its id (0 .. calls-1); a call without one is left out.

    Only an int id counts (``true`` and ``1.0`` equal 1 in Python but are not our
    ids); ids we never sent are ignored; a call answered twice gets an error reply.
    """
    out: dict[int, Mapping[str, Any]] = {}
    for item in reply:
        if not isinstance(item, dict):
            continue
        call = item.get("id")
        if type(call) is not int or not 0 <= call < calls:
            continue
        out[call] = _DUPLICATE if call in out else item
    return out


class ChainReader:
    """Batched, retried eth_calls against one node; `round_trips` counts HTTP requests."""

    def __init__(
        self,
        rpc_url: str,
        batch_size: int = 500,
        session: aiohttp.ClientSession | None = None,
        *,
        max_in_flight: int = 4,
        attempts: int = 4,
        backoff_s: float = 0.25,
        backoff_max_s: float = 30.0,
        timeout_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1 or max_in_flight < 1 or attempts < 1:
            raise ValueError("batch_size, max_in_flight and attempts must be at least 1")
        self.rpc_url = rpc_url
        self.batch_size = batch_size
        self.round_trips = 0
        self._session = session
        self._owns_session = session is None
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng or random.Random()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __aenter__(self) -> ChainReader:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def collection_facts(self, address: str) -> CollectionFacts:
        """name, symbol and totalSupply in one round trip; any that fails is None.

        The same round trip asks for the address's code: with none, NotAContract says
        so (with the node's chain id) instead of every token failing one by one.
        """
        address = _address(address)
        calls = [encode_call(s, [], []) for s in ("name()", "symbol()", "totalSupply()")]
        replies = await self._requests(
            [
                *(("eth_call", [{"to": address, "data": data}, "latest"]) for data in calls),
                ("eth_getCode", [address, "latest"]),
                ("eth_chainId", []),
            ]
        )
        if (replies.get(3) or {}).get("result") == "0x":
            chain = _quantity(replies.get(4))
            host = urlsplit(self.rpc_url).netloc.rpartition("@")[2]  # never credentials
            raise NotAContract(
                f"{address} holds no contract on the chain of the node at {host} (chain id "
                f"{chain if chain is not None else 'unknown'}): check the address, or point "
                "NFT1000_RPC_URL at a node of the collection's chain (NFT1000's: Ethereum "
                "mainnet, chain id 1)"
            )
        return CollectionFacts(
            address=address,
            name=_optional_string(replies.get(0)),
            symbol=_optional_string(replies.get(1)),
            total_supply=_optional_uint(replies.get(2)),
        )

    async def enumerated_ids(self, address: str, count: int) -> list[int] | None:
        """tokenByIndex(0 .. count-1), batch_size calls per request; None if any call failed.

        A node failure raises RpcError instead: a guessed range would silently miss ids.
        """
        chunks = [
            range(i, min(i + self.batch_size, count)) for i in range(0, count, self.batch_size)
        ]
        # Every chunk finishes before an error is raised, so none is left running.
        parts = await asyncio.gather(
            *(self._token_by_index(address, c) for c in chunks), return_exceptions=True
        )
        ids: list[int] = []
        for part in parts:
            if isinstance(part, BaseException):
                raise part
            for token_id in part:
                if token_id is None:
                    return None
                ids.append(token_id)
        return ids

    async def _token_by_index(self, address: str, indexes: range) -> list[int | None]:
        calls = [encode_call("tokenByIndex(uint256)", ["uint256"], [i]) for i in indexes]
        replies = await self._batch(address, calls)
        return [_optional_uint(replies.get(n)) for n in range(len(indexes))]

    async def token_uris(
        self, address: str, ids: Sequence[int], function: str = "tokenURI(uint256)"
    ) -> dict[int, str | ItemError]:
        """`function` (tokenURI, or ERC-1155's uri) of every id, batch_size calls per
        request; failures are ItemErrors."""
        return await self.read_ids(
            address,
            ids,
            lambda i: [encode_call(function, ["uint256"], [i])],
            lambda _, replies: string_reply(replies[0], function),
            function,
        )

    async def read_ids(
        self,
        address: str,
        ids: Sequence[int],
        calls: Callable[[int], list[str]],
        result: Callable[[int, list[str | ItemError]], T | ItemError],
        what: str,
    ) -> dict[int, T | ItemError]:
        """Each id's ``result`` from the answers (0x-hex, or why there is none) to its
        ``calls``, about batch_size calls per request. A reply too big for one HTTP
        answer is split in halves down to one id (too_large, naming ``what``); a node
        failure is each id's rpc_error."""
        address = _address(address)
        per_id = len(calls(ids[0])) if ids else 1
        step = max(1, self.batch_size // max(1, per_id))
        chunks = [ids[i : i + step] for i in range(0, len(ids), step)]
        found: dict[int, T | ItemError] = {}
        parts = await asyncio.gather(
            *(self._read_chunk(address, c, calls, result, what) for c in chunks)
        )
        for part in parts:
            found.update(part)
        return {token_id: found[token_id] for token_id in ids}

    async def call_many(self, address: str, calls: Sequence[str]) -> list[str | ItemError]:
        """Each calldata's hex result (or why there is none), batch_size calls per request.

        A node failure raises RpcError: the caller decides whether to retry or give up.
        """
        address = _address(address)
        chunks = [calls[i : i + self.batch_size] for i in range(0, len(calls), self.batch_size)]
        replies = await asyncio.gather(*(self._batch(address, c) for c in chunks))
        return [
            _reply_hex(part.get(n))
            for chunk, part in zip(chunks, replies, strict=True)
            for n in range(len(chunk))
        ]

    async def _read_chunk(
        self,
        address: str,
        ids: Sequence[int],
        calls: Callable[[int], list[str]],
        result: Callable[[int, list[str | ItemError]], T | ItemError],
        what: str,
    ) -> dict[int, T | ItemError]:
        made = [calls(i) for i in ids]
        try:
            replies = await self._batch(address, [call for mine in made for call in mine])
        except _ReplyTooLarge:
            if len(ids) == 1:
                return {ids[0]: ItemError("too_large", f"the node's reply for {what} is too big")}
            half = len(ids) // 2
            return {
                **await self._read_chunk(address, ids[:half], calls, result, what),
                **await self._read_chunk(address, ids[half:], calls, result, what),
            }
        except RpcError as e:
            return {i: ItemError("rpc_error", str(e)) for i in ids}
        found: dict[int, T | ItemError] = {}
        at = 0
        for token_id, mine in zip(ids, made, strict=True):
            found[token_id] = result(
                token_id, [_reply_hex(replies.get(at + n)) for n in range(len(mine))]
            )
            at += len(mine)
        return found

    async def block_number(self) -> int:
        """The node's latest block number."""
        number = _quantity((await self._requests([("eth_blockNumber", [])])).get(0))
        if number is None:
            raise RpcError("the node gave no block number")
        return number

    async def get_logs(
        self, address: str, topics: Sequence[str | list[str] | None], first: int, last: int
    ) -> list[Mapping[str, Any]]:
        """The logs of `address` matching `topics` in blocks first..last (inclusive).

        A node that refuses the query (span or result caps, a reply over
        MAX_LOGS_REPLY_BYTES) raises LogsRefused; other node failures raise RpcError.
        Entries that are not JSON objects are dropped; their fields are the caller's to check.
        """
        query = {
            "address": _address(address),
            "topics": list(topics),
            "fromBlock": hex(first),
            "toBlock": hex(last),
        }
        try:
            reply = (await self._requests([("eth_getLogs", [query])], MAX_LOGS_REPLY_BYTES)).get(
                0
            ) or {}
        except _ReplyTooLarge as e:
            raise LogsRefused(str(e)) from e
        error = reply.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = str(error.get("message", error) if isinstance(error, dict) else error)
            raise LogsRefused(f"eth_getLogs refused: {message[:300]}", unsupported=code == -32601)
        logs = reply.get("result")
        if not isinstance(logs, list):
            raise RpcError(f"eth_getLogs result is not a list: {str(logs)[:100]}")
        return [log for log in logs if isinstance(log, dict)]

    async def _batch(self, address: str, calls: Sequence[str]) -> dict[int, Mapping[str, Any]]:
        """One JSON-RPC batch of eth_calls at `latest`; replies by position in `calls`."""
        return await self._requests(
            [("eth_call", [{"to": address, "data": data}, "latest"]) for data in calls]
        )

    async def _requests(
        self, requests: Sequence[tuple[str, list[Any]]], max_bytes: int = MAX_RESPONSE_BYTES
    ) -> dict[int, Mapping[str, Any]]:
        """One JSON-RPC batch of (method, params); replies by position in `requests`."""
        payload = [
            {"jsonrpc": "2.0", "id": n, "method": method, "params": params}
            for n, (method, params) in enumerate(requests)
        ]
        async with self._in_flight:
            reply = await self._post_with_retries(json.dumps(payload).encode(), max_bytes)
        return match_replies(reply, len(requests))

    async def _post_with_retries(self, body: bytes, max_bytes: int) -> list[Any]:
        for attempt in range(self._attempts - 1):
            try:
                return await self._post(body, max_bytes)
            except _ReplyTooLarge:
                raise
            except RpcError:
                delay = backoff_delay(attempt, self._backoff_s, self._backoff_max_s, self._rng)
                await asyncio.sleep(delay)
        return await self._post(body, max_bytes)

    async def _post(self, body: bytes, max_bytes: int) -> list[Any]:
        if self._session is None:
            raise RuntimeError("use ChainReader as `async with ChainReader(...) as reader`")
        self.round_trips += 1
        try:
            async with self._session.post(
                self.rpc_url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            ) as resp:
                if resp.status != 200:
                    raise RpcError(f"node answered HTTP {resp.status}")
                text = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    text += chunk
                    if len(text) > max_bytes:
                        raise _ReplyTooLarge(f"node reply is over {max_bytes} bytes")
            reply = loads_bounded(bytes(text), max_bytes=max_bytes)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RpcError(f"node request failed: {type(e).__name__}: {e}") from e
        except ValueError as e:  # not UTF-8, not JSON, or nested past json_bounded.MAX_DEPTH
            raise RpcError(f"node reply is not acceptable JSON: {str(e)[:200]}") from e
        if not isinstance(reply, list):
            raise RpcError(f"node answered a batch with {str(reply)[:300]}")
        return reply
