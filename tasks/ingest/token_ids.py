"""Which token ids a collection holds, when the user did not name a range.

In order, the first that answers: an ERC721Enumerable's ``tokenByIndex`` list; ids
0 or 1 existing with a totalSupply (the 0/1-based rule, cheap and right for most
collections); the mint logs (ERC-1155: the only way); a bounded search that probes
ids 0, 1 and k * 10^n (n >= 2, k < 100: Art Blocks' project * 1,000,000 among them)
and follows each hit to the end of its run. Listed ids come back as a sorted list,
so blocks read exactly them; a contiguous run comes back as a range.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.ingest.chain import ChainReader, encode_call
from tasks.ingest.erc1155 import erc1155_mint_ids
from tasks.ingest.interfaces import ContractInterface, has_owner, has_text
from tasks.ingest.logs import LogsUnavailable, TooManyIds, erc721_mint_ids

# Above this totalSupply the ids are not enumerated (one eth_call each).
MAX_ENUMERATED_SUPPLY = 1 << 20
# ~1,600 ids, two calls each: a few batches, once per collection.
SEARCH_STARTS = sorted(
    {0, 1} | {k * 10**n + o for n in range(2, 10) for k in range(1, 100) for o in (0, 1)}
)
MAX_RUN_BITS = 64  # a run longer than 2**64 ids is no collection
NARROW_POINTS = 256  # ids probed per round while finding where a run ends
_SAY_RANGE = "give its token id range explicitly as ADDRESS:FIRST-LAST"


async def find_token_ids(
    chain: ChainReader,
    address: str,
    contract: ContractInterface,
    total_supply: int | None,
    limit: int,
) -> Sequence[int]:
    """The collection's token ids; ValueError says why none were found.

    Node failures raise RpcError.
    """
    if contract.standard == "erc1155":
        try:
            ids = await erc1155_mint_ids(chain, address, limit)
        except LogsUnavailable as e:
            raise ValueError(
                f"{address}: ERC-1155 ids come from its mint logs, but {e}; {_SAY_RANGE}"
            ) from e
        if not ids:
            raise ValueError(f"{address}: its logs show no ERC-1155 mints; {_SAY_RANGE}")
        return ids
    if contract.enumerable and total_supply is not None and total_supply <= MAX_ENUMERATED_SUPPLY:
        listed = await chain.enumerated_ids(address, total_supply)
        if listed:
            return sorted(set(listed))
    if contract.existing and total_supply is not None:
        first = min(contract.existing)
        return range(first, first + total_supply)
    why = "its logs show no mints"
    try:
        if ids := await erc721_mint_ids(chain, address, limit):
            return ids
    except LogsUnavailable as e:
        why = str(e)
    runs = await search_ids(chain, address, limit)
    if not runs:
        raise ValueError(
            f"{address}: no token ids found: {why}, and none of ids 0, 1 and k*10^n answers "
            f"ownerOf or tokenURI; {_SAY_RANGE}"
        )
    return runs[0] if len(runs) == 1 else [i for run in runs for i in run]


async def _exists(chain: ChainReader, address: str, ids: Sequence[int]) -> list[bool]:
    """Whether each id is a token: ownerOf names an owner, or tokenURI answers."""
    functions = ("ownerOf(uint256)", "tokenURI(uint256)")
    replies = await chain.call_many(
        address, [encode_call(f, ["uint256"], [i]) for i in ids for f in functions]
    )
    return [has_owner(replies[2 * n]) or has_text(replies[2 * n + 1]) for n in range(len(ids))]


async def search_ids(chain: ChainReader, address: str, limit: int) -> list[range]:
    """The runs of consecutive ids that start at a SEARCH_STARTS id; TooManyIds past limit."""
    found = await _exists(chain, address, SEARCH_STARTS)
    runs: list[range] = []
    for first, exists in zip(SEARCH_STARTS, found, strict=True):
        if not exists or (runs and first < runs[-1].stop):
            continue
        runs.append(range(first, await _run_end(chain, address, first) + 1))
        if sum(len(r) for r in runs) > limit:
            raise TooManyIds(
                f"{address}: a search finds more than max_tokens_per_collection={limit} "
                f"token ids; {_SAY_RANGE}"
            )
    return runs


async def _run_end(chain: ChainReader, address: str, first: int) -> int:
    """The last id of the run of tokens from `first` (which exists): gallop by powers of
    two to a missing id, then narrow the gap NARROW_POINTS ids a round."""
    gallop = [first + (1 << j) for j in range(MAX_RUN_BITS) if first + (1 << j) < 2**256]
    found = await _exists(chain, address, gallop)
    if all(found):
        raise TooManyIds(f"{address}: tokens run on past {first} + 2**{MAX_RUN_BITS}")
    missing = found.index(False)
    low, high = (first if missing == 0 else gallop[missing - 1]), gallop[missing]
    while high - low > 1:
        step = max(1, (high - low) // NARROW_POINTS)
        points = list(range(low + step, high, step))[:NARROW_POINTS]
        answers = await _exists(chain, address, points)
        gap = answers.index(False) if False in answers else len(points)
        low, high = (points[gap - 1] if gap else low), (points[gap] if gap < len(points) else high)
    return low
