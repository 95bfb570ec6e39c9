"""Plan a collection from what its contract is: its standard, its token ids, and a
check that those ids give URIs, cut into blocks of ids (tasks.ingest.blocks), one
Dask task each.

The order: a known adapter (CryptoPunks' market) first; then the contract's
interface (tasks.ingest.interfaces); then its ids, as the user named them or as
tasks.ingest.token_ids finds them; last, a sample of the planned ids is read the way
the blocks will read them. Node failures raise, so the caller retries them; a
contract that cannot be read as a collection (no code, no tokenURI, ids not found,
a sample that mostly fails) gives a plan whose error a person sees, instead of
thousands of quiet token rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, plan_blocks
from tasks.ingest.chain import ChainReader, Reverted, RpcError
from tasks.ingest.cryptopunks import punks_plan
from tasks.ingest.interfaces import detect_interface
from tasks.ingest.manifest import error_text
from tasks.ingest.registry import CollectionTarget, collection_name
from tasks.ingest.sources import read_token_uris
from tasks.ingest.token_ids import find_token_ids
from tasks.ingest.token_source import ERC721, ERC1155, TokenSource

# The sample read after planning: one JSON-RPC batch, spread evenly over the ids.
SAMPLE_IDS = 20
# A plan fails when at least this share of its sample has no URI. Burned tokens and
# gaps fail a few ids of a right plan; a wrong range (ids that start elsewhere, a
# contract without tokenURI) fails all of them. 90% of 20 is 18 ids: a right plan
# whose sample fails that much would be nearly all burns, and is worth a look anyway.
FAILED_SHARE = 0.9
_SAY_RANGE = "give the right one explicitly as ADDRESS:FIRST-LAST"


@dataclass(frozen=True)
class CollectionPlan:
    target: CollectionTarget
    name: str
    blocks: list[BlockSpec]
    error: str | None = None  # why the collection cannot be planned (the run goes on)


def plan_collection(target: CollectionTarget, settings: Settings) -> CollectionPlan:
    """The collection's blocks, or the reason it has none."""

    async def read() -> CollectionPlan:
        async with ChainReader(settings.rpc_url, settings.rpc_batch_size) as chain:
            facts = await chain.collection_facts(target.address)
            name = collection_name(target, facts)
            try:
                blocks = await _blocks(chain, target, name, facts.total_supply, settings)
            except ValueError as e:
                return CollectionPlan(target, name, [], error=error_text(str(e)))
            return CollectionPlan(target, name, blocks)

    try:
        return asyncio.run(read())
    except RpcError:
        raise
    except ValueError as e:  # no contract at the address
        return CollectionPlan(target, target.name, [], error=error_text(str(e)))


async def _blocks(
    chain: ChainReader,
    target: CollectionTarget,
    name: str,
    total_supply: int | None,
    settings: Settings,
) -> list[BlockSpec]:
    address = target.address
    source: TokenSource
    ids: Sequence[int]
    if (adapter := await punks_plan(chain, address)) is not None:
        source, ids = adapter
    else:
        contract = await detect_interface(chain, address)
        if contract.problem is not None:
            raise ValueError(contract.problem)
        source = ERC1155 if contract.standard == "erc1155" else ERC721
        if target.ids is None:
            limit = settings.max_tokens_per_collection
            ids = await find_token_ids(chain, address, contract, total_supply, limit)
    if target.ids is not None:
        ids = range(*target.ids)
    blocks = plan_blocks(
        name, address, ids, settings.shard_size, settings.max_tokens_per_collection, source
    )
    if blocks and (problem := await sample_problem(chain, address, source, ids)):
        raise ValueError(problem)
    return blocks


def spread(ids: Sequence[int], count: int) -> list[int]:
    """Up to `count` ids evenly spaced over `ids`, its first and last among them."""
    n = len(ids) if not isinstance(ids, range) else max(0, ids.stop - ids.start)
    if n <= count:
        return list(ids)
    return [ids[k * (n - 1) // (count - 1)] for k in range(count)]


async def sample_problem(
    chain: ChainReader, address: str, source: TokenSource, ids: Sequence[int]
) -> str | None:
    """Why the planned ids look wrong, if FAILED_SHARE of a sample of them has no URI.

    A sample lost to the node (retryable rpc errors) raises RpcError instead.
    """
    sample = spread(ids, SAMPLE_IDS)
    uris = await read_token_uris(chain, address, source, sample)
    failed = {i: u for i, u in uris.items() if isinstance(u, ItemError) or not u.strip()}
    if len(failed) < FAILED_SHARE * len(sample):
        return None
    if any(
        isinstance(u, ItemError) and u.kind == "rpc_error" and u.retryable for u in uris.values()
    ):
        raise RpcError(f"the node failed while {address}'s sample was read")
    function = "uri" if source.standard == "erc1155" else "tokenURI"
    shown = ", ".join(map(str, list(failed)[:5])) + (", ..." if len(failed) > 5 else "")
    errors = [u for u in failed.values() if isinstance(u, ItemError)]
    reverts = [u for u in errors if u.kind == "not_minted"]
    summary = f"{len(failed)} of {len(sample)} sampled ids ({shown})"
    if len(reverts) == len(failed):
        if all(isinstance(u, Reverted) and u.data == b"" for u in reverts):
            return (
                f"{summary} revert with no reason, as calls to a function the contract lacks "
                f"do: {address} may have no {function}(uint256), or the id range is wrong; "
                f"{_SAY_RANGE}"
            )
        return (
            f"{summary} revert ({reverts[0].message[:200]}): the id range is probably wrong; "
            f"{_SAY_RANGE}"
        )
    if not errors:
        return f"{summary} have an empty {function}: the id range is probably wrong; {_SAY_RANGE}"
    return (
        f"{summary} give no {function} ({errors[0]}): the contract or the id range is wrong; "
        f"{_SAY_RANGE}"
    )
