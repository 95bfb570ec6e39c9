"""How users name collections, how settings are read, and how ids become shards (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi.abi import encode

from infra.cli import main
from tasks.core.settings import Settings, load_settings
from tasks.ingest.blocks import BLOCK, BlockSpec, plan_blocks
from tasks.ingest.chain import CollectionFacts
from tasks.ingest.erc1155 import batch_ids, substitute_id
from tasks.ingest.logs import IdSet, TooManyIds
from tasks.ingest.plan import spread
from tasks.ingest.registry import (
    CollectionTarget,
    collection_name,
    load_registry,
    parse_target,
    registry_files,
)
from tasks.ingest.token_source import ERC1155
from tasks.tables.splits import load_split_rules, split_for

MOONBIRDS_MAINNET = "0x23581767a106ae21c074b2276d25e5c3e136a68b"
AZUKI_MAINNET = "0xed5af388653567af2f388e6224dc7c4b3241c544"
LOCAL = "0x" + "ab" * 20


@pytest.fixture
def demo_registry(tmp_path: Path) -> Path:
    """A registry like the local demo's: Moonbirds at a local address."""
    demo = tmp_path / "demo.json"
    collections = {"Moonbirds": {"contract_address": LOCAL, "total_supply": 100}}
    demo.write_text(json.dumps({"collections": collections}))
    return demo


@pytest.fixture
def registry(demo_registry: Path) -> dict[str, tuple[str, str]]:
    settings = load_settings({"NFT1000_REGISTRIES": str(demo_registry)})
    return load_registry(registry_files(settings.registries))  # the demo shadows mainnet


def test_names_ranges_and_addresses(registry: dict[str, tuple[str, str]]) -> None:
    assert parse_target("moonbirds", registry) == CollectionTarget("Moonbirds", LOCAL, None)
    assert parse_target(" Moonbirds:5-9 ", registry) == CollectionTarget(
        "Moonbirds", LOCAL, (5, 10)
    )
    assert parse_target("Azuki", registry) == CollectionTarget("Azuki", AZUKI_MAINNET, None)
    upper = MOONBIRDS_MAINNET.upper().replace("0X", "0x")
    assert parse_target(f"{upper}:0-0", registry) == CollectionTarget(
        MOONBIRDS_MAINNET, MOONBIRDS_MAINNET, (0, 1)
    )


@pytest.mark.parametrize("spec", ["NoSuchCollection", "Moonbirds:9-5", "0x1234", ""])
def test_bad_specs_say_what_is_wrong(registry: dict[str, tuple[str, str]], spec: str) -> None:
    with pytest.raises(ValueError):
        parse_target(spec, registry)


def test_nft1000_names_and_addresses_resolve_with_no_settings() -> None:
    """The built-in registry: no NFT1000_REGISTRIES, yet NFT1000's names and split work."""
    settings = load_settings({})
    registry = load_registry(registry_files(settings.registries))
    assert parse_target("Azuki:0-9", registry) == CollectionTarget("Azuki", AZUKI_MAINNET, (0, 10))
    assert parse_target("MOONBIRDS", registry).address == MOONBIRDS_MAINNET
    by_address = parse_target(AZUKI_MAINNET.upper().replace("0X", "0x"), registry)
    assert by_address == CollectionTarget(AZUKI_MAINNET, AZUKI_MAINNET, None)
    rules = load_split_rules(settings.partitioning, settings.registries)
    assert split_for("Azuki", rules) == split_for(AZUKI_MAINNET, rules) == "train"
    assert split_for("0bits", rules) == "test"
    with pytest.raises(ValueError, match="`nft1000 collections TEXT` searches them"):
        parse_target("NoSuchCollection", registry)


def test_registries_in_settings_shadow_the_built_in_one(demo_registry: Path) -> None:
    settings = load_settings({"NFT1000_REGISTRIES": str(demo_registry)})
    registry = load_registry(registry_files(settings.registries))
    assert parse_target("Moonbirds", registry).address == LOCAL
    assert parse_target("Azuki", registry).address == AZUKI_MAINNET  # the rest still there
    assert load_registry(registry_files(()))["moonbirds"] == ("Moonbirds", MOONBIRDS_MAINNET)
    rules = load_split_rules(settings.partitioning, settings.registries)
    assert split_for("Moonbirds", rules) == "train"  # the published split, by name


def test_collections_command_searches_every_registry(
    demo_registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NFT1000_REGISTRIES", str(demo_registry))
    home = ["--home", str(tmp_path / "no-stack")]  # no local stack: the shell's settings only
    assert main(["collections", "MOONBIRDS", "--limit", "4", *home]) == 0
    assert capsys.readouterr().out == (
        "name                address                                     supply  split  registry\n"
        "AIMoonbirds         0x64b6b4142d4d78e49d53430c1d3939f2317f9085  10000   train  built-in\n"
        f"Moonbirds           {LOCAL}  100     train  {demo_registry}\n"
        f"Moonbirds           {MOONBIRDS_MAINNET}  10000   train  built-in (shadowed)\n"
        "Moonbirds Oddities  0x1792a96e5668ad7c167ab804a100ce42395ce54d  10000   train  built-in\n"
        "6 of 1001 collections matching 'MOONBIRDS' (train 6)\n"
        "showing the first 4: search for more, or --limit 0 for all\n"
        "(shadowed): an earlier registry knows this name, so that one is used\n"
    )
    assert main(["collections", "--split", "validation", "--limit", "0", *home]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "50 of 1001 collections in validation (validation 50)"
    )
    assert main(["collections", "no such collection", *home]) == 1
    assert "no collection matching 'no such collection'" in capsys.readouterr().err


def test_shards_are_aligned_blocks_clipped_to_the_ids() -> None:
    shards = plan_blocks("Loot", "0xc", range(1, 1001), 1000)
    assert shards == [BlockSpec("Loot", "0xc", 1, 1000), BlockSpec("Loot", "0xc", 1000, 1001)]
    assert [s.name for s in shards] == ["shard-0-999", "shard-1000-1999"]
    assert plan_blocks("C", "0xc", range(2500, 2600), 1000) == [BlockSpec("C", "0xc", 2500, 2600)]
    assert plan_blocks("C", "0xc", range(0), 1000) == []
    assert plan_blocks("C", "0xc", range(7, 7), 1000) == []


def test_shard_size_sets_the_step_never_the_blocks() -> None:
    small = plan_blocks("C", "0xc", range(0, 2500), 250)
    assert [(s.first, s.end, s.step) for s in small] == [
        (0, 1000, 250),
        (1000, 2000, 250),
        (2000, 2500, 250),
    ]
    large = plan_blocks("C", "0xc", range(0, 2500), 5000)
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
        shards = plan_blocks("C", "0xc", ids, size)
        names = [s.name for s in shards]
        assert len(names) == len(set(names)), "two tasks of one run write one manifest"
        covered = [i for s in shards for i in range(s.first, s.end)]
        assert covered == list(ids)
        for s in shards:
            assert s.name == f"shard-{s.first // BLOCK * BLOCK}-{s.first // BLOCK * BLOCK + 999}"
            assert s.end - s.first <= BLOCK and s.step <= min(size, BLOCK)


def test_a_spec_stays_inside_one_block() -> None:
    with pytest.raises(ValueError, match="one block"):
        BlockSpec("C", "0xc", 999, 1001)
    with pytest.raises(ValueError, match="one block"):
        BlockSpec("C", "0xc", 5, 5)
    with pytest.raises(ValueError, match="step"):
        BlockSpec("C", "0xc", 0, 10, 0)


def test_a_contract_claiming_a_huge_supply_needs_an_explicit_range() -> None:
    with pytest.raises(ValueError, match="explicit range"):
        plan_blocks("C", "0xc", range(0, 2**256 - 1), 1000, max_tokens=1_000_000)
    with pytest.raises(ValueError, match="explicit range"):
        plan_blocks("C", "0xc", range(2**64, 2**64 + 1_000_001), 1000, max_tokens=1_000_000)
    top = plan_blocks("C", "0xc", range(2**256 - 3, 2**256), 1000, max_tokens=1_000_000)
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


def test_listed_ids_become_shards_that_read_exactly_them() -> None:
    """Sparse ids (tokenByIndex or mint logs): each shard lists its block's ids in `only`,
    unless they fill its span; the limit counts ids, not the span they cover."""
    ids = [3, 7, 999, 1000, 1001, 1002, 4_000_000]
    shards = plan_blocks("C", "0xc", ids, 250, max_tokens=7, source=ERC1155)
    assert shards == [
        BlockSpec("C", "0xc", 3, 1000, 250, ERC1155, (3, 7, 999)),
        BlockSpec("C", "0xc", 1000, 1003, 250, ERC1155),  # dense: the range says it
        BlockSpec("C", "0xc", 4_000_000, 4_000_001, 250, ERC1155),
    ]
    assert [list(s.token_ids) for s in shards] == [[3, 7, 999], [1000, 1001, 1002], [4_000_000]]
    assert plan_blocks("C", "0xc", [], 1000) == []
    with pytest.raises(ValueError, match=r"7 token ids \(3..4000000\) exceed"):
        plan_blocks("C", "0xc", ids, 1000, max_tokens=6)


def test_the_sample_spreads_over_the_planned_ids() -> None:
    assert spread(range(5), 20) == [0, 1, 2, 3, 4]
    assert spread(range(100), 5) == [0, 24, 49, 74, 99]
    assert spread([10, 20, 30, 40], 2) == [10, 40]
    top = spread(range(2**256 - 10**6, 2**256), 3)
    assert top == [2**256 - 10**6, 2**256 - 10**6 + 499_999, 2**256 - 1]


def _batch_data(ids: list[int], values: list[int]) -> bytes:
    return encode(["uint256[]", "uint256[]"], [ids, values])


def test_transfer_batch_ids_are_read_within_bounds() -> None:
    """TransferBatch data is contract-written: lengths are checked against the bytes there,
    and more ids than the collection may still hold are refused before decoding."""
    assert batch_ids(_batch_data([1, 2**256 - 1, 5], [1, 1, 1]), room=3) == [1, 2**256 - 1, 5]
    with pytest.raises(TooManyIds):
        batch_ids(_batch_data(list(range(100)), [1] * 100), room=99)
    lying = bytearray(_batch_data([1, 2], [1, 1]))
    lying[64 + 28 : 64 + 32] = (10**6).to_bytes(4, "big")  # ids length: a million
    assert batch_ids(bytes(lying), room=10**9) == []
    far = (2**255).to_bytes(32, "big") + bytes(32)  # offset far past the data
    assert batch_ids(far, room=10) == []
    assert batch_ids(b"\x00" * 10, room=10) == []


def test_mint_ids_stop_at_the_collection_limit() -> None:
    found = IdSet(3)
    found.add([1, 2, 2, 3])
    assert found.room == 1
    with pytest.raises(TooManyIds, match="max_tokens_per_collection=3"):
        found.add([4])


def test_erc1155_id_substitution() -> None:
    assert substitute_id("ipfs://cid/{id}.json", 0x4CCE) == "ipfs://cid/" + "0" * 60 + "4cce.json"
    assert substitute_id("https://a.test/{id}?v={id}", 1) == (
        "https://a.test/" + f"{1:064x}" + "?v=" + f"{1:064x}"
    )
    assert substitute_id("https://a.test/static.json", 5) == "https://a.test/static.json"
