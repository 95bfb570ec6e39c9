"""The dynamic-masking draw (docs/method.md section 4): hide picked traits in image and caption.

Each time a sample is loaded its traits are walked in order and each is picked
with probability ``p``; a picked trait's visible region (its mask less the masks
of the token's traits drawn above it) is painted over in the image and its phrase
left out of the caption, which is then rebuilt with the tables' template
(``caption``, the same text as ``sql/tables/texts.sql``'s visual template).

Only traits that have a mask can be picked: dropping a phrase whose region stays
visible would teach the model that the region does not matter. A trait is
therefore dropped from the caption exactly when its region is masked.

The draw's randomness comes from ``draw_seed(seed, epoch, key)``: a new draw on
every epoch, and the same draw when a stopped run replays an epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.train.masks import Key, Mask, TraitMasks

# CLIP's mean colour: a masked pixel becomes zero after CLIP's normalisation.
FILL = (123, 117, 104)


def trait_text(trait_type: str, value: str) -> str:
    """One trait's phrase, as ``sql/tables/texts.sql`` writes it ("Blue Eyes", or the value)."""
    return value if trait_type == "" else f"{value} {trait_type}"


def caption(collection: str, traits: Sequence[Key]) -> str:
    """The template caption of a token showing ``traits`` (the tables' visual template)."""
    if not traits:
        return f"A picture of {collection}"
    body = " ".join(trait_text(t, v) for t, v in traits)
    return f"A picture of {collection}, containing {body}"


def draw_seed(seed: int, epoch: int, key: str) -> int:
    """A 64-bit seed per (run seed, epoch, sample): reproducible, new every epoch."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class Draw:
    """One load's outcome: the traits hidden, and the caption built from the rest."""

    masked: tuple[Key, ...]
    kept: tuple[Key, ...]
    caption: str


def draw(
    collection: str,
    traits: Sequence[Key],
    masks: Mapping[Key, Mask],
    p: float,
    rng: np.random.Generator,
) -> Draw:
    """Pick each maskable trait with probability ``p``; traits without a mask stay."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {p}")
    masked: list[Key] = []
    kept: list[Key] = []
    for key in traits:
        # One number per trait, maskable or not, so a mask set change moves no other pick.
        picked = rng.random() < p
        (masked if picked and key in masks else kept).append(key)
    return Draw(tuple(masked), tuple(kept), caption(collection, kept))


def union_mask(masked: Sequence[Key], masks: TraitMasks, traits: Sequence[Key] = ()) -> Mask | None:
    """The pixels where the masked traits are visible in a token showing ``traits``
    (the masked ones when not given), at the masks' size; None when nothing is masked.

    Each masked trait paints its mask less the masks of the token's traits drawn
    above it (``TraitMasks.visible``): a body under a hat loses the hat's pixels,
    and a background only what everything else leaves showing.
    """
    if not masked:
        return None
    shown = traits or masked
    union = np.zeros_like(masks[masked[0]])
    for key in masked:
        union |= masks.visible(key, shown)
    return union


def apply_mask(image: Image.Image, mask: Mask | None) -> Image.Image:
    """The image with the mask's pixels painted FILL; the mask is scaled to the image.

    Masks are at the collection's native size and shard images are resized, so
    the mask is resized nearest-neighbour: pixel art stays pixel-exact.
    """
    if mask is None or not mask.any():
        return image
    rgb = image.convert("RGB")
    if mask.shape != (rgb.height, rgb.width):
        scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            rgb.size, Image.Resampling.NEAREST
        )
        mask = np.asarray(scaled) > 127
    pixels = np.array(rgb)
    pixels[mask] = FILL
    return Image.fromarray(pixels)
