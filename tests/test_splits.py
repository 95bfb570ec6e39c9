"""Splits by collection (real NFT1000 files) and the seeded mini subset (DuckDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks.splits import (
    Partitioning,
    build_splits,
    hashed_split,
    load_partitioning,
    register_collection_splits,
    split_for,
)

DATA = Path(__file__).resolve().parents[2] / "shared/data/nft1000"
PARTITIONING = DATA / "partitioning.json"
REGISTRY = DATA / "collections.json"
LISTS = {"training_list": "train", "validation_list": "validation", "test_list": "test"}
HUGE = 2**256 - 1  # the largest uint256 token id, 78 decimal digits


@pytest.fixture(scope="module")
def nft1000() -> Partitioning:
    return load_partitioning(PARTITIONING, REGISTRY)


def test_real_files_give_the_published_collection_counts(nft1000: Partitioning) -> None:
    # 801 training names - 1 duplicate = 800 (BanaCat included); Etherbananas -> Etherbanullas.
    assert Counter(nft1000.splits.values()) == {"train": 800, "validation": 50, "test": 150}
    registry = json.loads(REGISTRY.read_text())["collections"]
    assert set(nft1000.splits) == set(registry)


def test_published_pair_counts_match_the_list_without_banacat(nft1000: Partitioning) -> None:
    registry = json.loads(REGISTRY.read_text())["collections"]
    pairs, mini = Counter[str](), Counter[str]()
    for name, split in nft1000.splits.items():
        if name != "BanaCat":
            pairs[split] += registry[name]["actual_collected_quantity"]
            mini[split] += min(registry[name]["actual_collected_quantity"], 1000)
    assert pairs == {"train": 6_178_249, "validation": 383_916, "test": 1_000_838}
    assert mini == {"train": 792_860, "validation": 49_738, "test": 147_615}


def test_each_quirk_has_one_note(nft1000: Partitioning) -> None:
    assert len(nft1000.notes) == 4, nft1000.notes
    notes = "\n".join(nft1000.notes)
    assert "'UninterestedUnicorns' is listed twice; the duplicate was dropped" in notes
    assert "'Etherbananas' is not in the registry; mapped to its spelling there" in notes
    assert "'BanaCat' (9,710 pairs) is not in the published train" in notes
    assert "total 1001 but lists 1000 collections" in notes
    assert load_partitioning(PARTITIONING, REGISTRY) == nft1000  # deterministic


def test_every_listed_name_keeps_its_split(nft1000: Partitioning) -> None:
    lists = json.loads(PARTITIONING.read_text())
    for list_name, split in LISTS.items():
        for name in lists[list_name]:
            assert split_for(name, nft1000) == split, name
    assert nft1000.splits["Etherbanullas"] == "train"


def test_nft1000_collections_are_found_by_address_and_spelling(nft1000: Partitioning) -> None:
    registry = json.loads(REGISTRY.read_text())["collections"]
    illogics = registry["illogics"]["contract_address"]
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


def test_hashed_split_is_the_same_in_another_process() -> None:
    names = [f"collection-{i}" for i in range(200)]
    code = (
        "import json, sys; from tasks.splits import hashed_split; "
        "print(json.dumps([hashed_split(n) for n in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    assert json.loads(out) == [hashed_split(n) for n in names]


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
    """A connection with ``tokens``, loaded from CSV (binding long Python lists is slow)."""
    rows = tmp / "tokens.csv"
    rows.write_text(
        "".join(f'"{c}","c-{c}",{first_id + i}\n' for c, n in sizes.items() for i in range(n))
    )
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE tokens AS SELECT * FROM read_csv(?, header = false, "
        "columns = {'collection': 'VARCHAR', 'contract': 'VARCHAR', 'token_id': 'VARCHAR'})",
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
    assert {int(t) for _, _, t, _, _ in rows} == set(range(HUGE - 1199, HUGE + 1))
    assert ("Huge", str(HUGE)) in {(c, t) for c, _, t, _, _ in rows}
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
