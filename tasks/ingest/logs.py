"""Token ids from a contract's mint logs, in block spans the node accepts.

Real nodes cap eth_getLogs by result count ("query returned more than 10000 results")
or block span ("block range too large"). The scan asks for the whole chain first and
halves the span on every refusal; after GROW_AFTER answers in a row it tries twice
the span again, so a dense stretch of history does not slow the rest. The work is
bounded (MAX_LOG_QUERIES) and so are the ids: log data is contract-controlled, and a
collection that claims more than max_tokens ids is refused before they are all held.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eth_hash.auto import keccak

from tasks.ingest.chain import ChainReader, LogsRefused

TRANSFER = "0x" + keccak(b"Transfer(address,address,uint256)").hex()
ZERO_TOPIC = "0x" + "00" * 32  # an indexed zero address: `from` of a mint
# At ~0.1-0.3 s a query, a minute or two of planning; a node that needs more (a span
# cap of a few thousand blocks over all of mainnet's history) is not worth scanning:
# the plan falls back to a bounded search, or says to give the range.
MAX_LOG_QUERIES = 500
GROW_AFTER = 8  # answered queries in a row before a wider span is tried again
_TOPIC = re.compile(r"0x[0-9a-fA-F]{64}")


class LogsUnavailable(Exception):
    """The node gives no usable logs for this contract: it refuses even one-block spans,
    lacks eth_getLogs, or would need more than the query budget."""


class TooManyIds(ValueError):
    """The logs list more ids than the collection may hold (max_tokens_per_collection)."""


class IdSet:
    """Distinct token ids, refusing to hold more than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ids: set[int] = set()

    def add(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.ids.add(i)
            if len(self.ids) > self.limit:
                raise TooManyIds(
                    f"its mint logs list more than max_tokens_per_collection={self.limit} "
                    "token ids; name an explicit range, e.g. ADDRESS:FIRST-LAST"
                )

    @property
    def room(self) -> int:
        """How many more ids fit before the limit is passed (one more is the error)."""
        return self.limit - len(self.ids) + 1


def topic_word(topic: Any) -> int | None:
    """A 32-byte log topic as an int, or None if it is not one."""
    return int(topic, 16) if isinstance(topic, str) and _TOPIC.fullmatch(topic) else None


async def scan_logs(
    chain: ChainReader,
    address: str,
    topics: Sequence[str | list[str] | None],
    on_log: Callable[[Mapping[str, Any]], None],
    *,
    max_queries: int = MAX_LOG_QUERIES,
) -> int:
    """Call `on_log` for every log of `address` matching `topics`, oldest first; the
    number of queries it took. Raises LogsUnavailable, or RpcError for node failures."""
    address = address.lower()
    latest = await chain.block_number()
    start, span, widest, streak, queries = 0, latest + 1, latest + 1, 0, 0
    while start <= latest:
        if queries >= max_queries:
            raise LogsUnavailable(
                f"reading its logs would take more than {max_queries} eth_getLogs queries "
                f"at the {span}-block spans this node accepts"
            )
        last = min(start + span - 1, latest)
        queries += 1
        try:
            logs = await chain.get_logs(address, topics, start, last)
        except LogsRefused as e:
            if e.unsupported or last == start:
                raise LogsUnavailable(f"the node gives no logs: {e}") from e
            span, streak = max(1, (last - start + 1) // 2), 0
            continue
        for log in logs:
            if not log.get("removed") and str(log.get("address", "")).lower() == address:
                on_log(log)
        start, streak = last + 1, streak + 1
        if streak >= GROW_AFTER:
            span, streak = min(2 * span, widest), 0
    return queries


async def erc721_mint_ids(chain: ChainReader, address: str, limit: int) -> list[int]:
    """Sorted ids of every ERC-721 Transfer from the zero address (burned ones too).

    Only 4-topic Transfers count: ERC-20s and CryptoPunks' market log a Transfer with
    the same signature whose third word is an amount, not an indexed id.
    """
    found = IdSet(limit)

    def on_log(log: Mapping[str, Any]) -> None:
        topics = log.get("topics")
        if isinstance(topics, list) and len(topics) == 4:
            token_id = topic_word(topics[3])
            if topic_word(topics[1]) == 0 and token_id is not None:
                found.add((token_id,))

    await scan_logs(chain, address, [TRANSFER, ZERO_TOPIC], on_log)
    return sorted(found.ids)
