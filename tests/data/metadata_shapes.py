"""Token metadata in the shapes real collections write their traits, made up and small.

Each class of shape (``SHAPES``) holds a few metadata JSON objects with what
``tasks.tables.traits.normalise_traits`` should make of them: the traits, each
with whether it is visual, and the problems recorded, in order. Collections,
projects and values are invented; only the shapes are taken from real metadata:

- ``art_blocks``: a ``traits`` list whose entries all carry the project's name as
  trait type and "Key: Value" text as value, beside a typed ``features`` object.
- ``number_like``: visual traits whose values are numbers written as text ("05"),
  with and without a ``display_type``.
- ``counts``: pseudo-traits that count the token's traits.
- ``typed_or_not``: typed entries beside untyped "Key: Value" strings.
- ``empty_then_full``: an empty ``attributes`` beside a full ``features``.
- ``hostile``: control characters in keys and values, keys that are not trait keys.

``huge_features`` and ``huge_project_traits`` build the big hostile cases on demand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Expected = tuple[str, str, bool]  # trait_type, value, visual


@dataclass(frozen=True)
class Shape:
    name: str  # a test id
    metadata: dict[str, Any]
    traits: tuple[Expected, ...]
    problems: tuple[str, ...] = ()


PROJECT = "Tidal Loom"  # an invented Art Blocks-like project
ALL = f"All {PROJECT}s"

ART_BLOCKS = [
    Shape(
        "traits_and_features",
        {
            "name": f"{PROJECT} #3000017",
            "project_id": "3",
            "traits": [
                {"trait_type": PROJECT, "value": ALL},
                {"trait_type": PROJECT, "value": "Palette: Harbour"},
                {"trait_type": PROJECT, "value": "Density: Sparse"},
                {"trait_type": PROJECT, "value": "Threads: 12"},
            ],
            "features": {"Palette": "Harbour", "Density": "Sparse", "Threads": "12"},
        },
        (("Palette", "Harbour", True), ("Density", "Sparse", True), ("Threads", "12", True)),
        (
            "traits, features: several trait keys, used features, the first typed",
            "traits: Key: Value text under one trait type, not used",
        ),
    ),
    Shape(
        "features_first_and_numbers",
        {
            "features": {"Palette": "Ember", "Threads": 7, "Knots": 0},
            "traits": [
                {"trait_type": PROJECT, "value": ALL},
                {"trait_type": PROJECT, "value": "Palette: Ember"},
                {"trait_type": PROJECT, "value": "Threads: 7"},
                {"trait_type": PROJECT, "value": "Knots: 0"},
            ],
        },
        (("Palette", "Ember", True), ("Threads", "7", True), ("Knots", "0", True)),
        (
            "traits, features: several trait keys, used features, the first typed",
            "traits: Key: Value text under one trait type, not used",
        ),
    ),
    Shape(
        "one_feature",
        {
            "traits": [
                {"trait_type": PROJECT, "value": ALL},
                {"trait_type": PROJECT, "value": "Palette: Harbour"},
            ],
            "features": {"Palette": "Harbour"},
        },
        (("Palette", "Harbour", True),),
        (
            "traits, features: several trait keys, used features, the first typed",
            "traits: Key: Value text under one trait type, not used",
        ),
    ),
    Shape(
        "traits_alone_are_split",
        {
            "traits": [
                {"trait_type": PROJECT, "value": ALL},
                {"trait_type": PROJECT, "value": "Palette: Harbour"},
                {"trait_type": PROJECT, "value": "Outline Weight: 05"},
            ],
            "features": {},
        },
        ((PROJECT, ALL, True), ("Palette", "Harbour", True), ("Outline Weight", "05", True)),
        ("traits: Key: Value text read as trait type and value",),
    ),
    Shape(
        "typed_attributes_beat_both",
        {
            "attributes": [{"trait_type": "Palette", "value": "Harbour"}],
            "traits": [
                {"trait_type": PROJECT, "value": ALL},
                {"trait_type": PROJECT, "value": "Palette: Harbour"},
            ],
            "features": {"Palette": "Harbour"},
        },
        (("Palette", "Harbour", True),),
        (
            "attributes, traits, features: several trait keys, used attributes, the first typed",
            "traits: Key: Value text under one trait type, not used",
        ),
    ),
]

NUMBER_LIKE = [
    Shape(
        "strings_of_digits",
        {
            "attributes": [
                {"trait_type": "Skin Tone", "value": "05"},
                {"trait_type": "Outfit", "value": "067"},
                {"trait_type": "Background", "value": "Teal"},
                {"trait_type": "Hat", "value": "#12"},
                {"trait_type": "Stripes", "value": "3/10"},
            ]
        },
        (
            ("Skin Tone", "05", True),
            ("Outfit", "067", True),
            ("Background", "Teal", True),
            ("Hat", "#12", True),
            ("Stripes", "3/10", True),
        ),
    ),
    Shape(
        "with_display_types",
        {
            "attributes": [
                {"trait_type": "Outfit", "value": "067", "display_type": "string"},
                {"trait_type": "Skin Tone", "value": 5},
                {"trait_type": "Stitch", "value": "067", "display_type": "number"},
                {"trait_type": "Speed", "value": 40, "display_type": "boost_number"},
                {"trait_type": "Glow", "value": 25, "display_type": "boost_percentage"},
                {"trait_type": "Woven", "value": 1546360800, "display_type": "date"},
            ]
        },
        (
            ("Outfit", "067", True),
            ("Skin Tone", "5", True),
            ("Stitch", "067", False),
            ("Speed", "40", False),
            ("Glow", "25", False),
            ("Woven", "1546360800", False),
        ),
    ),
    Shape(
        "bookkeeping_words_still_decide",
        {"attributes": {"Token ID": "0042", "Rarity Rank": "7", "Eyes": "02"}},
        (("Token ID", "0042", False), ("Rarity Rank", "7", False), ("Eyes", "02", True)),
    ),
]

COUNTS = [
    Shape(
        "trait_count",
        {
            "attributes": [
                {"trait_type": "Hat", "value": "Cap"},
                {"trait_type": "Trait Count", "value": 7},
                {"trait_type": "# Traits", "value": "4"},
                {"trait_type": "attributes count", "value": 2, "display_type": "number"},
                {"trait_type": "Number of Traits", "value": "six"},
                {"trait_type": "traits", "value": 3},
            ]
        },
        (("Hat", "Cap", True),),
        tuple(f"attributes[{i}]: counts traits, left out" for i in range(1, 6)),
    ),
    Shape(
        "counted_values",
        {
            "attributes": [
                {"trait_type": "Eyes", "value": "Angry"},
                {"value": "3 attributes"},
                "7 Traits",
                {"trait_type": "Extras", "value": "2 properties"},
            ]
        },
        (("Eyes", "Angry", True),),
        (
            "attributes[1]: no trait_type",
            "attributes[1]: counts traits, left out",
            "attributes[2]: counts traits, left out",
            "attributes[3]: counts traits, left out",
        ),
    ),
    Shape(
        "in_features_and_in_key_value_text",
        {"features": {"Hat": "Cap", "TraitCount": 3}, "attributes": ["Trait Count: 3"]},
        (("Hat", "Cap", True),),
        (
            "attributes, features: several trait keys, used features, the first typed",
            "attributes: values without trait types, not used",
            "features[1]: counts traits, left out",
        ),
    ),
    Shape(
        "look_alikes_stay",
        {
            "attributes": [
                {"trait_type": "Feature", "value": "Laser Eyes"},
                {"trait_type": "Traits", "value": "Golden Aura"},
                {"trait_type": "Accessory Count", "value": "2"},
                {"trait_type": "Attribute", "value": "3 stars"},
            ]
        },
        (
            ("Feature", "Laser Eyes", True),
            ("Traits", "Golden Aura", True),
            ("Accessory Count", "2", False),
            ("Attribute", "3 stars", True),
        ),
    ),
]

TYPED_OR_NOT = [
    Shape(
        "typed_list_beats_key_value_strings",
        {
            "attributes": ["Background: Blue", "Eyes: Angry"],
            "traits": [
                {"trait_type": "Background", "value": "Blue"},
                {"trait_type": "Eyes", "value": "Angry"},
            ],
        },
        (("Background", "Blue", True), ("Eyes", "Angry", True)),
        (
            "attributes, traits: several trait keys, used traits, the first typed",
            "attributes: values without trait types, not used",
        ),
    ),
    Shape(
        "key_value_strings_alone_are_split",
        {"attributes": ["Background: Blue", "Eyes : Angry", "Gold", "12:30", "Rank: 05"]},
        (
            ("Background", "Blue", True),
            ("Eyes", "Angry", True),
            ("", "Gold", True),
            ("", "12:30", True),
            ("Rank", "05", False),
        ),
        ("attributes: Key: Value text read as trait type and value",),
    ),
    Shape(
        "items_without_types_lose_to_a_typed_object",
        {"attributes": [{"value": "Background: Blue"}], "features": {"Background": "Blue"}},
        (("Background", "Blue", True),),
        (
            "attributes, features: several trait keys, used features, the first typed",
            "attributes: values without trait types, not used",
        ),
    ),
    Shape(
        "two_typed_keys_go_in_order",
        {
            "attributes": [{"trait_type": "Hat", "value": "Cap"}],
            "features": {"Hat": "Crown"},
        },
        (("Hat", "Cap", True),),
        ("attributes, features: several trait keys, used attributes, the first",),
    ),
    Shape(
        "a_string_key_loses_to_a_list",
        {"attributes": "Hat: Cap", "traits": [{"trait_type": "Hat", "value": "Cap"}]},
        (("Hat", "Cap", True),),
        (
            "attributes, traits: several trait keys, used traits, the first typed",
            "attributes: not a list or object, not used",
        ),
    ),
    Shape(
        "typed_values_with_colons_stay_whole",
        {
            "attributes": [
                {"trait_type": "Motto", "value": "Rule: none shall pass"},
                {"trait_type": "Hat", "value": "Cap"},
            ]
        },
        (("Motto", "Rule: none shall pass", True), ("Hat", "Cap", True)),
    ),
    Shape(
        "one_shared_type_without_key_values_is_typed",
        {
            "attributes": [
                {"trait_type": "Color", "value": "Red"},
                {"trait_type": "Color", "value": "Blue"},
            ]
        },
        (("Color", "Red", True), ("Color", "Blue", True)),
    ),
]

EMPTY_THEN_FULL = [
    Shape(
        "empty_list",
        {"attributes": [], "features": {"Hat": "Cap", "Eyes": "Angry"}},
        (("Hat", "Cap", True), ("Eyes", "Angry", True)),
    ),
    Shape(
        "null_and_empty_object",
        {"attributes": None, "traits": {}, "features": [{"trait_type": "Hat", "value": "Cap"}]},
        (("Hat", "Cap", True),),
    ),
    Shape(
        "none_like_text",
        {"attributes": " none ", "features": {"Hat": "Cap"}},
        (("Hat", "Cap", True),),
    ),
]

HOSTILE = [
    Shape(
        "control_characters_in_keys",
        {
            "features": {"Pa\x00lette\u202e": "Har\x07bour", "\x1bDensity\x9b": "\u200bSparse"},
            "attri\x00butes": [{"trait_type": "Hat", "value": "Cap"}],
            "traits\u200b": [{"trait_type": "Hat", "value": "Cap"}],
        },
        (("Palette", "Harbour", True), ("Density", "Sparse", True)),
    ),
    Shape(
        "control_characters_in_key_value_text",
        {
            "traits": [
                {"trait_type": PROJECT, "value": "Pal\x00ette:\u2028 Har\u200bbour"},
                {"trait_type": f"{PROJECT}\x1b", "value": "Density\x7f: Sparse"},
            ]
        },
        (("Palette", "Harbour", True), ("Density", "Sparse", True)),
        ("traits: Key: Value text read as trait type and value",),
    ),
    Shape(
        "keys_too_long_or_not_words_stay_whole",
        {"attributes": ["x" * 60 + ": y", "1st: Gold", ": Blue", "none: Blue", "Hat: none"]},
        (
            ("", "x" * 60 + ": y", True),
            ("", "1st: Gold", True),
            ("", ": Blue", True),
            ("", "none: Blue", True),
        ),
        (
            "attributes: Key: Value text read as trait type and value",
            "attributes[4]: value is empty or none-like",
        ),
    ),
]

SHAPES: dict[str, list[Shape]] = {
    "art_blocks": ART_BLOCKS,
    "number_like": NUMBER_LIKE,
    "counts": COUNTS,
    "typed_or_not": TYPED_OR_NOT,
    "empty_then_full": EMPTY_THEN_FULL,
    "hostile": HOSTILE,
}


def huge_features(entries: int) -> dict[str, Any]:
    """A typed attributes list beside a features object of ``entries`` keys."""
    return {
        "attributes": [{"trait_type": "Hat", "value": "Cap"}],
        "features": {f"Key {i}": f"Value {i}" for i in range(entries)},
    }


def huge_project_traits(entries: int) -> dict[str, Any]:
    """An Art Blocks-like traits list of ``entries`` "Key: Value" items, no features."""
    return {
        "traits": [{"trait_type": PROJECT, "value": f"Key {i}: Value {i}"} for i in range(entries)]
    }
