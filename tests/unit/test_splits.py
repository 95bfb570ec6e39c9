"""Splits by collection (the built-in NFT1000 registry and its generator) and the seeded
mini subset (DuckDB)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from infra.build_registry import SOURCE, build, main, render
from tasks.ingest.chain import ADDRESS
from tasks.ingest.registry import BUILTIN_REGISTRY, load_registry
from tasks.tables.splits import (
    Partitioning,
    build_splits,
    hashed_split,
    load_partitioning,
    load_split_rules,
    register_collection_splits,
    registry_partitioning,
    split_for,
)

SHIPPED = BUILTIN_REGISTRY.read_text()
COLLECTIONS: dict[str, dict[str, Any]] = json.loads(SHIPPED)["collections"]
HUGE = 2**256 - 1  # the largest uint256 token id, 78 decimal digits


@pytest.fixture(scope="module")
def nft1000() -> Partitioning:
    return load_split_rules(None, ())  # no settings: the built-in registry's split


def test_built_in_registry_gives_the_published_collection_counts(nft1000: Partitioning) -> None:
    # 801 training names - 1 duplicate = 800 (BanaCat included); Etherbananas -> Etherbanullas.
    assert len(COLLECTIONS) == 1000
    assert Counter(nft1000.splits.values()) == {"train": 800, "validation": 50, "test": 150}
    assert set(nft1000.splits) == set(COLLECTIONS)
    assert SHIPPED.count('"UninterestedUnicorns"') == 1
    assert nft1000.splits["Etherbanullas"] == nft1000.splits["BanaCat"] == "train"


def test_built_in_registry_holds_facts_only() -> None:
    document = json.loads(SHIPPED)
    assert set(document) == {"source", "notes", "aliases", "collections"}
    assert document["aliases"] == {"etherbananas": "Etherbanullas"}
    for name, entry in COLLECTIONS.items():
        assert set(entry) == {"contract_address", "total_supply", "split"}, name
        assert ADDRESS.fullmatch(entry["contract_address"]), name
        assert entry["contract_address"] == entry["contract_address"].lower(), name
        assert type(entry["total_supply"]) is int and entry["total_supply"] >= 0, name
        assert entry["split"] in {"train", "validation", "test"}, name
    assert render(document) == SHIPPED  # the generator's own output: sorted, one line each
    assert SHIPPED.isascii() and len(SHIPPED.splitlines()) == 1000 + 12


def test_each_quirk_has_one_note(nft1000: Partitioning) -> None:
    assert len(nft1000.notes) == 4, nft1000.notes
    notes = "\n".join(nft1000.notes)
    assert "'UninterestedUnicorns' is listed twice; the duplicate was dropped" in notes
    assert "'Etherbananas' is not in the registry; mapped to its spelling there" in notes
    assert "'BanaCat' (9,710 pairs) is not in the published train" in notes
    assert "total 1001 but lists 1000 collections" in notes
    assert load_split_rules(None, ()) == nft1000  # deterministic


def test_every_collection_keeps_its_split(nft1000: Partitioning) -> None:
    for name, entry in COLLECTIONS.items():
        assert split_for(name, nft1000) == entry["split"], name
        assert split_for(entry["contract_address"], nft1000) == entry["split"], name
    assert split_for("Etherbananas", nft1000) == "train"  # the split file's spelling


def test_nft1000_collections_are_found_by_address_and_spelling(nft1000: Partitioning) -> None:
    illogics = COLLECTIONS["illogics"]["contract_address"]
    assert split_for(illogics.upper().replace("0X", "0x"), nft1000) == "validation"
    assert split_for("ILLOGICS", nft1000) == "validation"
    assert split_for("Cool  cats", nft1000) == "train"


def test_unknown_collections_split_by_a_stable_hash(nft1000: Partitioning) -> None:
    # Pinned values: a change here reshuffles every non-NFT1000 collection.
    assert split_for("Loot (for Adventurers)", nft1000) == "train"
    assert split_for("Moonbirds Demo", nft1000) == "test"
    assert split_for("demo-4", nft1000) == "validation"
    shares = Counter(hashed_split(f"collection-{i}") for i in range(20_000))
    assert shares["train"] / 20_000 == pytest.approx(0.80, abs=0.01)
    assert shares["validation"] / 20_000 == pytest.approx(0.05, abs=0.01)
    assert shares["test"] / 20_000 == pytest.approx(0.15, abs=0.01)


# --- the generator of the built-in registry ----------------------------------------------

UPSTREAM = {
    "total": 6,
    "last_update": "2024-01-01 00:00:00",
    "collections": {
        "Zeta Cats": {
            "project_name": "Zeta Cats",
            "contract_address": "0x" + "0" * 38 + "AA",
            "total_supply": 10,
            "actual_collected_quantity": 9,
            "description": "secret words",
            "official_url": "https://zeta.example",
            "checksum_sha256": "deadbeef",
        },
        "Etherbanullas": {"contract_address": "0x" + "0" * 38 + "bb", "total_supply": 750},
        "BanaCat": {
            "contract_address": "0x" + "0" * 38 + "cc",
            "total_supply": 5,
            "actual_collected_quantity": 5,
        },
        "CoolCats": {"contract_address": "0x" + "0" * 38 + "dd", "total_supply": 3},
        "Lonely": {"contract_address": "0x" + "0" * 38 + "ee", "total_supply": 1},
    },
}
UPSTREAM_LISTS = {
    "training_list": ["Zeta Cats", "Etherbananas", "Zeta Cats", "BanaCat"],
    "validation_list": ["cool cats"],
    "test_list": [],
}
GENERATED = (
    "{\n"
    f'  "source": {json.dumps(SOURCE)},\n'
    '  "notes": [\n'
    '    "registry header says total 6 but lists 5 collections; the listed ones are used",\n'
    "    \"training_list: 'Etherbananas' is not in the registry; mapped to its spelling there, "
    "'Etherbanullas'\",\n"
    "    \"training_list: 'Zeta Cats' is listed twice; the duplicate was dropped\",\n"
    "    \"training_list: 'BanaCat' (5 pairs) is not in the published train 800 collections / "
    '6,178,249 pairs; kept in train as listed",\n'
    "    \"validation_list: 'cool cats' matched registry name 'CoolCats' ignoring case and "
    'spaces",\n'
    "    \"registry name 'Lonely' is in no split; it gets a hashed split\"\n"
    "  ],\n"
    '  "aliases": {"etherbananas": "Etherbanullas"},\n'
    '  "collections": {\n'
    '    "BanaCat": {"contract_address": "0x00000000000000000000000000000000000000cc", '
    '"total_supply": 5, "split": "train"},\n'
    '    "CoolCats": {"contract_address": "0x00000000000000000000000000000000000000dd", '
    '"total_supply": 3, "split": "validation"},\n'
    '    "Etherbanullas": {"contract_address": "0x00000000000000000000000000000000000000bb", '
    '"total_supply": 750, "split": "train"},\n'
    '    "Lonely": {"contract_address": "0x00000000000000000000000000000000000000ee", '
    '"total_supply": 1, "split": null},\n'
    '    "Zeta Cats": {"contract_address": "0x00000000000000000000000000000000000000aa", '
    '"total_supply": 10, "split": "train"}\n'
    "  }\n"
    "}\n"
)


def test_generator_keeps_facts_and_resolves_quirks_as_load_partitioning(tmp_path: Path) -> None:
    reg, part, out = tmp_path / "collections.json", tmp_path / "partitioning.json", tmp_path / "o"
    reg.write_text(json.dumps(UPSTREAM))
    part.write_text(json.dumps(UPSTREAM_LISTS))
    assert main([str(reg), str(part), "--output", str(out)]) == 0
    assert out.read_text() == GENERATED
    assert render(build(reg, part)) == GENERATED  # the same again
    # Read back, it is the split nft1000/tables made of the two files, and a registry.
    assert registry_partitioning(out) == load_partitioning(part, reg)
    assert load_registry([out])["zeta cats"] == ("Zeta Cats", "0x" + "0" * 38 + "aa")


def test_generator_refuses_entries_without_facts(tmp_path: Path) -> None:
    reg, part = tmp_path / "collections.json", tmp_path / "partitioning.json"
    part.write_text(json.dumps({"training_list": ["A"], "validation_list": [], "test_list": []}))
    for entry, error in [
        ({"contract_address": "0x12", "total_supply": 1}, "not a 0x address"),
        ({"contract_address": "0x" + "1" * 40}, "total_supply None"),
    ]:
        reg.write_text(json.dumps({"collections": {"A": entry}}))
        with pytest.raises(ValueError, match=error):
            build(reg, part)


def test_another_partitioning_file_overrides_the_built_in_split(tmp_path: Path) -> None:
    """NFT1000_PARTITIONING, its names resolved through the built-in registry."""
    part = tmp_path / "partitioning.json"
    lists = {"training_list": ["azuki"], "validation_list": ["Moonbirds"], "test_list": []}
    part.write_text(json.dumps(lists))
    rules = load_split_rules(part, ())
    assert split_for("Azuki", rules) == "train" and split_for("Moonbirds", rules) == "validation"
    assert split_for("0bits", rules) == hashed_split("0bits")  # in no split of this file
    assert (
        rules.notes[0]
        == "training_list: 'azuki' matched registry name 'Azuki' ignoring case and spaces"
    )


def _write(tmp: Path, lists: dict[str, list[str]], names: list[str]) -> tuple[Path, Path]:
    part, reg = tmp / "partitioning.json", tmp / "collections.json"
    part.write_text(json.dumps(lists))
    collections = {
        n: {"project_name": n, "contract_address": f"0x{i:040x}"} for i, n in enumerate(names)
    }
    reg.write_text(json.dumps({"collections": collections}))
    return part, reg


def test_case_and_space_differences_are_matched_with_a_note(tmp_path: Path) -> None:
    lists = {"training_list": ["cool cats"], "validation_list": ["B"], "test_list": ["C"]}
    parts = load_partitioning(*_write(tmp_path, lists, ["CoolCats", "B", "C"]))
    assert parts.splits == {"CoolCats": "train", "B": "validation", "C": "test"}
    assert parts.notes == (
        "training_list: 'cool cats' matched registry name 'CoolCats' ignoring case and spaces",
    )


def test_registry_names_in_no_split_are_noted_and_hashed(tmp_path: Path) -> None:
    lists: dict[str, list[str]] = {"training_list": ["A"], "validation_list": [], "test_list": []}
    parts = load_partitioning(*_write(tmp_path, lists, ["A", "demo-4"]))
    assert parts.notes == ("registry name 'demo-4' is in no split; it gets a hashed split",)
    assert split_for("demo-4", parts) == "validation"
    assert split_for("0x" + "0" * 39 + "1", parts) == "validation"  # by address: same hash


@pytest.mark.parametrize(
    ("lists", "error"),
    [
        ({"training_list": ["A"], "validation_list": ["a"], "test_list": []}, "in both"),
        ({"training_list": ["A", "Z"], "validation_list": [], "test_list": []}, "'Z'"),
    ],
)
def test_names_that_cannot_be_placed_are_errors(
    tmp_path: Path, lists: dict[str, list[str]], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        load_partitioning(*_write(tmp_path, lists, ["A"]))


def test_a_differing_embedded_partitioning_is_noted(tmp_path: Path) -> None:
    lists: dict[str, list[str]] = {"training_list": ["A"], "validation_list": [], "test_list": []}
    part, reg = _write(tmp_path, lists, ["A"])
    data = json.loads(reg.read_text())
    reg.write_text(json.dumps({**data, "data_partitioning": {**lists, "test_list": ["A"]}}))
    assert load_partitioning(part, reg).notes == (
        "collections.json's data_partitioning differs from partitioning.json; "
        "partitioning.json is used",
    )


# --- the mini subset -------------------------------------------------------------------------

SIZES = {"Moonbirds": 2500, "illogics": 1000, "Tiny": 1, "Loot (for Adventurers)": 1001}


def _tokens(tmp: Path, sizes: dict[str, int], first_id: int = 0) -> duckdb.DuckDBPyConnection:
    """A connection with ``tokens`` (none an unrevealed placeholder), loaded from CSV
    (binding long Python lists is slow)."""
    rows = tmp / "tokens.csv"
    rows.write_text(
        "".join(f'"{c}","c-{c}",{first_id + i},false\n' for c, n in sizes.items() for i in range(n))
    )
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE tokens AS SELECT * FROM read_csv(?, header = false, columns = "
        "{'collection': 'VARCHAR', 'contract': 'VARCHAR', 'token_id': 'VARCHAR', "
        "'unrevealed': 'BOOLEAN'})",
        [str(rows)],
    )
    return con


def _mini(con: duckdb.DuckDBPyConnection, seed: int, per_collection: int = 1000) -> set[Any]:
    build_splits(con, seed, per_collection)
    return set(con.execute("SELECT collection, token_id FROM splits WHERE in_mini").fetchall())


def test_mini_keeps_min_n_1000_tokens_per_collection(tmp_path: Path, nft1000: Partitioning) -> None:
    con = _tokens(tmp_path, SIZES)
    register_collection_splits(con, nft1000)
    build_splits(con, seed=7)
    counts = con.execute(
        "SELECT collection, count(*), count(*) FILTER (in_mini), count(DISTINCT split) "
        "FROM splits GROUP BY collection"
    ).fetchall()
    assert {c: (n, mini, k) for c, n, mini, k in counts} == {
        c: (n, min(n, 1000), 1) for c, n in SIZES.items()
    }
    split_of = dict(con.execute("SELECT DISTINCT collection, split FROM splits").fetchall())
    assert split_of == {c: split_for(c, nft1000) for c in SIZES}
    assert split_of["illogics"] == "validation"


def test_mini_is_the_same_for_a_seed_and_differs_for_another(
    tmp_path: Path, nft1000: Partitioning
) -> None:
    con = _tokens(tmp_path, SIZES)
    register_collection_splits(con, nft1000)
    first = _mini(con, seed=1)
    again = _tokens(tmp_path, SIZES)
    register_collection_splits(again, nft1000)
    assert _mini(again, seed=1) == first  # another connection, same draw
    other = _mini(con, seed=2)
    assert len(other) == len(first) and other != first
    moonbirds = sorted((t for c, t in first if c == "Moonbirds"), key=int)
    assert moonbirds != [str(i) for i in range(1000)]  # a draw, not the lowest ids


def test_mini_handles_huge_decimal_ids_and_duplicates(
    tmp_path: Path, nft1000: Partitioning
) -> None:
    con = _tokens(tmp_path, {"Huge": 1200}, first_id=HUGE - 1199)
    con.execute("INSERT INTO tokens SELECT * FROM tokens LIMIT 50")  # duplicate rows
    register_collection_splits(con, nft1000)
    mini = _mini(con, seed=HUGE)  # a seed beyond any integer type
    rows = con.execute("SELECT * FROM splits").fetchall()
    assert len(rows) == 1200 and len(mini) == 1000
    assert {int(t) for _, _, t, *_ in rows} == set(range(HUGE - 1199, HUGE + 1))
    assert ("Huge", str(HUGE)) in {(c, t) for c, _, t, *_ in rows}
    assert _mini(con, seed=-HUGE) != mini
    assert _mini(con, seed=HUGE, per_collection=3) <= mini  # same ranking, smaller cut


def test_collections_without_exactly_one_split_are_errors(tmp_path: Path) -> None:
    con = _tokens(tmp_path, {"A": 3, "B": 3})
    con.execute("CREATE TABLE collection_splits AS SELECT 'A' AS collection, 'train' AS split")
    with pytest.raises(duckdb.InvalidInputException, match="B is not in collection_splits"):
        build_splits(con, seed=0)
    con.execute("INSERT INTO collection_splits VALUES ('B', 'test'), ('A', 'test')")
    with pytest.raises(duckdb.InvalidInputException, match="A has more than one split"):
        build_splits(con, seed=0)
    with pytest.raises(ValueError, match="per_collection"):
        build_splits(con, seed=0, per_collection=-1)
