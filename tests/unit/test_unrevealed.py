"""Unrevealed collections (sql/tables/unrevealed.sql, sql/ingest/summary.sql): tokens
that show one placeholder are flagged, kept out of rarity and exports, and their
collection is named for a re-ingest; editions and 1-of-1s with copies are not."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks.core import duck
from tasks.core.folders import LocalFolder
from tasks.core.sql import quote
from tasks.export.items import export_items
from tasks.ingest.manifest import ManifestRow, to_parquet
from tasks.ingest.summary import PLACEHOLDER_RUN, summary_rows
from tasks.tables.build import TablesResult, build_tables
from tasks.tables.splits import Partitioning
from tasks.tables.tokens import TokenRecord, write_parquet
from tests.data.token_rows import Row, parquet_rows, record

NO_RULES = Partitioning({}, {}, ())
PLACEHOLDER = hashlib.sha256(b"placeholder.png").hexdigest()
REVEALED = 70  # Waves: ids 0..69 revealed, then a run of placeholders
WAVE = PLACEHOLDER_RUN + 5  # placeholders at the end of Waves: a run, a quarter of it


def _digest(collection: str, token_id: int) -> str:
    return hashlib.sha256(f"{collection}/{token_id}".encode()).hexdigest()


def _contract(n: int) -> str:
    return "0x" + f"{n:x}" * 40


@dataclass(frozen=True)
class Token:
    collection: str
    contract: str
    token_id: int
    digest: str
    metadata: dict[str, Any]

    def record(self) -> TokenRecord:
        data = json.dumps(self.metadata).encode()
        return replace(
            record(self.collection, self.contract, self.token_id, data), image_sha256=self.digest
        )


def _tokens(collection: str, contract: str, n: int, token: Any) -> list[Token]:
    """n tokens; token(i) gives (digest, metadata) of id i."""
    return [Token(collection, contract, i, *token(i)) for i in range(n)]


def _traits(**traits: str) -> list[dict[str, str]]:
    return [{"trait_type": k, "value": v} for k, v in traits.items()]


BOXES, WAVES, EDITIONS, UNIQUES, EGGS, CARDS = (_contract(n) for n in range(10, 16))
TOKENS = [
    # Unrevealed: one image, a "will be revealed" trait, names that differ.
    *_tokens("Boxes", BOXES, 40, lambda i: (
        PLACEHOLDER, {"name": f"Box #{i}", "attributes": _traits(Status="Will be revealed")})),
    # Revealed in waves: distinct art, then a run of one image with no traits.
    *_tokens("Waves", WAVES, REVEALED + WAVE, lambda i: (
        (_digest("Waves", i), {"name": f"Wave #{i}", "attributes": _traits(
            Hat=f"Hat {i % 7}", Eyes=f"Eyes {i % 3}")})
        if i < REVEALED else (PLACEHOLDER, {"name": f"Wave #{i}", "description": "Soon."}))),
    # Editions: one artwork, each copy its own edition trait.
    *_tokens("Editions", EDITIONS, 40, lambda i: (
        PLACEHOLDER, {"name": "Sunrise", "attributes": _traits(Edition=f"{i + 1} of 40")})),
    # 1-of-1s, three of them copies with no traits.
    *_tokens("Uniques", UNIQUES, 30, lambda i: (
        PLACEHOLDER if i in (5, 6, 7) else _digest("Uniques", i),
        {"name": f"Piece {i}", "attributes": [] if i in (5, 6, 7) else _traits(Mood=str(i))})),
    # One image and distinct serials, but a placeholder word: unrevealed.
    *_tokens("Eggs", EGGS, 30, lambda i: (
        PLACEHOLDER, {"name": f"Mystery Egg #{i}", "attributes": _traits(Serial=f"S{i}")})),
    # Rendered per token (every image differs), and a trait says unrevealed.
    *_tokens("Cards", CARDS, 10, lambda i: (
        _digest("Cards", i), {"name": f"Card {i}", "attributes": _traits(State="Unrevealed")})),
]  # fmt: skip
PLACEHOLDERS = {
    (t.contract, str(t.token_id))
    for t in TOKENS
    if t.collection in ("Boxes", "Eggs", "Cards")
    or (t.collection == "Waves" and t.token_id >= REVEALED)
}


@dataclass(frozen=True)
class Built:
    tables: Path
    result: TablesResult


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tables = tmp_path_factory.mktemp("tables")
    (tables / "tokens" / "all").mkdir(parents=True)
    write_parquet([t.record() for t in TOKENS], tables / "tokens" / "all" / "block.parquet")
    result = build_tables(
        duck.connect(), str(tables / "tokens" / "*" / "*.parquet"), LocalFolder(tables), NO_RULES
    )
    return Built(tables, result)


def _rows(built: Built, table: str, where: str = "true") -> list[Row]:
    return parquet_rows(built.tables / f"{table}.parquet", where)


def test_placeholder_tokens_are_flagged_in_splits_and_never_in_the_mini(built: Built) -> None:
    splits = _rows(built, "splits")
    assert len(splits) == len(TOKENS)
    assert {(r["contract"], r["token_id"]) for r in splits if r["unrevealed"]} == PLACEHOLDERS
    assert not any(r["in_mini"] and r["unrevealed"] for r in splits)
    assert built.result.unrevealed == len(PLACEHOLDERS)


def test_each_collection_with_placeholders_has_one_problem_saying_what_to_reingest(
    built: Built,
) -> None:
    problems = _rows(built, "problems", "kind LIKE '%unrevealed'")
    kinds = {r["collection"]: r["kind"] for r in problems}
    assert kinds == {
        "Boxes": "unrevealed",
        "Eggs": "unrevealed",
        "Cards": "unrevealed",
        "Waves": "partly_unrevealed",
    }  # not Editions (distinct trait sets), not Uniques (three copies)
    assert all(r["token_id"] is None for r in problems)
    detail = {r["collection"]: r["detail"] for r in problems}
    assert detail["Boxes"].startswith(
        f"40 of 40 tokens are unrevealed placeholders (one image, sha256 {PLACEHOLDER[:12]}…, "
        "shown by 40): re-ingest the collection after its reveal"
    )
    assert detail["Waves"].startswith(
        f"{WAVE} of {REVEALED + WAVE} tokens, ids {REVEALED} to {REVEALED + WAVE - 1}, are "
        "unrevealed placeholders"
    )
    assert "(their metadata says so)" in detail["Cards"]
    assert "refetch_unrevealed=true" in detail["Boxes"]  # a plain rerun keeps stored tokens
    assert [n.split(":")[0] for n in built.result.reveal_notes] == [
        "Boxes", "Cards", "Eggs", "Waves"
    ]  # fmt: skip


def test_placeholders_are_left_out_of_trait_counts_and_rarity(built: Built) -> None:
    ranked = {(r["contract"], r["token_id"]) for r in _rows(built, "rarity")}
    assert ranked == {(t.contract, str(t.token_id)) for t in TOKENS} - PLACEHOLDERS
    values = {r["value"] for r in _rows(built, "traits")}
    assert "Will be revealed" not in values and "Unrevealed" not in values
    assert {r["value"] for r in _rows(built, "traits", f"contract = '{EDITIONS}'")} == {
        f"{i + 1} of 40" for i in range(40)
    }
    boxes = json.loads((built.tables / "dashboards" / f"{BOXES}.json").read_text())
    assert (boxes["tokens"], boxes["unrevealed"], boxes["rarity"]) == (0, 40, {})
    waves = json.loads((built.tables / "dashboards" / f"{WAVES}.json").read_text())
    assert (waves["tokens"], waves["unrevealed"], len(waves["rarity"])) == (
        REVEALED,
        WAVE,
        REVEALED,
    )


def test_exports_leave_placeholders_out_unless_asked(built: Built) -> None:
    everything = {(t.contract, str(t.token_id)) for t in TOKENS}
    default = {(i.contract, i.token_id) for i in export_items(duck.connect(), str(built.tables))}
    assert default == everything - PLACEHOLDERS
    asked = export_items(duck.connect(), str(built.tables), include_unrevealed=True)
    assert {(i.contract, i.token_id) for i in asked} == everything


def test_an_export_from_tables_without_the_flag_says_to_rebuild_them(
    built: Built, tmp_path: Path
) -> None:
    """Tables built before unrevealed.sql have no splits.unrevealed column."""
    shutil.copytree(built.tables, tmp_path / "tables")
    splits = quote(str(tmp_path / "tables" / "splits.parquet"))
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE old AS SELECT * EXCLUDE (unrevealed) FROM {splits}")
        con.execute(f"COPY old TO {splits}")
    with pytest.raises(ValueError, match="rerun nft1000/tables"):
        list(export_items(duck.connect(), str(tmp_path / "tables")))


def _manifest(con: duckdb.DuckDBPyConnection, folder: Path, rows: list[ManifestRow]) -> None:
    (folder / "manifest.parquet").write_bytes(to_parquet(rows))
    path = quote(str(folder / "manifest.parquet"))
    con.execute(f"CREATE OR REPLACE VIEW manifest AS SELECT * FROM read_parquet({path})")


def _manifest_row(token: Token, fetched_at: datetime) -> ManifestRow:
    return ManifestRow(
        token.collection, token.contract, str(token.token_id), sha256=token.digest,
        image_key=f"blobs/{token.digest}", fetched_at=fetched_at,
    )  # fmt: skip


def test_the_summary_flags_a_shared_image_from_the_manifests(tmp_path: Path) -> None:
    """The manifests hold no traits: the summary reads image digests only, so Editions
    look unrevealed there (the tables build tells them apart), and Cards (one image
    each) do not."""
    before = datetime(2026, 1, 1, tzinfo=UTC)
    con = duckdb.connect()
    _manifest(con, tmp_path, [_manifest_row(t, before) for t in TOKENS])
    reveal = {r["collection"]: r["reveal"] for r in summary_rows(con)}
    assert reveal == {
        "Boxes": "unrevealed: re-ingest",
        "Waves": f"partly: {WAVE} tokens",
        "Editions": "unrevealed: re-ingest",
        "Uniques": "",
        "Eggs": "unrevealed: re-ingest",
        "Cards": "",
    }
    # A run after the reveal stores each Box's own image: its newer rows count.
    revealed = [
        _manifest_row(replace(t, digest=_digest("Boxes", t.token_id)), before + timedelta(1))
        for t in TOKENS
        if t.collection == "Boxes"
    ]
    _manifest(con, tmp_path, [*(_manifest_row(t, before) for t in TOKENS), *revealed])
    rows = {r["collection"]: r for r in summary_rows(con)}
    assert (rows["Boxes"]["reveal"], rows["Boxes"]["tokens"]) == ("", 80)
