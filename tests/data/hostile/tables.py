"""Tokens files that disagree with themselves, through the whole tables build.

Each case writes a good collection (five tokens with traits) and a hostile one
as tokens files, the way ``build_block`` does (``token_record`` then
``write_parquet``), and runs ``build_tables`` into a scratch folder. The build
must finish, and the good collection must get its five captions, whatever the
hostile tokens hold: conflicting collection names for one contract, duplicate
or odd token ids, extreme traits and text.
"""

# Case tables: one case a line reads better than wrapped calls.
# ruff: noqa: E501

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from tasks.core import duck
from tasks.core.folders import LocalFolder
from tasks.ingest.manifest import ManifestRow
from tasks.tables.build import build_tables
from tasks.tables.splits import load_split_rules
from tasks.tables.tokens import TokenRecord, token_record, write_parquet
from tests.data.hostile.case import Case, Env

GOOD = "0x" + "11" * 20
HOSTILE = "0x" + "22" * 20
Token = tuple[str, str, str, bytes | None]  # collection, contract, token id, metadata


def _meta(**fields: Any) -> bytes:
    return json.dumps({"name": "t", **fields}).encode()


def _good() -> list[Token]:
    return [
        ("Good Birds", GOOD, str(i), _meta(attributes=[{"trait_type": "Eyes", "value": f"e{i}"}]))
        for i in range(5)
    ]


def _record(token: Token) -> TokenRecord:
    collection, contract, token_id, metadata = token
    row = ManifestRow(collection, contract, token_id, metadata_key=f"blobs/{token_id}",
                      image_key=f"blobs/i{token_id}", mime="image/png")  # fmt: skip
    return token_record(row, metadata)


def _build(env: Env, blocks: list[list[Token]]) -> int:
    """Build the tables; the good collection's preferred captions."""
    root = env.scratch / f"tables-{id(blocks)}"
    files = []
    for n, block in enumerate([_good(), *blocks]):
        path = root / "tokens" / f"block-{n}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet([_record(t) for t in block], path)
        files.append(str(path))
    con = duck.connect()
    try:
        build_tables(con, files, LocalFolder(root / "tables"), load_split_rules(None, ()),
                     seed=1, mini_per_collection=10)  # fmt: skip
    finally:
        con.close()
    with duckdb.connect() as check:
        row = check.execute(
            "SELECT count(*) FROM read_parquet(?) WHERE contract = ? AND preferred",
            [str(Path(root / "tables" / "captions.parquet")), GOOD],
        ).fetchone()
    return int(row[0]) if row else 0


def _five(result: int) -> str | None:
    return None if result == 5 else f"the good collection got {result} captions, not 5"


def _one(collection: str = "Bad", contract: str = HOSTILE, **fields: Any) -> list[list[Token]]:
    return [[(collection, contract, "1", _meta(**fields))]]


SHAPES: dict[str, Callable[[], list[list[Token]]]] = {
    "honest (loads the CLIP tokenizer for the rest)": lambda: [],
    "two collection names for one contract": lambda: [
        [("Bad A", HOSTILE, "1", _meta())], [("Bad B", HOSTILE, "2", _meta())]],
    "a collection name per token": lambda: [[(f"Bad {i}", HOSTILE, str(i), _meta()) for i in range(50)]],
    "the good collection's name on another contract": lambda: _one("Good Birds"),
    "one token id in two files": lambda: [[("Bad", HOSTILE, "1", _meta(name="a"))],
                                          [("Bad", HOSTILE, "1", _meta(name="b"))]],
    "one token id twice in a file": lambda: [[("Bad", HOSTILE, "1", _meta()), ("Bad", HOSTILE, "1", _meta())]],
    "token ids not decimal": lambda: [[("Bad", HOSTILE, t, _meta()) for t in ("0x10", "abc", "-1", "1e5", "", " 7", "٣")]],
    "token id of 10,000 digits": lambda: [[("Bad", HOSTILE, "9" * 10_000, _meta())]],
    "token id 2**256-1": lambda: [[("Bad", HOSTILE, str(2**256 - 1), _meta())]],
    "collection name with quotes and SQL": lambda: _one("x'); DROP TABLE tokens; --\"\n\t"),
    "collection name of 100,000 chars": lambda: _one("N" * 100_000),
    "collection name of combining marks": lambda: _one("a" + "\u0301" * 100_000),
    "empty collection name": lambda: _one(""),
    "contract not hex": lambda: _one("Bad", "not-a-contract'"),
    "traits of every JSON type": lambda: _one(attributes=[{"trait_type": f"t{i}", "value": v} for i, v in enumerate(
        [None, True, 0, -0.0, 1.5, 10**300, "", [], {}, [1], {"a": 1}, "x" * 10_000])]),
    "100 traits of 256 chars": lambda: _one(attributes=[{"trait_type": f"t{i}", "value": "v" * 300} for i in range(150)]),
    "one trait type, 1,000 tokens, 1,000 values": lambda: [[("Bad", HOSTILE, str(i), _meta(attributes=[{"trait_type": "T", "value": f"v{i}"}])) for i in range(1000)]],
    "description of combining marks": lambda: _one(description="a" + "\u0301" * (2 << 20)),
    "name and description of words 77 tokens long each": lambda: _one(name="supercalifragilistic " * 2000, description="antidisestablishment " * 2000),
    "tokens without metadata only": lambda: [[("Bad", HOSTILE, str(i), None) for i in range(5)]],
    "trait values that look like SQL and JSON": lambda: _one(attributes=[{"trait_type": "'\"", "value": '{"a": [1, 2]}'}, {"trait_type": "x", "value": "'); DROP TABLE traits; --"}]),
}  # fmt: skip


def cases() -> list[Case]:
    found = [
        Case(f"build: {name}", _build, check=_five, make=make, time_s=20.0, memory_mb=1024)
        for name, make in SHAPES.items()
    ]
    # The first build imports open_clip and torch: its bounds are the import's.
    first = found[0]
    found[0] = Case(first.name, first.run, check=first.check, make=first.make, time_s=120.0,
                    memory_mb=2048, hang_after_s=240.0)  # fmt: skip
    return found


def core_cases() -> list[Case]:
    """The warm-up and the two name conflicts: what the slow test tier can afford."""
    return cases()[:3]
