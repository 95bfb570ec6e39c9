"""Visible-region masks on a composed token: a masked trait paints exactly where it
shows in that token's own image, which compositing the layers tells independently."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tasks.train.masks.draw import union_mask
from tests.data.composed import CONSTANT, LAYER_ORDER, TRAIT_TYPES, VALUES, Plan, load_art, render
from tests.data.composed_target import official_masks

PLAN = Plan(values=(3,), tokens=20, size=64)


def _recoloured(image: Image.Image) -> Image.Image:
    """The layer in one colour no art uses, its alpha kept."""
    pixels = np.asarray(image).copy()
    pixels[..., :3] = (255, 0, 255)
    return Image.fromarray(pixels, "RGBA")


def test_a_partly_covered_trait_paints_only_its_visible_pixels() -> None:
    art = load_art(PLAN.size, 3)
    masks = official_masks(PLAN)
    # Low bottom lid, high top lid, small iris: the eye shows about half its colour.
    picks = dict.fromkeys(TRAIT_TYPES, 0) | {"Top lid": 2}
    traits = [(layer, VALUES[layer][picks[layer]].name) for layer in TRAIT_TYPES]
    covered_trait = ("Eye color", VALUES["Eye color"][0].name)

    painted = union_mask([covered_trait], masks, traits)
    assert painted is not None
    full = masks[covered_trait]
    assert painted.any() and (painted <= full).all()
    assert painted.sum() < 0.6 * full.sum()  # the iris and lids cover part of it

    # Where the trait shows: the pixels that change when its layer changes colour.
    before = np.asarray(render(art, picks).convert("RGB")).astype(int)
    art["Eye color"] = [_recoloured(im) for im in art["Eye color"]]
    after = np.asarray(render(art, picks).convert("RGB")).astype(int)
    changed = (before != after).any(axis=2)

    above = LAYER_ORDER[LAYER_ORDER.index("Eye color") + 1 :]
    alpha = {
        layer: np.asarray(art[layer][picks.get(layer, 0)])[..., 3]
        for layer in above
        if layer in picks or layer in CONSTANT
    }
    see_through = np.zeros_like(changed)
    for a in alpha.values():
        see_through |= (a > 0) & (a < 255)
    unmasked_above = np.zeros_like(changed)  # drawn on every token, no trait: no mask
    for layer in CONSTANT:
        unmasked_above |= alpha.get(layer, np.zeros(changed.shape, np.uint8)) > 0
    # Every painted pixel shows the trait, but under a layer no trait names ...
    assert not (painted & ~changed & ~unmasked_above).any()
    # ... and every pixel showing it is painted, but under part-transparent edges.
    assert not (changed & ~painted & ~see_through).any()
    assert (changed & painted).sum() > 0.9 * painted.sum()
