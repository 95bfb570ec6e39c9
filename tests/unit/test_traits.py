"""Unit tests of trait normalisation: real Moonbirds metadata, known quirks, random JSON."""

from __future__ import annotations

import json
import random
import tarfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from infra.stack import MOONBIRDS_ARCHIVE
from tasks.core import duck
from tasks.core.folders import LocalFolder
from tasks.tables.build import build_tables
from tasks.tables.splits import Partitioning
from tasks.tables.tokens import write_parquet
from tasks.tables.traits import (
    MAX_PROBLEMS,
    MAX_TEXT,
    MAX_TRAITS,
    NO_TRAIT_TYPE,
    Trait,
    Traits,
    is_visual,
    normalise_traits,
)
from tests.data.metadata_shapes import (
    SHAPES,
    Expected,
    Shape,
    huge_features,
    huge_project_traits,
)
from tests.data.token_rows import parquet_rows, record

NO_RULES = Partitioning({}, {}, ())


def pairs(result: Traits) -> list[tuple[str, str]]:
    return [(t.trait_type, t.value) for t in result.traits]


def only(metadata: dict[str, Any]) -> Trait:
    """The single trait a case should produce."""
    result = normalise_traits(metadata)
    assert len(result.traits) == 1, result
    return result.traits[0]


@pytest.fixture(scope="module")
def moonbirds() -> dict[int, dict[str, Any]]:
    """All 10,000 real Moonbirds metadata files, by token id (one pass over the archive)."""
    tokens: dict[int, dict[str, Any]] = {}
    with tarfile.open(MOONBIRDS_ARCHIVE) as tar:
        for member in tar:
            path = Path(member.name)
            if member.isfile() and path.parent.name == "metadata" and path.suffix == ".json":
                file = tar.extractfile(member)
                assert file is not None
                tokens[int(path.stem)] = json.load(file)
    return tokens


# Real shapes.


def test_moonbirds_tokens_in_metadata_order(moonbirds: dict[int, dict[str, Any]]) -> None:
    first = normalise_traits(moonbirds[1])
    assert first.problems == ()
    assert pairs(first) == [
        ("Eyes", "Rainbow"),
        ("Outerwear", "Jean Jacket"),
        ("Body", "Tabby"),
        ("Feathers", "Red"),
        ("Background", "Pink"),
        ("Beak", "Short"),
    ]
    assert all(t.display_type is None and is_visual(t) for t in first.traits)
    assert pairs(normalise_traits(moonbirds[6949])) == [
        ("Background", "Cosmic Purple"),
        ("Body", "Cosmic"),
        ("Feathers", "Legendary Professor"),
    ]
    assert pairs(normalise_traits(moonbirds[6697]))[:2] == [
        ("Eyes", "Open"),
        ("Eyewear", "Half-moon Spectacles"),
    ]


def test_every_moonbird_is_clean_and_visual(moonbirds: dict[int, dict[str, Any]]) -> None:
    assert len(moonbirds) == 10_000
    for metadata in moonbirds.values():
        result = normalise_traits(metadata)
        assert result.problems == ()
        assert pairs(result) == [(a["trait_type"], a["value"]) for a in metadata["attributes"]]
        assert 3 <= len(result.traits) <= 8
        assert all(is_visual(t) for t in result.traits)


def test_opensea_list_with_numeric_display_types() -> None:
    metadata = {
        "name": "Dave Starbelly",
        "attributes": [
            {"trait_type": "Base", "value": "Starfish"},
            {"trait_type": "Level", "value": 5},
            {"trait_type": "Stamina", "value": 1.4},
            {"display_type": "boost_number", "trait_type": "Aqua Power", "value": 40},
            {"display_type": "boost_percentage", "trait_type": "Stamina Increase", "value": 10},
            {"display_type": "number", "trait_type": "Generation", "value": 2},
            {"display_type": "date", "trait_type": "birthday", "value": 1546360800},
        ],
    }
    result = normalise_traits(metadata)
    assert result.problems == ()
    assert [(t.trait_type, t.value, t.display_type) for t in result.traits] == [
        ("Base", "Starfish", None),
        ("Level", "5", None),
        ("Stamina", "1.4", None),
        ("Aqua Power", "40", "boost_number"),
        ("Stamina Increase", "10", "boost_percentage"),
        ("Generation", "2", "number"),
        ("birthday", "1546360800", "date"),
    ]
    # Level by its word, the rest by display type; Stamina's number alone says nothing.
    assert [is_visual(t) for t in result.traits] == [True, False, True] + [False] * 4


def test_object_form() -> None:
    result = normalise_traits({"attributes": {"Eyes": "Angry", "Hat": "Cap", "Level": 3}})
    assert result.problems == ()
    assert pairs(result) == [("Eyes", "Angry"), ("Hat", "Cap"), ("Level", "3")]


@pytest.mark.parametrize("key", ["traits", "features"])
def test_other_trait_keys(key: str) -> None:
    assert pairs(normalise_traits({key: [{"trait_type": "Eyes", "value": "Angry"}]})) == [
        ("Eyes", "Angry")
    ]
    assert pairs(normalise_traits({key: {"Eyes": "Angry"}})) == [("Eyes", "Angry")]


def test_first_trait_key_wins_and_several_are_recorded() -> None:
    result = normalise_traits(
        {"features": {"Hat": "Cap"}, "traits": [{"trait_type": "Eyes", "value": "Angry"}]}
    )
    assert pairs(result) == [("Eyes", "Angry")]
    assert result.problems == ("traits, features: several trait keys, used traits, the first",)


@pytest.mark.parametrize("empty", [None, [], {}, "", " ", "none"])
def test_a_trait_key_holding_nothing_gives_way(empty: object) -> None:
    result = normalise_traits({"attributes": empty, "traits": {"Hat": "Cap"}})
    assert (pairs(result), result.problems) == ([("Hat", "Cap")], ())


@pytest.mark.parametrize(
    "metadata",
    [{}, {"name": "Loot"}, {"attributes": []}, {"attributes": {}}, {"attributes": None}],
)
def test_no_traits_is_not_a_problem(metadata: dict[str, Any]) -> None:
    assert normalise_traits(metadata) == Traits((), ())


@pytest.mark.parametrize("source", ["Eyes: Angry", 7, 1.5, True])
def test_trait_key_of_the_wrong_type(source: object) -> None:
    assert normalise_traits({"attributes": source}) == Traits(
        (), ("attributes: not a list or object",)
    )


@pytest.mark.parametrize("metadata", [None, [], [1], "x", 3, 2.5, False])
def test_metadata_that_is_not_an_object(metadata: Any) -> None:
    result = normalise_traits(metadata)
    assert result.traits == ()
    assert result.problems[0].startswith("metadata: is ")


# Metadata classes (tests/data/metadata_shapes.py): which key, which traits, which are visual.

_SHAPES = [(f"{cls}-{shape.name}", shape) for cls, shapes in SHAPES.items() for shape in shapes]


@pytest.mark.parametrize("shape", [s for _, s in _SHAPES], ids=[i for i, _ in _SHAPES])
def test_metadata_shapes(shape: Shape) -> None:
    result = normalise_traits(shape.metadata)
    assert [(t.trait_type, t.value, is_visual(t)) for t in result.traits] == list(shape.traits)
    assert result.problems == shape.problems


def test_a_huge_features_object_is_judged_and_read_within_bounds() -> None:
    metadata = huge_features(20_000)
    started = time.monotonic()
    result = normalise_traits(metadata)
    assert time.monotonic() - started < 0.5
    assert pairs(result) == [("Hat", "Cap")]
    assert result.problems == (
        "attributes, features: several trait keys, used attributes, the first",
    )
    alone = normalise_traits({"features": metadata["features"]})
    assert len(alone.traits) == MAX_TRAITS
    assert alone.problems == (f"features: over {MAX_TRAITS} traits, kept the first {MAX_TRAITS}",)


def test_a_huge_list_typed_in_name_only_is_judged_from_its_first_items() -> None:
    metadata = huge_project_traits(20_000)
    started = time.monotonic()
    result = normalise_traits(metadata)
    assert time.monotonic() - started < 0.5
    assert pairs(result)[:2] == [("Key 0", "Value 0"), ("Key 1", "Value 1")]
    assert len(result.traits) == MAX_TRAITS
    assert result.problems[0] == "traits: Key: Value text read as trait type and value"
    beside = normalise_traits({**metadata, "features": {"Key 0": "Value 0"}})
    assert pairs(beside) == [("Key 0", "Value 0")]


# Item shapes.


@pytest.mark.parametrize("type_key", ["trait_type", "type", "key", "name", "trait"])
@pytest.mark.parametrize("value_key", ["value", "val"])
def test_key_spellings(type_key: str, value_key: str) -> None:
    assert only({"attributes": [{type_key: "Eyes", value_key: "Angry"}]}) == Trait(
        "Eyes", "Angry", None
    )


def test_first_set_spelling_wins() -> None:
    item = {"trait_type": None, "type": "Eyes", "name": "Other", "value": None, "val": "Angry"}
    assert only({"attributes": [item]}) == Trait("Eyes", "Angry", None)


def test_plain_values_have_no_trait_type() -> None:
    result = normalise_traits({"attributes": ["Gold", 3, False, "Gold"]})
    assert result.problems == ()
    assert pairs(result) == [
        (NO_TRAIT_TYPE, "Gold"),
        (NO_TRAIT_TYPE, "3"),
        (NO_TRAIT_TYPE, "false"),
        (NO_TRAIT_TYPE, "Gold"),
    ]


def test_item_without_trait_type_keeps_its_value() -> None:
    result = normalise_traits({"attributes": [{"value": "Angry"}]})
    assert pairs(result) == [("", "Angry")]
    assert result.problems == ("attributes[0]: no trait_type",)


@pytest.mark.parametrize(
    ("trait_type", "problem"),
    [
        ("None", "attributes[0]: trait_type is empty or none-like"),
        (" \t", "attributes[0]: trait_type is empty or none-like"),
        (["Eyes"], "attributes[0]: trait_type is a list"),
        ({"en": "Eyes"}, "attributes[0]: trait_type is an object"),
    ],
)
def test_unusable_trait_type_becomes_the_placeholder(trait_type: object, problem: str) -> None:
    result = normalise_traits({"attributes": [{"trait_type": trait_type, "value": "Angry"}]})
    assert (pairs(result), result.problems) == ([("", "Angry")], (problem,))


def test_numeric_trait_type_becomes_text() -> None:
    assert only({"attributes": [{"trait_type": 7, "value": "x"}]}).trait_type == "7"


def test_repeated_trait_types_are_all_kept_in_order() -> None:
    items = [{"trait_type": "Hat", "value": v} for v in ("Cap", "Crown", "Cap")]
    assert pairs(normalise_traits({"attributes": items})) == [
        ("Hat", "Cap"),
        ("Hat", "Crown"),
        ("Hat", "Cap"),
    ]


# Values.


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5, "5"),
        (-3, "-3"),
        (0, "0"),
        (5.0, "5.0"),
        (0.1, "0.1"),
        (1 / 3, "0.3333333333333333"),
        (-0.0, "-0.0"),
        (1e300, "1e+300"),
        (2.5e-8, "2.5e-08"),
        (True, "true"),
        (False, "false"),
        (10**255, "1" + "0" * 255),
    ],
)
def test_scalars_render_deterministically(value: object, text: str) -> None:
    assert only({"attributes": [{"trait_type": "t", "value": value}]}).value == text
    if isinstance(value, float):
        assert float(text) == value  # repr round-trips


@pytest.mark.parametrize(
    "value", [1546360800, -86400, 1546360800.5, 10**200, -(10**200), 253402300800000]
)
def test_dates_stay_numbers_whatever_their_size(value: int | float) -> None:
    item = {"display_type": "date", "trait_type": "Birthday", "value": value}
    trait = only({"attributes": [item]})
    assert (trait.value, trait.display_type) == (repr(value), "date")
    assert not is_visual(trait)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), 10**256, -(10**400), 10**5000],
    ids=["nan", "inf", "-inf", "1e256", "-1e400", "1e5000"],  # str() fails past 4300 digits
)
def test_numbers_that_cannot_be_text_are_dropped(value: int | float) -> None:
    result = normalise_traits({"attributes": [{"trait_type": "t", "value": value}]})
    assert result.traits == ()
    assert result.problems == ("attributes[0]: value is a number that is not finite or too long",)


@pytest.mark.parametrize(
    "value", [None, "", "   ", "\n\t", "none", "None", "NONE", "null", "NULL", "N/A", "n/a", "-"]
)
def test_none_like_values_are_dropped(value: object) -> None:
    result = normalise_traits({"attributes": [{"trait_type": "Hat", "value": value}]})
    assert result == Traits((), ("attributes[0]: value is empty or none-like",))


def test_missing_value_is_dropped() -> None:
    result = normalise_traits({"attributes": [{"trait_type": "Laser Eyes"}, "x"]})
    assert pairs(result) == [("", "x")]
    assert result.problems == ("attributes[0]: value is empty or none-like",)


def test_none_like_is_whole_text_only() -> None:
    assert only({"attributes": {"Hat": "None of them"}}).value == "None of them"
    assert only({"attributes": {"Hat": "--"}}).value == "--"


def test_nested_objects_are_skipped() -> None:
    result = normalise_traits(
        {"attributes": [{"trait_type": "Hat", "value": {"name": "Cap"}}, {"Eyes": "Angry"}]}
    )
    assert result.traits == ()
    assert result.problems == (
        "attributes[0]: value is an object",
        "attributes[1]: no trait_type",
        "attributes[1]: value is empty or none-like",
    )
    assert normalise_traits({"traits": {"Hat": {"v": 1}}}).problems == (
        "traits[0]: value is an object",
    )


def test_list_values_become_one_trait_per_element() -> None:
    result = normalise_traits(
        {"attributes": {"Accessories": ["Chain", 2, None, ["x"], {"y": 1}], "Eyes": "Angry"}}
    )
    assert pairs(result) == [("Accessories", "Chain"), ("Accessories", "2"), ("Eyes", "Angry")]
    assert result.problems == (
        "attributes[0]: value is a list, one trait per element",
        "attributes[0][2]: value is empty or none-like",
        "attributes[0][3]: value is a list",
        "attributes[0][4]: value is an object",
    )


def test_list_value_keeps_display_type() -> None:
    item = {"trait_type": "Scores", "value": [1, 2], "display_type": "number"}
    result = normalise_traits({"attributes": [item]})
    assert [(t.value, t.display_type) for t in result.traits] == [("1", "number"), ("2", "number")]


def test_empty_list_value_and_list_items() -> None:
    result = normalise_traits({"attributes": [{"trait_type": "Hat", "value": []}, ["a", "b"]]})
    assert result == Traits(
        (), ("attributes[0]: value is an empty list", "attributes[1]: item is a list")
    )


# Display types.


@pytest.mark.parametrize("display_type", [None, "null", "", " NONE "])
def test_no_display_type(display_type: object) -> None:
    item = {"trait_type": "Hat", "value": "Cap", "display_type": display_type}
    assert normalise_traits({"attributes": [item]}) == Traits((Trait("Hat", "Cap", None),), ())


@pytest.mark.parametrize(("display_type", "kind"), [(1, "a number"), (["number"], "a list")])
def test_display_type_of_the_wrong_type_is_ignored(display_type: object, kind: str) -> None:
    item = {"trait_type": "Hat", "value": "Cap", "display_type": display_type}
    result = normalise_traits({"attributes": [item]})
    assert result.traits == (Trait("Hat", "Cap", None),)
    assert result.problems == (f"attributes[0]: display_type is {kind}, ignored",)


def test_display_type_is_cleaned() -> None:
    item = {"trait_type": "Power", "value": 4, "display_type": " boost_number\n"}
    assert only({"attributes": [item]}).display_type == "boost_number"


# Text cleaning and caps.


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Jean   Jacket ", "Jean Jacket"),
        ("Jean\tJacket\r\n", "Jean Jacket"),
        ("Jean\u00a0\u2003Jacket\u2028", "Jean Jacket"),
        ("Ja\x00ck\x07et\x7f\x9b", "Jacket"),
        ("e\u0301", "\u00e9"),  # NFC
        ("\ufeffCap\u200b", "Cap"),  # BOM, zero-width space
        ("\u202eevil\u202c", "evil"),  # bidi override (Trojan Source)
        ("\ud800Cap\udfff", "Cap"),  # lone surrogates from JSON escapes
        (
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("\u732b \u306e \u76ee", "\u732b \u306e \u76ee"),
        ("\U0001f600\ufe0f", "\U0001f600\ufe0f"),
    ],
)
def test_text_is_cleaned(raw: str, clean: str) -> None:
    trait = only({"attributes": [{"trait_type": f" {raw} ", "value": raw}]})
    assert (trait.trait_type, trait.value) == (clean, clean)


def test_text_that_cleans_to_nothing_is_dropped() -> None:
    result = normalise_traits({"attributes": [{"trait_type": "Hat", "value": "\u200b\x00 \u202e"}]})
    assert result == Traits((), ("attributes[0]: value is empty or none-like",))


def test_long_text_is_cut_at_the_cap() -> None:
    long = "word " * 200
    result = normalise_traits({"attributes": [{"trait_type": long, "value": "x" * 10_000}]})
    (trait,) = result.traits
    assert trait.value == "x" * MAX_TEXT
    assert trait.trait_type == ("word " * 52)[:MAX_TEXT].rstrip()
    assert not trait.trait_type.endswith(" ")
    assert result.problems == (
        f"attributes[0]: trait_type cut to {MAX_TEXT} characters",
        f"attributes[0]: value cut to {MAX_TEXT} characters",
    )


def test_text_at_the_cap_is_untouched() -> None:
    result = normalise_traits({"attributes": {"Hat": "y" * MAX_TEXT}})
    assert (result.traits[0].value, result.problems) == ("y" * MAX_TEXT, ())


def test_trait_cap() -> None:
    items = [{"trait_type": "n", "value": str(i)} for i in range(MAX_TRAITS + 50)]
    result = normalise_traits({"attributes": items})
    assert [t.value for t in result.traits] == [str(i) for i in range(MAX_TRAITS)]
    assert result.problems == (
        f"attributes: over {MAX_TRAITS} traits, kept the first {MAX_TRAITS}",
    )


def test_exactly_the_cap_is_no_problem() -> None:
    result = normalise_traits({"traits": {str(i): i for i in range(MAX_TRAITS)}})
    assert (len(result.traits), result.problems) == (MAX_TRAITS, ())


def test_trait_cap_applies_inside_a_list_value() -> None:
    result = normalise_traits({"attributes": {"Tags": list(range(10 * MAX_TRAITS))}})
    assert len(result.traits) == MAX_TRAITS
    assert (
        result.problems[-1] == f"attributes: over {MAX_TRAITS} traits, kept the first {MAX_TRAITS}"
    )


def test_problems_are_capped_and_counted() -> None:
    items: list[object] = [None] * 500 + [{"trait_type": "n", "value": i} for i in range(200)]
    result = normalise_traits({"attributes": items})
    assert len(result.traits) == MAX_TRAITS
    assert len(result.problems) == MAX_PROBLEMS + 2
    assert result.problems[MAX_PROBLEMS] == f"{500 - MAX_PROBLEMS} more problems not listed"
    assert result.problems[-1].startswith("attributes: over ")


def test_problems_never_quote_the_token() -> None:
    result = normalise_traits({"attributes": {"\u202eSECRET" * 100: ["<script>" * 100, {}]}})
    assert all("SECRET" not in p and "script" not in p for p in result.problems)


# Visual filter.


@pytest.mark.parametrize(
    ("trait", "visual"),
    [
        (Trait("Eyes", "Angry", None), True),
        (Trait("Background", "Cosmic Purple", None), True),
        (Trait("", "Gold", None), True),
        (Trait("Laser Eyes", "true", None), True),
        (Trait("Gender", "Female", None), True),
        (Trait("Hidden", "Yes", None), True),
        (Trait("Hat", "3D Glasses", None), True),
        (Trait("Hat", "Cap", "number"), False),
        (Trait("Hat", "Cap", "boost_percentage"), False),
        (Trait("Hat", "Cap", "string"), True),  # a non-numeric label says nothing
        (Trait("Birthday", "1546360800", "date"), False),
        (Trait("Rarity Score", "high", None), False),
        (Trait("rarityRank", "Top", None), False),
        (Trait("TokenID", "abc", None), False),
        (Trait("TOKEN_ID", "abc", None), False),
        (Trait("Generation", "Genesis", None), False),
        (Trait("Gen", "One", None), False),
        (Trait("Level", "Max", None), False),
        (Trait("Character Name", "Sir Reginald", None), False),
        (Trait("Lore", "Born in the deep sea", None), False),
        (Trait("Edition", "First", None), False),
        (Trait("Trait Count", "seven", None), False),
        # The value's shape says nothing: the trait type decides.
        (Trait("Eyes", "7", None), True),
        (Trait("Skin Tone", "05", None), True),
        (Trait("Eyes", "-1.5", None), True),
        (Trait("Eyes", "1,000", None), True),
        (Trait("Eyes", "#42", None), True),
        (Trait("Eyes", "25%", None), True),
        (Trait("Eyes", "3/10", None), True),
        (Trait("Eyes", "1e+300", None), True),
        (Trait("Eyes", "7", "number"), False),
        (Trait("Score", "Blue", None), False),
    ],
)
def test_is_visual(trait: Trait, visual: bool) -> None:
    assert is_visual(trait) is visual


# Random JSON: never raises, always clean.

_NASTY = [
    "",
    " ",
    "\t\n",
    "none",
    "N/A",
    "-",
    "null",
    "\x00",
    "\x1f",
    "\x85",
    "\u00a0",
    "\u2028",
    "\u200b",
    "\u200d",
    "\u202e",
    "\ufeff",
    "\ud800",
    "\udfff",
    "e\u0301",
    "\u0301",
    "\u1100\u1161",
    "\u0344",
    "\U0001f468\u200d\U0001f469",
    "\U000e0067",
    "\uffff",
    "\U0010ffff",
    "Eyes",
    "Angry",
    "x" * 300,
    " y" * 200,
]
_KEYS = [
    "trait_type",
    "type",
    "key",
    "name",
    "trait",
    "value",
    "val",
    "display_type",
    "attributes",
    "traits",
    "features",
]


def _random_text(rng: random.Random) -> str:
    parts = [rng.choice(_NASTY) for _ in range(rng.randint(0, 4))]
    parts += [chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 3))]
    rng.shuffle(parts)
    return "".join(parts)


def _random_json(rng: random.Random, depth: int) -> Any:
    """A random JSON value biased towards the shapes and quirks metadata has."""
    kind = rng.randrange(10 if depth > 0 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice(
            [0, -1, 1546360800, 10 ** rng.randint(0, 400), -(10 ** rng.randint(0, 300))]
        )
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, 5e-324, float("nan"), float("inf"), rng.random()])
    if kind in (4, 5, 6):
        return _random_text(rng)
    if kind in (7, 8):
        sizes = [0, 1, 3, 8, 150] if depth == 3 else [0, 1, 3, 8]  # long lists at the top only
        return [_random_json(rng, depth - 1) for _ in range(rng.choice(sizes))]
    keys = [*_KEYS, _random_text(rng)]
    return {rng.choice(keys): _random_json(rng, depth - 1) for _ in range(rng.randint(0, 6))}


def _is_clean(text: str) -> bool:
    return (
        0 < len(text) <= MAX_TEXT
        and text == " ".join(text.split())
        and unicodedata.is_normalized("NFC", text)
        and all(
            unicodedata.category(c) not in ("Cc", "Cf", "Cs") or c in "\u200c\u200d" for c in text
        )
        and text.casefold() not in ("none", "null", "n/a", "-")
    )


def test_random_json_never_raises_and_stays_clean() -> None:
    rng = random.Random(20240223)
    for _ in range(3000):
        metadata = {rng.choice(_KEYS[-3:]): _random_json(rng, 3) for _ in range(rng.randint(0, 3))}
        result = normalise_traits(metadata)
        assert result == normalise_traits(metadata)  # deterministic
        assert len(result.traits) <= MAX_TRAITS
        assert len(result.problems) <= MAX_PROBLEMS + 2
        assert all(p.isascii() and p.isprintable() and len(p) < 100 for p in result.problems)
        for trait in result.traits:
            assert _is_clean(trait.value)
            assert trait.trait_type == NO_TRAIT_TYPE or _is_clean(trait.trait_type)
            assert trait.display_type is None or _is_clean(trait.display_type)
            trait.value.encode("utf-8")  # no lone surrogates left
            is_visual(trait)


# Captions: the shapes through the tokens file and the tables build (sql/tables/texts*.sql).

CAPTIONED = [
    ("art_blocks", "traits_and_features"),
    ("number_like", "strings_of_digits"),
    ("number_like", "with_display_types"),
    ("counts", "trait_count"),
    ("counts", "counted_values"),
    ("typed_or_not", "key_value_strings_alone_are_split"),
]


def _caption(traits: list[Expected]) -> str:
    body = " ".join(
        value if trait_type == "" else f"{value} {trait_type}" for trait_type, value, _ in traits
    )
    return f"A picture of Shapes, containing {body}"


def test_captions_of_the_shapes(tmp_path: Path) -> None:
    shapes = {(cls, s.name): s for cls, group in SHAPES.items() for s in group}
    picked = [shapes[key] for key in CAPTIONED]
    contract = "0x" + "5" * 40
    records = [
        record("Shapes", contract, i, json.dumps(s.metadata).encode()) for i, s in enumerate(picked)
    ]
    tokens = tmp_path / "tokens.parquet"
    write_parquet(records, tokens)
    build_tables(duck.connect(), [str(tokens)], LocalFolder(tmp_path / "tables"), NO_RULES)

    captions = parquet_rows(tmp_path / "tables" / "captions.parquet")
    by_method = {(int(r["token_id"]), r["preferred"]): r for r in captions}
    for i, shape in enumerate(picked):
        visual = [t for t in shape.traits if t[2]]
        ours, template = by_method[i, True], by_method[i, False]
        assert (ours["method"], ours["caption"]) == ("visual_template", _caption(visual))
        assert template["caption"] == _caption(list(shape.traits))
        assert (ours["traits_total"], ours["truncated"]) == (len(visual), False)
    # Art Blocks: the features, not "Key: Value" text under the project's name.
    assert by_method[0, True]["caption"] == (
        "A picture of Shapes, containing Harbour Palette Sparse Density 12 Threads"
    )
    # Number-like values of visual traits are in the preferred caption.
    assert by_method[1, True]["caption"] == (
        "A picture of Shapes, containing "
        "05 Skin Tone 067 Outfit Teal Background #12 Hat 3/10 Stripes"
    )
    # Count pseudo-traits are in neither caption.
    assert by_method[3, False]["caption"] == "A picture of Shapes, containing Cap Hat"
    problems = parquet_rows(tmp_path / "tables" / "problems.parquet", "token_id = '0'")
    assert [p["detail"] for p in problems] == list(picked[0].problems)
