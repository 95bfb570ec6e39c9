"""Plan a collection: its contract facts and token id range from the chain, cut into
blocks of ids (tasks.ingest.blocks), one Dask task each.

Node failures raise, so the caller retries them; a contract that cannot be read
as a collection (no code, no tokenURI, ids not found) gives a plan whose error a
person sees, instead of thousands of quiet token rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, plan_blocks
from tasks.ingest.chain import ChainReader, CollectionFacts, RpcError
from tasks.ingest.registry import CollectionTarget, collection_name


@dataclass(frozen=True)
class CollectionPlan:
    target: CollectionTarget
    name: str
    blocks: list[BlockSpec]
    error: str | None = None  # why the collection cannot be planned (the run goes on)


def plan_collection(target: CollectionTarget, settings: Settings) -> CollectionPlan:
    """Contract facts and token id range, cut into blocks."""

    async def read() -> tuple[CollectionFacts, range]:
        async with ChainReader(settings.rpc_url, settings.rpc_batch_size) as chain:
            facts = await chain.collection_facts(target.address)
            ids = await chain.token_id_range(target.address, facts.total_supply, target.ids)
            return facts, ids

    try:
        facts, ids = asyncio.run(read())
        name = collection_name(target, facts)
        blocks = plan_blocks(
            name, target.address, ids, settings.shard_size, settings.max_tokens_per_collection
        )
    except RpcError:
        raise
    except ValueError as e:
        return CollectionPlan(target, target.name, [], error=str(e)[:500])
    return CollectionPlan(target, name, blocks)
