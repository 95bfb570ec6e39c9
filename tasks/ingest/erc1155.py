"""ERC-1155 collections: ids from their mint logs, URIs from ``uri(id)``.

An ERC-1155 contract lists no ids; its mints are TransferSingle and TransferBatch
logs from the zero address. A TransferBatch's ids are an ABI array in contract-written
log data, so the array is read word by word against its real length and never past
the ids the collection may still hold. ``uri(id)`` is usually one template for every
id, with ``{id}`` standing for the id as 64 lowercase, zero-padded hex digits
(EIP-1155); each token's URI is stored with its id filled in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_hash.auto import keccak

from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader
from tasks.ingest.logs import ZERO_TOPIC, IdSet, TooManyIds, scan_logs, topic_word

TRANSFER_SINGLE = "0x" + keccak(b"TransferSingle(address,address,address,uint256,uint256)").hex()
TRANSFER_BATCH = "0x" + keccak(b"TransferBatch(address,address,address,uint256[],uint256[])").hex()


def substitute_id(uri: str, token_id: int) -> str:
    """EIP-1155's client-side rule: ``{id}`` becomes the id in 64 lowercase hex digits."""
    return uri.replace("{id}", f"{token_id:064x}")


async def erc1155_token_uris(
    chain: ChainReader, address: str, ids: Sequence[int]
) -> dict[int, str | ItemError]:
    """Every id's ``uri(id)`` with its ``{id}`` filled in, or why it has none."""
    found = await chain.token_uris(address, ids, "uri(uint256)")
    return {
        i: uri if isinstance(uri, ItemError) else substitute_id(uri, i) for i, uri in found.items()
    }


def batch_ids(data: bytes, room: int) -> list[int]:
    """The ids array of TransferBatch data (``uint256[] ids, uint256[] values``).

    The offset and length words are checked against the data actually there, so a
    hostile length costs nothing; more than `room` ids raise TooManyIds before any is
    decoded. Malformed data gives no ids.
    """
    if len(data) < 64:
        return []
    offset = int.from_bytes(data[:32], "big")
    if offset % 32 or offset + 32 > len(data):
        return []
    count = int.from_bytes(data[offset : offset + 32], "big")
    first = offset + 32
    if count > (len(data) - first) // 32:
        return []
    if count > room:
        raise TooManyIds(f"a TransferBatch mints {count} ids, more than the collection may hold")
    return [
        int.from_bytes(data[at : at + 32], "big") for at in range(first, first + 32 * count, 32)
    ]


def _data(log: Mapping[str, Any]) -> bytes:
    data = log.get("data")
    if not isinstance(data, str) or not data.startswith("0x"):
        return b""
    try:
        return bytes.fromhex(data[2:])
    except ValueError:
        return b""


async def erc1155_mint_ids(chain: ChainReader, address: str, limit: int) -> list[int]:
    """Sorted ids of every TransferSingle and TransferBatch from the zero address."""
    found = IdSet(limit)

    def on_log(log: Mapping[str, Any]) -> None:
        topics = log.get("topics")
        if not (isinstance(topics, list) and len(topics) == 4 and topic_word(topics[2]) == 0):
            return
        data, event = _data(log), str(topics[0]).lower()
        if event == TRANSFER_SINGLE and len(data) >= 64:
            found.add((int.from_bytes(data[:32], "big"),))
        elif event == TRANSFER_BATCH:
            found.add(batch_ids(data, found.room))

    topics = [[TRANSFER_SINGLE, TRANSFER_BATCH], None, ZERO_TOPIC]
    await scan_logs(chain, address, topics, on_log)
    return sorted(found.ids)
