"""The synthetic collections for bench/tables and the pandas caption baseline.

The generator is checked on its own output (parsed JSON, the pipeline's own
trait normalisation); the baseline on hand-made tokens whose captions and token
counts are written out here, and against open_clip's own tokenize.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import open_clip
import pytest

from bench.pandas_captions import build_captions, read_tokens, run
from tasks.core.sql import run_sql
from tasks.tables.traits import NO_TRAIT_TYPE, normalise_traits
from tests.data.synthetic import (
    LAYERS_ARCHIVE,
    NONE_LIKE,
    SyntheticCollection,
    blocks,
    collections,
    load_layers,
    write_tokens,
)

N_TOKENS = 10_000
Generated = list[tuple[SyntheticCollection, list[tuple[int, dict[str, Any]]]]]


@pytest.fixture(scope="module")
def generated() -> Generated:
    """Every collection of a 10,000-token set with its tokens parsed."""
    return [
        (
            col,
            [
                (i, json.loads(m))
                for b in col.blocks()
                for i, m in zip(b.token_ids, b.metadata, strict=True)
            ],
        )
        for col in collections(N_TOKENS, seed=3)
    ]


def by_shape(generated: Generated, shape: str) -> list[dict[str, Any]]:
    return [token for col, tokens in generated if col.shape == shape for _, token in tokens]


# The generator.


def test_layers_come_from_the_archive_names() -> None:
    layers = {layer.trait_type: layer for layer in load_layers(LAYERS_ARCHIVE)}
    assert [layer.trait_type for layer in load_layers(LAYERS_ARCHIVE)][:3] == [
        "Background",
        "Eyeball",
        "Eye color",
    ]
    assert set(layers) == {
        "Background", "Eyeball", "Eye color", "Iris", "Shine", "Bottom lid", "Top lid", "Goo"
    }  # fmt: skip
    iris = layers["Iris"]
    assert dict(zip(iris.values, iris.weights, strict=True)) == {
        "Large": 20,
        "Medium": 20,
        "Small": 60,
    }


def test_same_seed_same_bytes_in_any_order() -> None:
    cols = collections(3_000, seed=11)
    first = [(b.contract, b.token_ids, b.metadata) for b in blocks(cols)]
    again = [(b.contract, b.token_ids, b.metadata) for b in blocks(collections(3_000, seed=11))]
    assert first == again
    # A block alone, or the blocks backwards, give the same bytes.
    backwards = [
        (b.contract, b.token_ids, b.metadata)
        for col in reversed(cols)
        for b in [col.block(n) for n in reversed(col.block_numbers)]
    ]
    assert sorted(backwards) == sorted(first)
    other = [b.metadata for b in blocks(collections(3_000, seed=12))]
    assert other != [m for _, _, m in first]


def test_sizes_ids_and_blocks() -> None:
    cols = collections(1_234_567, seed=0)
    assert sum(c.count for c in cols) == 1_234_567
    assert len(cols) == 10
    assert len({c.contract for c in cols}) == 10
    assert {c.shape for c in cols} == {"moonbirds", "opensea", "traits", "features", "loot"}
    assert {c.first_id for c in cols} == {0, 1}
    assert len({c.count for c in cols}) == 10
    one_based = next(c for c in cols if c.first_id == 1)
    first, second = one_based.block(0), one_based.block(1)
    assert first.token_ids == list(range(1, 1000))  # blocks follow manifest blocks
    assert second.token_ids == list(range(1000, 2000))
    with pytest.raises(ValueError):
        one_based.block(one_based.block_numbers.stop)
    assert [c.count for c in collections(5, seed=0)] == [5]  # empty collections left out


def test_each_shape_has_its_keys(
    generated: Generated,
) -> None:
    for col, tokens in generated:
        assert [i for i, _ in tokens] == list(range(col.first_id, col.end_id))
        for token_id, token in tokens:
            assert token["image"].startswith("ipfs://bafybei")
            if col.shape == "moonbirds":
                assert token["name"] == f"#{token_id}"
                assert set(token) == {"name", "image", "external_url", "attributes"}
            elif col.shape == "loot":
                assert token["name"] == f"Bag #{token_id}"
                assert set(token) == {"name", "description", "image"}
            else:
                assert token["name"] == f"{col.name} #{token_id}"
    assert all(isinstance(t["traits"], dict) for t in by_shape(generated, "traits"))
    features = by_shape(generated, "features")
    assert all(all(isinstance(v, str) for v in t["features"]) for t in features)
    assert all(len(t["description"]) > 500 for t in by_shape(generated, "opensea"))


def test_moonbirds_like_tokens_omit_absent_traits(
    generated: Generated,
) -> None:
    lengths = Counter(len(t["attributes"]) for t in by_shape(generated, "moonbirds"))
    assert min(lengths) < 8 and max(lengths) == 8
    for token in by_shape(generated, "moonbirds"):
        assert all(isinstance(a["value"], str) and a["value"] for a in token["attributes"])


def test_opensea_like_tokens_have_every_quirk(
    generated: Generated,
) -> None:
    tokens = by_shape(generated, "opensea")
    items = [a for t in tokens for a in t["attributes"]]
    display = {a["display_type"]: type(a["value"]) for a in items if "display_type" in a}
    assert display == {"number": int, "boost_number": float, "boost_percentage": int, "date": int}
    values = [a["value"] for a in items]
    assert {type(v) for v in values} == {str, int, float, bool, type(None)}
    assert set(NONE_LIKE) <= set(values)
    assert any(len(v) > 60 for v in values if isinstance(v, str))  # a sentence as a value
    types = [[a["trait_type"] for a in t["attributes"]] for t in tokens]
    repeated = [names for names in types if len(set(names)) < len(names)]
    assert 0.05 < len(repeated) / len(tokens) < 0.15
    assert 0 < sum(1 for t in tokens if t["attributes"] == []) < 0.05 * len(tokens)
    traits_form = [v for t in by_shape(generated, "traits") for v in t["traits"].values()]
    assert {type(v) for v in traits_form} == {str, int, bool}


def test_values_follow_the_weights(
    generated: Generated,
) -> None:
    col, tokens = max(
        generated, key=lambda pair: pair[0].count if pair[0].shape == "moonbirds" else 0
    )
    for layer in col.layers:
        seen = Counter(
            a["value"]
            for _, t in tokens
            for a in t["attributes"]
            if a["trait_type"] == layer.trait_type
        )
        n = sum(seen.values())
        assert n > 500
        for value, weight in zip(layer.values, layer.weights, strict=True):
            p = weight / sum(layer.weights)
            assert abs(seen[value] / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (
                layer.trait_type,
                value,
            )


def test_tokens_normalise_with_only_the_intended_problems(
    generated: Generated,
) -> None:
    intended = re.compile(r"attributes\[\d+\]: value is empty or none-like")
    problems: Counter[str] = Counter()
    for col, tokens in generated:
        for _, token in tokens:
            result = normalise_traits(token)
            for problem in result.problems:
                assert col.shape == "opensea" and intended.fullmatch(problem), problem
                problems[col.shape] += 1
            if col.shape == "moonbirds":
                assert len(result.traits) == len(token["attributes"])
            elif col.shape == "features":
                assert {t.trait_type for t in result.traits} == {NO_TRAIT_TYPE}
            elif col.shape == "traits":
                assert result.traits[-1].value in {"true", "false"}
            elif col.shape == "loot":
                assert result.traits == ()
    assert problems["opensea"] > 0


def test_write_tokens_makes_the_tokens_table(tmp_path: Path) -> None:
    cols = collections(2_500, seed=5)
    assert write_tokens(blocks(cols), tmp_path) == 2_500
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert f"{cols[0].contract}/shard-0-999.parquet" in files
    con = duckdb.connect()
    rows = con.execute(
        "SELECT t.trait_type, bool_and(t.visual), count(*) FROM "
        "(SELECT unnest(traits) AS t FROM read_parquet(?)) GROUP BY ALL",
        [str(tmp_path / "**" / "*.parquet")],
    ).fetchall()
    visual = {trait_type: flag for trait_type, flag, _ in rows}
    assert visual["Background"] is True
    for bookkeeping in ("Generation", "Birthday", "Minted", "Focus", "Lore", "Level"):
        assert visual[bookkeeping] is False
    assert con.execute(
        "SELECT count(*) FROM read_parquet(?) WHERE status = 'ok'",
        [str(tmp_path / "**" / "*.parquet")],
    ).fetchone() == (2_500,)


# The pandas caption baseline.

TRAIT = "{'trait_type': ?, 'value': ?, 'display_type': ?, 'visual': ?}"
HandTrait = tuple[str, str, str | None, bool]  # trait_type, value, display_type, visual
RED_HAT: HandTrait = ("Hat", "Red", None, True)  # "red hat": 2 tokens
BIG_RED_HAT: HandTrait = ("Hat", "big red", None, True)  # "big red hat": 3 tokens
HAT: HandTrait = ("", "hat", None, True)  # "hat": 1 token, no trait type
HEAD = "A picture of Cats, containing"  # a picture of cats , containing: 6 tokens

# token id, name, description, traits
TOKENS: list[tuple[str, str | None, str | None, list[HandTrait]]] = [
    ("1", "Cat #1", None, [RED_HAT, ("Level", "3", "number", False), ("", "smiling", None, True)]),
    ("2", "Cat #2", "A calm cat.", [("Level", "5", "number", False)]),
    ("3", None, "", []),
    ("4", None, "Just fur.", []),
    # 6 + 34 * 2 = 74 tokens, then 3 more: the 35th segment ends at 77, past 75.
    ("5", None, None, [RED_HAT] * 34 + [BIG_RED_HAT, HAT]),
    # 6 + 34 * 2 + 1 = 75: the 35th segment ends exactly at the limit and is kept.
    ("6", None, None, [RED_HAT] * 34 + [HAT, BIG_RED_HAT]),
]
LONG = f"{HEAD} " + " ".join(["Red Hat"] * 34)
# token id -> (method, caption, clip_tokens, traits_total, traits_kept), template then ours
EXPECTED = {
    "1": [
        ("template", f"{HEAD} Red Hat 3 Level smiling", 13, 3, 3),
        ("visual_template", f"{HEAD} Red Hat smiling", 11, 2, 2),
    ],
    "2": [
        ("template", f"{HEAD} 5 Level", 10, 1, 1),
        ("name_description", "A picture of Cats, Cat #2. A calm cat.", 15, 0, 0),
    ],
    "3": [
        ("template", "A picture of Cats", 6, 0, 0),
        ("collection", "A picture of Cats", 6, 0, 0),
    ],
    "4": [
        ("template", "A picture of Cats", 6, 0, 0),
        ("name_description", "A picture of Cats, Just fur.", 10, 0, 0),
    ],
    "5": [
        ("template", f"{LONG} big red Hat hat", 80, 36, 34),
        ("visual_template", f"{LONG} big red Hat hat", 80, 36, 34),
    ],
    "6": [
        ("template", f"{LONG} hat big red Hat", 80, 36, 35),
        ("visual_template", f"{LONG} hat big red Hat", 80, 36, 35),
    ],
}


def write_hand_tokens(path: Path) -> None:
    """The TOKENS rows in the real tokens schema (sql/tables/tokens.sql), as parquet."""
    con = duckdb.connect()
    run_sql(con, "tables/tokens")
    for token_id, name, description, traits in TOKENS:
        items = ", ".join([TRAIT] * len(traits))
        con.execute(
            "INSERT INTO tokens (collection, contract, token_id, name, description, status, "
            "fetched_at, traits, problems) VALUES ('Cats', '0xca75', ?, ?, ?, 'ok', "
            f"TIMESTAMPTZ '2026-01-01 00:00:00+00', [{items}], [])",
            [token_id, name, description, *(field for trait in traits for field in trait)],
        )
    con.execute(f"COPY tokens TO '{path}' (FORMAT parquet)")


def test_pandas_captions_by_hand(tmp_path: Path) -> None:
    write_hand_tokens(tmp_path / "tokens.parquet")
    captions = build_captions(read_tokens(tmp_path / "tokens.parquet"))
    assert len(captions) == 2 * len(TOKENS)
    got: dict[str, list[tuple[Any, ...]]] = {}
    for row in captions.itertuples():
        assert (row.collection, row.contract) == ("Cats", "0xca75")
        got.setdefault(row.token_id, []).append(
            (row.preferred, row.method, row.caption, row.clip_tokens, row.traits_total,
             row.traits_kept, row.truncated)
        )  # fmt: skip
    want = {
        token_id: [
            (preferred, *row, row[2] > 77)
            for preferred, row in zip((False, True), rows, strict=True)
        ]
        for token_id, rows in EXPECTED.items()
    }
    assert got == want
    # open_clip's own tokenize agrees: its non-padding count, capped at the context.
    counts = (open_clip.tokenize(captions["caption"].tolist()) != 0).sum(dim=1).tolist()
    assert counts == [min(n, 77) for n in captions["clip_tokens"]]


def test_pandas_captions_run_on_synthetic_tokens(tmp_path: Path) -> None:
    cols = collections(2_000, seed=2)
    write_tokens(blocks(cols), tmp_path / "tokens")
    report = run(tmp_path / "tokens", tmp_path / "captions.parquet")
    assert report["tokens"] == 2_000 and report["captions"] == 4_000
    rows = (
        duckdb.connect()
        .execute(
            "SELECT collection, method, preferred, count(*), bool_or(truncated), "
            "bool_or(traits_kept < traits_total) FROM read_parquet(?) GROUP BY ALL",
            [str(tmp_path / "captions.parquet")],
        )
        .fetchall()
    )
    shapes = {c.name: c.shape for c in cols}
    methods: dict[str, set[str]] = {}
    for collection, method, preferred, _, _, _ in rows:
        if preferred:
            methods.setdefault(shapes[collection], set()).add(method)
    assert methods["loot"] == {"name_description"}
    assert methods["moonbirds"] == {"visual_template"}
    assert methods["opensea"] == {"visual_template", "name_description"}  # unrevealed tokens
    cut = {(shapes[c], m) for c, m, _, _, _, kept_less in rows if kept_less}
    assert ("opensea", "template") in cut
