"""The dynamic-masking draw, caption rebuild and painting, and the stored mask sets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.train.masks import Key, Mask
from tasks.train.masks.draw import FILL, apply_mask, caption, draw, draw_seed, union_mask
from tasks.train.masks.store import decode_masks, encode_masks

TRAITS: list[Key] = [("Background", "Blue"), ("Eyes", "Angry"), ("Hat", "Cap"), ("", "Glow")]


def _masks(keys: list[Key], size: int = 8) -> dict[Key, Mask]:
    masks = {}
    for i, key in enumerate(keys):
        mask = np.zeros((size, size), bool)
        mask[i, :] = True  # a row each: distinct and easy to check
        masks[key] = mask
    return masks


def test_caption_follows_the_tables_template() -> None:
    assert caption("Birds", TRAITS) == (
        "A picture of Birds, containing Blue Background Angry Eyes Cap Hat Glow"
    )
    assert caption("Birds", []) == "A picture of Birds"


def test_a_trait_is_dropped_exactly_when_it_is_masked() -> None:
    masks = _masks(TRAITS[:3])  # "Glow" has no mask
    seen_masked: set[Key] = set()
    for seed in range(300):
        d = draw("Birds", TRAITS, masks, 0.5, np.random.default_rng(seed))
        assert set(d.masked) | set(d.kept) == set(TRAITS)
        assert not set(d.masked) & set(d.kept)
        assert list(d.kept) == [t for t in TRAITS if t in d.kept]  # metadata order kept
        assert d.caption == caption("Birds", d.kept)
        assert ("", "Glow") in d.kept  # no region to hide: never dropped
        seen_masked |= set(d.masked)
    assert seen_masked == set(TRAITS[:3])


def test_each_trait_is_picked_with_the_given_probability() -> None:
    masks = _masks(TRAITS)
    for p in (0.0, 0.25, 0.5, 1.0):
        picks = sum(
            len(draw("B", TRAITS, masks, p, np.random.default_rng(s)).masked) for s in range(2000)
        )
        assert picks / (2000 * len(TRAITS)) == pytest.approx(p, abs=0.03)
    with pytest.raises(ValueError, match="probability"):
        draw("B", TRAITS, masks, 1.5, np.random.default_rng(0))


def test_draw_seeds_change_with_the_epoch_and_repeat_on_replay() -> None:
    masks = _masks(TRAITS)
    draws = [
        draw("B", TRAITS, masks, 0.5, np.random.default_rng(draw_seed(0, epoch, "B_1"))).masked
        for epoch in range(12)
    ]
    assert len(set(draws)) > 4
    again = draw("B", TRAITS, masks, 0.5, np.random.default_rng(draw_seed(0, 3, "B_1")))
    assert again.masked == draws[3]
    assert draw_seed(0, 1, "B_1") != draw_seed(0, 1, "B_2") != draw_seed(1, 1, "B_2")


def test_masks_are_scaled_to_the_image_and_painted_with_the_fill() -> None:
    masks = _masks(TRAITS)
    union = union_mask([TRAITS[0], TRAITS[2]], masks)
    assert union is not None and union.sum() == 16
    assert union_mask([], masks) is None
    image = Image.fromarray(np.full((32, 32, 4), 200, np.uint8), "RGBA")  # 4x the masks
    painted = np.asarray(apply_mask(image, union))
    rows_painted = [r for r in range(32) if (painted[r] == FILL).all()]
    assert rows_painted == [0, 1, 2, 3, 8, 9, 10, 11]
    assert (painted[4:8] == 200).all() and (painted[12:] == 200).all()
    assert apply_mask(image, None) is image


def test_mask_sets_round_trip_without_pickles() -> None:
    masks = _masks(TRAITS)
    data = encode_masks(masks)
    back = decode_masks(data)
    assert back.keys() == masks.keys()
    assert all(np.array_equal(back[k], masks[k]) for k in masks)


def test_a_masked_backdrop_covers_only_what_the_other_traits_leave_showing() -> None:
    masks = _masks(TRAITS[1:3])  # Eyes on row 1, Hat on row 2 (indices 0 and 1 here)
    masks[TRAITS[0]] = np.ones((8, 8), bool)  # the Background: the whole canvas
    alone = union_mask([TRAITS[0]], masks, TRAITS)
    assert alone is not None
    assert not alone[0].any() and not alone[1].any() and alone[2:].all()
    # Masked together, the backdrop and a trait on it cover the trait's pixels too.
    both = union_mask([TRAITS[0], TRAITS[1]], masks, TRAITS)
    assert both is not None and both[0].all() and not both[1].any()
    # Without the token's traits to go by, a backdrop is the whole canvas.
    assert union_mask([TRAITS[0]], masks) is not None
