"""How users name collections, how settings are read, and how ids become shards (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.registry import CollectionTarget, load_registry, parse_target
from tasks.settings import Settings, load_settings
from tasks.shard import ShardSpec, plan_shards

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


def test_shards_cover_the_range_once() -> None:
    shards = plan_shards("C", "0xc", range(1, 2501), 1000)
    assert shards == [
        ShardSpec("C", "0xc", 1, 1001),
        ShardSpec("C", "0xc", 1001, 2001),
        ShardSpec("C", "0xc", 2001, 2501),
    ]
    assert [s.name for s in shards] == ["shard-1-1000", "shard-1001-2000", "shard-2001-2500"]
    assert plan_shards("C", "0xc", range(0), 1000) == []


def test_a_contract_claiming_a_huge_supply_needs_an_explicit_range() -> None:
    with pytest.raises(ValueError, match="explicit range"):
        plan_shards("C", "0xc", range(0, 2**256 - 1), 1000, max_tokens=1_000_000)


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
