"""How users name collections, how settings are read, and how ids become shards (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.chain import CollectionFacts
from tasks.registry import CollectionTarget, collection_name, load_registry, parse_target
from tasks.settings import Settings, load_settings
from tasks.shard import BLOCK, ShardSpec, plan_shards

NFT1000 = Path(__file__).resolve().parents[2] / "shared/data/nft1000/collections.json"
MOONBIRDS_MAINNET = "0x23581767a106ae21c074b2276d25e5c3e136a68b"


@pytest.fixture
def registry(tmp_path: Path) -> dict[str, tuple[str, str]]:
    demo = tmp_path / "demo.json"
    local = "0x" + "ab" * 20
    demo.write_text(json.dumps({"collections": {"Moonbirds": {"contract_address": local}}}))
    return load_registry([demo, NFT1000])  # the demo shadows mainnet


def test_names_ranges_and_addresses(registry: dict[str, tuple[str, str]]) -> None:
    local = "0x" + "ab" * 20
    assert parse_target("moonbirds", registry) == CollectionTarget("Moonbirds", local, None)
    assert parse_target(" Moonbirds:5-9 ", registry) == CollectionTarget(
        "Moonbirds", local, (5, 10)
    )
    azuki = parse_target("Azuki", registry)
    assert azuki.name == "Azuki" and azuki.address.startswith("0x") and azuki.ids is None
    upper = MOONBIRDS_MAINNET.upper().replace("0X", "0x")
    assert parse_target(f"{upper}:0-0", registry) == CollectionTarget(
        MOONBIRDS_MAINNET, MOONBIRDS_MAINNET, (0, 1)
    )


@pytest.mark.parametrize("spec", ["NoSuchCollection", "Moonbirds:9-5", "0x1234", ""])
def test_bad_specs_say_what_is_wrong(registry: dict[str, tuple[str, str]], spec: str) -> None:
    with pytest.raises(ValueError):
        parse_target(spec, registry)


def test_shards_are_aligned_blocks_clipped_to_the_ids() -> None:
    shards = plan_shards("Loot", "0xc", range(1, 1001), 1000)
    assert shards == [ShardSpec("Loot", "0xc", 1, 1000), ShardSpec("Loot", "0xc", 1000, 1001)]
    assert [s.name for s in shards] == ["shard-0-999", "shard-1000-1999"]
    assert plan_shards("C", "0xc", range(2500, 2600), 1000) == [ShardSpec("C", "0xc", 2500, 2600)]
    assert plan_shards("C", "0xc", range(0), 1000) == []
    assert plan_shards("C", "0xc", range(7, 7), 1000) == []


def test_shard_size_sets_the_step_never_the_blocks() -> None:
    small = plan_shards("C", "0xc", range(0, 2500), 250)
    assert [(s.first, s.end, s.step) for s in small] == [
        (0, 1000, 250),
        (1000, 2000, 250),
        (2000, 2500, 250),
    ]
    large = plan_shards("C", "0xc", range(0, 2500), 5000)
    assert [(s.first, s.end, s.step) for s in large] == [
        (0, 1000, BLOCK),
        (1000, 2000, BLOCK),
        (2000, 2500, BLOCK),
    ]


def test_every_plan_puts_an_id_in_the_same_manifest_once() -> None:
    """Whatever the range and shard_size, an id's manifest depends on the id alone."""
    plans = [
        (range(0, 100), 50),
        (range(0, 10_000), 1000),
        (range(37, 4321), 7),
        (range(999, 1001), 1),
        (range(1, 1001), 3000),
    ]
    for ids, size in plans:
        shards = plan_shards("C", "0xc", ids, size)
        names = [s.name for s in shards]
        assert len(names) == len(set(names)), "two tasks of one run write one manifest"
        covered = [i for s in shards for i in range(s.first, s.end)]
        assert covered == list(ids)
        for s in shards:
            assert s.name == f"shard-{s.first // BLOCK * BLOCK}-{s.first // BLOCK * BLOCK + 999}"
            assert s.end - s.first <= BLOCK and s.step <= min(size, BLOCK)


def test_a_spec_stays_inside_one_block() -> None:
    with pytest.raises(ValueError, match="one block"):
        ShardSpec("C", "0xc", 999, 1001)
    with pytest.raises(ValueError, match="one block"):
        ShardSpec("C", "0xc", 5, 5)
    with pytest.raises(ValueError, match="step"):
        ShardSpec("C", "0xc", 0, 10, 0)


def test_a_contract_claiming_a_huge_supply_needs_an_explicit_range() -> None:
    with pytest.raises(ValueError, match="explicit range"):
        plan_shards("C", "0xc", range(0, 2**256 - 1), 1000, max_tokens=1_000_000)
    with pytest.raises(ValueError, match="explicit range"):
        plan_shards("C", "0xc", range(2**64, 2**64 + 1_000_001), 1000, max_tokens=1_000_000)
    top = plan_shards("C", "0xc", range(2**256 - 3, 2**256), 1000, max_tokens=1_000_000)
    assert [(s.first, s.end) for s in top] == [(2**256 - 3, 2**256)]
    assert top[0].block == 2**256 - 2**256 % 1000


def test_settings_from_env_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "nft1000.toml"
    config.write_text('rpc_batch_size = 100\nipfs_gateways = ["https://a.example"]\n')
    settings = load_settings(
        {
            "NFT1000_CONFIG": str(config),
            "NFT1000_RPC_BATCH_SIZE": "250",  # the environment wins over the file
            "NFT1000_ALLOW_HOSTS": "127.0.0.1:8899, localhost:1",
            "NFT1000_S3_ENDPOINT_URL": "none",
            "NFT1000_DASK_ADDRESS": "",
        }
    )
    assert settings.rpc_batch_size == 250
    assert settings.ipfs_gateways == ("https://a.example",)
    assert settings.allow_hosts == ("127.0.0.1:8899", "localhost:1")
    assert settings.s3_endpoint_url is None and settings.dask_address is None
    assert load_settings({}) == Settings()
    with pytest.raises(ValueError, match="unknown settings"):
        bad = tmp_path / "bad.toml"
        bad.write_text("no_such_setting = 1\n")
        load_settings({"NFT1000_CONFIG": str(bad)})


def test_collection_names_from_contracts_are_clipped_and_valid() -> None:
    address = "0x" + "cd" * 20
    by_address = CollectionTarget(address, address, None)
    hostile = CollectionFacts(address, "  Evil\n" + "x" * 10_000 + "\ud800", "EVIL", 1)
    name = collection_name(by_address, hostile)
    assert name.startswith("Evil x") and len(name) == 100
    assert collection_name(by_address, CollectionFacts(address, None, None, None)) == address
    named = CollectionTarget("Moonbirds", address, None)
    assert collection_name(named, hostile) == "Moonbirds"
