"""CryptoPunks by name on anvil: contracts that mimic the market (no tokenURI) and
CryptoPunksData are put at their real mainnet addresses, so the built-in registry's
CRYPTOPUNKS is planned as ids 0..9999 with no range given, and a block of punks is
ingested with its traits and SVG images into S3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from infra.demo_chain import deploy_contract, rpc
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, ingest_block, manifest_key, plan_blocks
from tasks.ingest.chain import ChainReader, decode_string, encode_call
from tasks.ingest.cryptopunks import ON_CHAIN_DATA, punks_plan
from tasks.ingest.manifest import from_parquet
from tasks.ingest.registry import load_registry, parse_target, registry_files
from tasks.ingest.token_source import TokenSource
from tasks.tables.traits import normalise_traits
from tests.support.stack import Services

MARKET = "0xb47e3cd837ddf8e4c57f05d70ab865de6e193bbb"
DATA = "0x16f5a35647d6f03d5d3da7b35409d65ba03af3b2"
SOURCE = TokenSource("cryptopunks", DATA)
ACCESSORIES = (
    "Earring",
    "Mohawk Dark",
    "Cap Forward",
    "Pipe",
    "Wild Hair",
    "Green Eye Shadow",
    "3D Glasses",
    "Hoodie",
)


def expected_traits(index: int) -> list[tuple[str, str]]:
    """What PunksDataLike gives punk `index`, as (trait type, value) pairs."""
    odd = {99: "Alien", 98: "Ape", 97: "Zombie"}.get(index % 100)
    if odd is not None:
        traits = [("Type", odd)]
    else:
        kind = "Male" if index % 100 % 2 == 0 else "Female"
        traits = [("Type", kind), ("Skin Tone", str(1 + index // 2 % 4))]
    return traits + [("Accessory", ACCESSORIES[(index * 7 + j * 3) % 8]) for j in range(index % 4)]


def code_at(services: Services, address: str) -> str:
    return str(rpc(services.rpc_url, "eth_getCode", [address, "latest"]))


def set_code(services: Services, address: str, code: str) -> None:
    rpc(services.rpc_url, "anvil_setCode", [address, code])


@pytest.fixture(scope="module")
def punks(services: Services) -> Iterator[None]:
    """The two contracts' runtime code at the real CryptoPunks addresses."""
    sender = str(rpc(services.rpc_url, "eth_accounts", [])[0])
    for name, address in (("PunksMarketLike", MARKET), ("PunksDataLike", DATA)):
        deployed = deploy_contract(services.rpc_url, sender, services.artifacts[name], [], [])
        set_code(services, address, code_at(services, deployed))
    yield
    for address in (MARKET, DATA):
        set_code(services, address, "0x")


def plan(services: Services, address: str) -> tuple[TokenSource, range] | None:
    async def read() -> tuple[TokenSource, range] | None:
        async with ChainReader(services.rpc_url) as chain:
            return await punks_plan(chain, address)

    return asyncio.run(read())


def test_cryptopunks_by_name_is_planned_as_ids_0_to_9999(services: Services, punks: None) -> None:
    target = parse_target("CRYPTOPUNKS", load_registry(registry_files(())))
    assert (target.address, target.ids) == (MARKET, None)
    assert ON_CHAIN_DATA[target.address].data_contract == DATA
    assert plan(services, target.address) == (SOURCE, range(10_000))
    blocks = plan_blocks(target.name, target.address, range(10_000), 1000)
    assert [(b.first, b.end) for b in blocks] == [(n, n + 1000) for n in range(0, 10_000, 1000)]
    assert plan(services, services.moonbirds_address) is None  # not a market it knows


def test_missing_total_supply_and_missing_data_contract(services: Services, punks: None) -> None:
    market, data = code_at(services, MARKET), code_at(services, DATA)
    try:
        set_code(services, MARKET, data)  # code that has no totalSupply()
        assert plan(services, MARKET) == (SOURCE, range(10_000))  # the known supply
        set_code(services, DATA, "0x")  # a node without CryptoPunksData
        with pytest.raises(ValueError, match="does not answer punkAttributes"):
            plan(services, MARKET)
    finally:
        set_code(services, MARKET, market)
        set_code(services, DATA, data)


def eth_call_string(services: Services, address: str, data: str) -> str:
    return decode_string(
        rpc(services.rpc_url, "eth_call", [{"to": address, "data": data}, "latest"])
    )


def test_a_block_of_punks_is_stored_with_traits_and_svg(
    services: Services, punks: None, settings: Settings, store: ObjectStore
) -> None:
    spec = BlockSpec("CRYPTOPUNKS", MARKET, 0, 100, source=SOURCE)
    result = ingest_block(spec, settings)
    assert (result.tokens, result.ok, sum(result.failed.values())) == (100, 100, 0)
    assert result.rpc_round_trips == 1  # 200 eth_calls in one batch

    manifest = store.get(manifest_key(store, spec))
    assert manifest is not None
    rows = {int(r.token_id): r for r in from_parquet(manifest)}
    assert sorted(rows) == list(range(100))
    for token_id in (0, 1, 7, 97, 98, 99):
        row = rows[token_id]
        assert row.status == "ok" and row.mime == "image/svg+xml", row
        assert row.metadata_key is not None and row.image_key is not None
        meta_bytes = store.read_blob(row.metadata_key)
        assert meta_bytes is not None
        metadata: dict[str, Any] = json.loads(meta_bytes)
        assert metadata["name"] == f"CryptoPunk #{token_id}"
        pairs = [(a["trait_type"], a["value"]) for a in metadata["attributes"]]
        assert pairs == expected_traits(token_id)
        # The tables stage reads the same traits from the stored metadata.
        traits = normalise_traits(metadata)
        assert [(t.trait_type, t.value) for t in traits.traits] == pairs
        assert traits.problems == ()

        svg = eth_call_string(
            services, DATA, encode_call("punkImageSvg(uint16)", ["uint16"], [token_id])
        )
        assert svg.startswith("data:image/svg+xml;utf8,<svg ")
        assert (
            store.read_blob(row.image_key) == svg.removeprefix("data:image/svg+xml;utf8,").encode()
        )
