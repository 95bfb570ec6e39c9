"""The composed collections of the CVI validation: known difficulty, exact art, real export."""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.train.masks.draw import caption
from tasks.train.shards import open_shards, read_shard
from tests.data.composed import (
    MAX_VALUES,
    TRAIT_TYPES,
    VALUES,
    ComposedCollection,
    ComposedToken,
    Plan,
    compose,
    load_art,
    neighbours,
    render,
    write_export,
)
from tests.data.synthetic import LAYER_ORDER

SMALL = Plan(values=(2, 3), tokens=20, size=32)


@pytest.fixture(scope="module")
def small() -> list[ComposedCollection]:
    return compose(SMALL)


def _pixels(png: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _picks(traits: tuple[tuple[str, str], ...]) -> dict[str, int]:
    return {t: [v.name for v in VALUES[t]].index(value) for t, value in traits}


def test_six_trait_types_in_layer_order_each_with_distinct_value_names() -> None:
    expected = ("Background", "Eyeball", "Eye color", "Iris", "Bottom lid", "Top lid")
    assert expected == TRAIT_TYPES
    assert sorted(expected, key=LAYER_ORDER.index) == list(expected)  # back to front
    for trait_type, values in VALUES.items():
        names = [v.name for v in values]
        assert len(set(names)) == len(names) >= MAX_VALUES >= 10, trait_type


def test_collections_hold_unique_combinations_of_exactly_k_values(
    small: list[ComposedCollection],
) -> None:
    assert [c.values_per_type for c in small] == [2, 3]
    assert len({c.name for c in small}) == len({c.contract for c in small}) == 2
    assert len({c.folder for c in small}) == 2
    distinct_counts = []
    for collection in small:
        k = collection.values_per_type
        assert re.fullmatch(r"0x[0-9a-f]{40}", collection.contract)
        assert [t.token_id for t in collection.tokens] == list(range(SMALL.tokens))
        combos = [t.traits for t in collection.tokens]
        assert len(set(combos)) == SMALL.tokens  # no duplicate: it would be a free hit
        for i, trait_type in enumerate(TRAIT_TYPES):
            assert {c[i][0] for c in combos} == {trait_type}
            used = {c[i][1] for c in combos}
            assert used == {v.name for v in VALUES[trait_type][:k]}
        distinct_counts.append(len({pair for combo in combos for pair in combo}))
        splits = [t.split for t in collection.tokens]
        assert splits.count("test") == round(SMALL.tokens * SMALL.test_share)
        assert splits.count("train") == SMALL.tokens - splits.count("test")
    assert distinct_counts == [2 * 6, 3 * 6]


def test_the_same_plan_gives_the_same_bytes_and_another_seed_other_tokens(
    small: list[ComposedCollection],
) -> None:
    again = compose(SMALL)
    assert [t.png for c in again for t in c.tokens] == [t.png for c in small for t in c.tokens]
    assert again == small
    other = compose(Plan(values=(3,), tokens=20, size=32, seed=1))
    assert [t.traits for t in other[0].tokens] != [t.traits for t in small[1].tokens]
    # A collection does not depend on what else the plan holds.
    alone = compose(Plan(values=(3,), tokens=20, size=32))
    assert alone[0] == small[1]


def test_a_token_image_is_its_traits_composed_and_opaque(
    small: list[ComposedCollection],
) -> None:
    art = load_art(SMALL.size, 3)
    for token in small[1].tokens:
        with Image.open(io.BytesIO(token.png)) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))
        rendered = render(art, _picks(token.traits))
        assert np.asarray(rendered)[..., 3].min() == 255
        assert np.array_equal(_pixels(token.png), np.asarray(rendered.convert("RGB")))


def test_changing_one_trait_changes_the_image_only_where_its_art_lies() -> None:
    art = load_art(32, MAX_VALUES)
    base = dict.fromkeys(TRAIT_TYPES, 0)
    same = np.asarray(render(art, base)), np.asarray(render(art, dict(base)))
    assert np.array_equal(*same)
    for trait_type in TRAIT_TYPES:
        alpha = [np.asarray(a)[..., 3] > 0 for a in art[trait_type]]
        for a, b in itertools.combinations(range(MAX_VALUES), 2):
            first = np.asarray(render(art, base | {trait_type: a}))
            second = np.asarray(render(art, base | {trait_type: b}))
            changed = (first != second).any(axis=2)
            # Every value shows: no two values of a type give one image.
            assert changed.sum() >= 4, (trait_type, a, b)
            assert not (changed & ~(alpha[a] | alpha[b])).any(), (trait_type, a, b)


def test_neighbours_count_tokens_differing_in_exactly_so_many_traits() -> None:
    full = compose(Plan(values=(2,), tokens=2**6, size=8))[0].tokens  # every combination
    assert neighbours(full, 1) == 6
    assert neighbours(full, 2) == 15
    assert neighbours(full, 6) == 1

    def token(values: str) -> ComposedToken:
        return ComposedToken(0, b"", tuple(zip(TRAIT_TYPES, values, strict=True)), "train")

    three = [token("aaaaaa"), token("aaaaab"), token("aaaabb")]
    assert neighbours(three, 1) == pytest.approx(4 / 3)  # a-b and b-c, both ways
    assert neighbours(three, 2) == pytest.approx(2 / 3)  # a-c
    assert neighbours([], 1) == 0.0


def test_difficulty_falls_as_values_grow() -> None:
    plan = Plan(values=(3, 4, 6), tokens=100, size=8)
    near = [neighbours(c.tokens, 1) for c in compose(plan)]
    assert near[0] > near[1] > near[2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"values": ()},
        {"values": (3, 3)},
        {"values": (1,)},
        {"values": (MAX_VALUES + 1,)},
        {"values": (2,), "tokens": 65},
        {"tokens": 0},
        {"size": 4},
        {"test_share": 1.0},
    ],
)
def test_plans_that_cannot_be_composed_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Plan(**kwargs)  # type: ignore[arg-type]


def test_the_export_round_trips_through_s3_shards(
    small: list[ComposedCollection], settings: Settings
) -> None:
    root = f"s3://{settings.s3_bucket}/{settings.s3_prefix}composed"
    summary = write_export(small, root, settings, per_shard=8)
    tests = round(SMALL.tokens * SMALL.test_share) * 2
    assert summary["splits"] == {
        "train": {"samples": 40 - tests, "failed": 0, "shards": 4},
        "test": {"samples": tests, "failed": 0, "shards": 1},
    }
    assert [c["distinct_values"] for c in summary["collections"]] == [
        dict.fromkeys(TRAIT_TYPES, 2),
        dict.fromkeys(TRAIT_TYPES, 3),
    ]
    expected = {(c.contract, str(t.token_id)): (c, t) for c in small for t in c.tokens}
    seen = {}
    for split in ("train", "test"):
        shards = open_shards(f"{root}/{split}", settings)
        folder = open_folder(shards.url, settings)
        for name in shards.sizes:
            for sample in read_shard(folder, name):
                collection, token = expected[(sample.contract, sample.record["token_id"])]
                record = sample.record
                assert sample.key == f"{collection.folder}_{token.token_id}"
                assert (record["collection"], record["split"]) == (collection.name, split)
                assert token.split == split
                assert sample.traits == token.traits
                assert sample.caption == caption(collection.name, token.traits)
                assert record["caption_method"] == "visual_template"
                assert np.array_equal(np.asarray(sample.decode()), _pixels(token.png))
                seen[sample.key] = split
    assert len(seen) == len(expected)
    # The export's order mixes the collections within a shard.
    first = open_folder(f"{root}/train", settings)
    assert len({s.collection for s in read_shard(first, "shard-000000.tar")}) == 2
