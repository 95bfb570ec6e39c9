"""ChainReader against a real anvil holding demo Moonbirds (0-based) and Loot (1-based)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_abi.abi import encode

from infra.demo_chain import anvil_spec, compile_contracts, deploy_demo, read_loot_uris
from infra.process import free_port, running
from tasks.chain import ChainReader, StringTooLarge, decode_string, encode_call
from tasks.errors import ItemError

LOOT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/loot.tar.gz"
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
MOONBIRDS = 300
LOOT = 50

services = pytest.mark.services


@dataclass(frozen=True)
class Chain:
    url: str
    moonbirds: str
    loot: str
    loot_uris: list[str]
    account: str  # an address with no code


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
        yield Chain(url, addresses["Moonbirds"], addresses["Loot"], uris, account)


@services
async def test_collection_facts(chain: Chain) -> None:
    async with ChainReader(chain.url) as reader:
        birds = await reader.collection_facts(chain.moonbirds.upper().replace("0X", "0x"))
        loot = await reader.collection_facts(chain.loot)
        nothing = await reader.collection_facts(chain.account)
        assert reader.round_trips == 3
    assert (birds.address, birds.name, birds.symbol, birds.total_supply) == (
        chain.moonbirds.lower(),
        "Moonbirds",
        "MOONBIRD",
        MOONBIRDS,
    )
    assert (loot.name, loot.symbol, loot.total_supply) == ("Loot", "LOOT", LOOT)
    assert (nothing.name, nothing.symbol, nothing.total_supply) == (None, None, None)


@services
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


@services
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


@services
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


async def test_node_down_fails_every_token() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ChainReader(url, batch_size=2, attempts=2, backoff_s=0.01) as reader:
        uris = await reader.token_uris("0x" + "11" * 20, range(5))
        assert reader.round_trips == 3 * 2
    for uri in uris.values():
        assert isinstance(uri, ItemError) and uri.kind == "rpc_error" and uri.retryable


def test_encode_call() -> None:
    assert encode_call("tokenURI(uint256)", ["uint256"], [1]) == "0xc87b56dd" + "00" * 31 + "01"
    assert encode_call("totalSupply()", [], []) == "0x18160ddd"


def test_decode_string() -> None:
    assert decode_string("0x" + encode(["string"], ["ipfs://x/1"]).hex()) == "ipfs://x/1"
    assert decode_string("0x" + encode(["string"], [""]).hex()) == ""
    assert decode_string("0x" + b"MKR".ljust(32, b"\0").hex()) == "MKR"  # bytes32 name
    with pytest.raises(StringTooLarge):
        decode_string("0x" + encode(["string"], ["a" * 100]).hex(), max_bytes=50)
    for garbage in ("0x", "0x1234", "nothex", "0x" + encode(["bytes"], [b"\xff"]).hex()):
        with pytest.raises(ValueError):
            decode_string(garbage)
