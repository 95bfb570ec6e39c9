"""The dynamic-masking draw, caption rebuild and painting, and the stored mask sets."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.train.masks import Key, Mask, TraitMasks, by_area
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
    masks = by_area(_masks(TRAITS))
    union = union_mask([TRAITS[0], TRAITS[2]], masks)
    assert union is not None and union.sum() == 16
    assert union_mask([], masks) is None
    image = Image.fromarray(np.full((32, 32, 4), 200, np.uint8), "RGBA")  # 4x the masks
    painted = np.asarray(apply_mask(image, union))
    rows_painted = [r for r in range(32) if (painted[r] == FILL).all()]
    assert rows_painted == [0, 1, 2, 3, 8, 9, 10, 11]
    assert (painted[4:8] == 200).all() and (painted[12:] == 200).all()
    assert apply_mask(image, None) is image


def test_mask_sets_round_trip_with_their_order_without_pickles() -> None:
    masks = TraitMasks(_masks(TRAITS), {k: i for i, k in enumerate(TRAITS)}, "official")
    back = decode_masks(encode_masks(masks))
    assert back.keys() == masks.keys() and back.order == "official"
    assert all(np.array_equal(back[k], masks[k]) for k in masks)
    assert dict(back.depth) == dict(masks.depth)


def test_mask_sets_stored_before_the_order_read_as_ordered_by_area() -> None:
    plain = _masks(TRAITS[1:])
    plain[TRAITS[0]] = np.ones((8, 8), bool)
    out = io.BytesIO()
    keys = sorted(plain)
    np.savez_compressed(out, keys=np.array(keys), masks=np.stack([plain[k] for k in keys]))
    back = decode_masks(out.getvalue())
    assert back.order == "area"
    assert back.depth[TRAITS[0]] == 0 and {back.depth[k] for k in TRAITS[1:]} == {1}


def test_a_masked_trait_paints_only_what_the_traits_above_it_leave_showing() -> None:
    size = 8
    body = np.zeros((size, size), bool)
    body[2:8, 1:7] = True
    hat = np.zeros((size, size), bool)
    hat[1:4, 2:6] = True  # over the top of the body
    eyes = np.zeros((size, size), bool)
    eyes[4, 2:6] = True  # on the body, under nothing
    keys: list[Key] = [("Background", "Blue"), ("Body", "Red"), ("Eyes", "Big"), ("Hat", "Cap")]
    region = [np.ones((size, size), bool), body, eyes, hat]
    masks = TraitMasks(dict(zip(keys, region, strict=True)), {k: i for i, k in enumerate(keys)})
    background, body_key, eyes_key, hat_key = keys

    painted = union_mask([body_key], masks, keys)
    assert painted is not None
    assert np.array_equal(painted, body & ~hat & ~eyes)  # less what lies on it
    # A token without the hat shows the body where the hat would be.
    bare = union_mask([body_key], masks, [background, body_key, eyes_key])
    assert bare is not None and np.array_equal(bare, body & ~eyes)
    top = union_mask([hat_key], masks, keys)
    assert top is not None and np.array_equal(top, hat)  # nothing above it
    backdrop = union_mask([background], masks, keys)
    assert backdrop is not None and np.array_equal(backdrop, ~(body | hat))
    # Masked together, they paint the union of what each shows.
    both = union_mask([body_key, hat_key], masks, keys)
    assert both is not None and np.array_equal(both, (body | hat) & ~(eyes & ~hat))
    # Level values do not hide each other: masks ordered by area paint whole.
    level = union_mask([body_key], by_area(masks), keys)
    assert level is not None and np.array_equal(level, body)


def test_trait_masks_need_a_depth_for_every_mask() -> None:
    with pytest.raises(ValueError, match="no depth"):
        TraitMasks(_masks(TRAITS), {})
    with pytest.raises(ValueError, match="order"):
        TraitMasks(_masks(TRAITS[:1]), {TRAITS[0]: 0}, "guessed")
