"""ChainReader, interface detection and id discovery against a real anvil holding demo
Moonbirds (0-based), Loot (1-based) and enumerable collections whose ids have burns and
gaps."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from infra.demo_chain import (
    anvil_spec,
    compile_contracts,
    deploy_contract,
    deploy_demo,
    read_loot_uris,
    rpc,
    send_transaction,
)
from infra.process import free_port, running
from infra.stack import LOOT_ARCHIVE
from tasks.core.errors import ItemError
from tasks.ingest.chain import ChainReader, NotAContract, encode_call
from tasks.ingest.interfaces import ContractInterface, detect_interface
from tasks.ingest.token_ids import find_token_ids

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
MOONBIRDS = 300
LOOT = 50
BURNED_IDS = [50, 98, 99]  # of 0..99: totalSupply 97, yet id 97 is the highest
SPARSE_IDS = [*range(1000, 1050), 5000]


@dataclass(frozen=True)
class Chain:
    url: str
    moonbirds: str
    loot: str
    loot_uris: list[str]
    account: str  # an address with no code
    burned: str  # enumerable, ids 0..99 less BURNED_IDS
    sparse: str  # enumerable, ids SPARSE_IDS


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    state = tmp_path_factory.mktemp("anvil")
    artifacts = compile_contracts(state / "artifacts.json")
    uris = read_loot_uris(LOOT_ARCHIVE, LOOT)
    port = free_port()
    with running(anvil_spec(state, port)):
        url = f"http://127.0.0.1:{port}"
        addresses = deploy_demo(url, artifacts, CID, MOONBIRDS, uris)
        account = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"  # anvil's first dev account
        burned = _deploy_enumerable(url, artifacts, "ipfs://burned/", list(range(100)))
        sender = str(rpc(url, "eth_accounts", [])[0])
        for token_id in BURNED_IDS:
            burn = encode_call("burn(uint256)", ["uint256"], [token_id])
            send_transaction(url, sender, burn, to=burned)
        sparse = _deploy_enumerable(url, artifacts, "https://sparse.test/", SPARSE_IDS)
        yield Chain(url, addresses["Moonbirds"], addresses["Loot"], uris, account, burned, sparse)


def _deploy_enumerable(url: str, artifacts: dict[str, Any], base: str, ids: list[int]) -> str:
    """A DemoEnumerable holding exactly `ids`, all minted in one transaction."""
    sender = str(rpc(url, "eth_accounts", [])[0])
    address = deploy_contract(
        url, sender, artifacts["DemoEnumerable"], ["string"] * 3, ["Enum", "ENUM", base]
    )
    mint = encode_call("mintIds(address,uint256[])", ["address", "uint256[]"], [sender, ids])
    send_transaction(url, sender, mint, to=address)
    return address


async def test_collection_facts(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        birds = await reader.collection_facts(chain.moonbirds.upper().replace("0X", "0x"))
        loot = await reader.collection_facts(chain.loot)
        with pytest.raises(NotAContract, match=r"chain id 31337\): check the address"):
            await reader.collection_facts(chain.account)  # no code: not a collection
        assert reader.round_trips == 3
    assert (birds.address, birds.name, birds.symbol, birds.total_supply) == (
        chain.moonbirds.lower(),
        "Moonbirds",
        "MOONBIRD",
        MOONBIRDS,
    )
    assert (loot.name, loot.symbol, loot.total_supply) == ("Loot", "LOOT", LOOT)


async def _ids(reader: ChainReader, address: str, supply: int | None) -> Sequence[int]:
    contract = await detect_interface(reader, address)
    return await find_token_ids(reader, address, contract, supply, 1_000_000)


async def test_detect_interface(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        birds = await detect_interface(reader, chain.moonbirds)
        loot = await detect_interface(reader, chain.loot)
        burned = await detect_interface(reader, chain.burned)
        sparse = await detect_interface(reader, chain.sparse)
        assert reader.round_trips == 4  # one batch each
    assert birds == ContractInterface("erc721", False, (0, 1))
    assert loot == ContractInterface("erc721", False, (1,))
    assert burned == ContractInterface("erc721", True, (0, 1))
    assert sparse == ContractInterface("erc721", True, ())


async def test_token_ids_by_the_0_1_rule_else_the_mint_logs(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        assert await _ids(reader, chain.moonbirds, MOONBIRDS) == range(300)
        assert await _ids(reader, chain.loot, LOOT) == range(1, 51)
        assert reader.round_trips == 2  # the interface batch settles it
        # No totalSupply: the mint logs list the ids (block number, then one query).
        assert await _ids(reader, chain.loot, None) == list(range(1, LOOT + 1))
        assert reader.round_trips == 2 + 1 + 2


async def test_enumerable_ids_are_listed_exactly(chain: Chain) -> None:
    async with ChainReader(chain.url, batch_size=40) as reader:
        burned = await reader.collection_facts(chain.burned)
        assert burned.total_supply == 97
        assert await _ids(reader, chain.burned, 97) == [
            i for i in range(100) if i not in BURNED_IDS
        ]
        assert reader.round_trips == 1 + 1 + 3  # facts, interface, tokenByIndex in 40s
        assert await _ids(reader, chain.sparse, 51) == SPARSE_IDS
        assert reader.round_trips == 5 + 1 + 2


async def test_enumerable_falls_back_when_an_index_fails(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        # tokenByIndex(51) reverts; neither 0 nor 1 is a token: the mint logs list the ids.
        assert await _ids(reader, chain.sparse, 52) == SPARSE_IDS
        # tokenByIndex(97) reverts; token 0 exists: the 0-based rule (burned ids included).
        assert await _ids(reader, chain.burned, 98) == range(98)


async def test_enumerable_gaps_are_not_minted(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        burned = await reader.token_uris(chain.burned, [0, 50, 97, 98])
        sparse = await reader.token_uris(chain.sparse, [1000, 2000, 5000])
    assert (burned[0], burned[97]) == ("ipfs://burned/0", "ipfs://burned/97")
    assert (sparse[1000], sparse[5000]) == ("https://sparse.test/1000", "https://sparse.test/5000")
    for failed in (burned[50], burned[98], sparse[2000]):
        assert isinstance(failed, ItemError) and failed.kind == "not_minted"


async def test_token_uris_in_batches(chain: Chain) -> None:
    async with ChainReader(chain.url, batch_size=128) as reader:
        birds = await reader.token_uris(chain.moonbirds, range(MOONBIRDS))
        assert reader.round_trips == math.ceil(MOONBIRDS / 128)
    assert birds == {i: f"ipfs://{CID}/{i}" for i in range(MOONBIRDS)}
    async with ChainReader(chain.url, batch_size=20) as reader:
        loot = await reader.token_uris(chain.loot, range(1, LOOT + 1))
        assert reader.round_trips == math.ceil(LOOT / 20)
    assert list(loot) == list(range(1, LOOT + 1))
    assert list(loot.values()) == chain.loot_uris


async def test_unminted_and_undecodable(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        birds = await reader.token_uris(chain.moonbirds, [299, 300, 10**9])
        loot = await reader.token_uris(chain.loot, [0, 1, LOOT + 1])
        no_code = await reader.token_uris(chain.account, [1])
        assert reader.round_trips == 3
    assert birds[299] == f"ipfs://{CID}/299"
    assert loot[1] == chain.loot_uris[0]
    for failed in (birds[300], birds[10**9], loot[0], loot[LOOT + 1]):
        assert isinstance(failed, ItemError) and failed.kind == "not_minted"
    assert isinstance(no_code[1], ItemError) and no_code[1].kind == "rpc_error"
