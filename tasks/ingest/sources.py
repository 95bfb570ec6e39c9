"""How a collection's token URIs are read: by the standard its contract follows.

Most collections are ERC-721 (``tokenURI(id)``), some ERC-1155 (``uri(id)``, with
``{id}`` filled in), and CryptoPunks read from their on-chain data contract; the plan
decides the source from what the contract is, and every block of the collection
reads its URIs through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader
from tasks.ingest.cryptopunks import punk_token_uris
from tasks.ingest.erc1155 import erc1155_token_uris
from tasks.ingest.token_source import TokenSource


async def read_token_uris(
    chain: ChainReader, contract: str, source: TokenSource, ids: Sequence[int]
) -> dict[int, str | ItemError]:
    """Every id's URI (or why it has none), read the way the collection's source says."""
    if source.standard == "erc1155":
        return await erc1155_token_uris(chain, contract, ids)
    if source.standard == "cryptopunks" and source.data_contract is not None:
        return await punk_token_uris(chain, source.data_contract, ids)
    return await chain.token_uris(contract, ids)
