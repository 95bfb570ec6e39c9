"""Which standard a collection's token URIs are read by: decided by the plan, carried
by every block of the collection (tasks.ingest.sources reads by it).

A module of its own, importing nothing, so that adapters (tasks.ingest.cryptopunks)
can name a source without importing the dispatch that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenSource:
    """The standard a collection's URIs are read by, and any contract it reads them from."""

    standard: str = "erc721"  # "erc721", "erc1155" or "cryptopunks"
    data_contract: str | None = None  # cryptopunks: the on-chain data contract it reads


ERC721 = TokenSource()
ERC1155 = TokenSource("erc1155")
