"""ChainReader against a real anvil holding demo Moonbirds (0-based), Loot (1-based) and
enumerable collections whose ids have burns and gaps."""

from __future__ import annotations

import math
from collections.abc import Iterator
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


async def test_token_id_range(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        assert await reader.token_id_range(chain.moonbirds, MOONBIRDS, None) == range(300)
        assert await reader.token_id_range(chain.loot, LOOT, None) == range(1, 51)
        assert await reader.token_id_range(chain.loot, LOOT, (5, 10)) == range(5, 10)
        assert await reader.token_id_range(chain.loot, None, (1, 3)) == range(1, 3)
        with pytest.raises(ValueError, match="range"):
            await reader.token_id_range(chain.loot, None, None)
        with pytest.raises(ValueError, match="range"):
            await reader.token_id_range(chain.loot, LOOT, (10, 5))


async def test_enumerable_id_span(chain: Chain) -> None:
    async with ChainReader(chain.url, batch_size=40) as reader:
        burned = await reader.collection_facts(chain.burned)
        assert burned.total_supply == 97
        assert await reader.token_id_range(chain.burned, 97, None) == range(98)
        assert reader.round_trips == 1 + 1 + 3  # facts, probe, tokenByIndex in 40s
        assert await reader.token_id_range(chain.sparse, 51, None) == range(1000, 5001)
        assert reader.round_trips == 5 + 1 + 2
        # Not enumerable: the probe alone decides, as before.
        assert await reader.token_id_range(chain.moonbirds, MOONBIRDS, None) == range(300)
        assert reader.round_trips == 8 + 1


async def test_enumerable_falls_back_when_an_index_fails(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        # tokenByIndex(51) reverts: no token has that index, so the 1-based rule applies.
        assert await reader.token_id_range(chain.sparse, 52, None) == range(1, 53)
        assert await reader.token_id_range(chain.burned, 98, None) == range(98)
        assert reader.round_trips == 4


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
