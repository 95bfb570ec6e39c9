"""Per-trait-value image masks for dynamic masking (docs/method.md section 4).

A mask is a boolean array (height x width, the collection's native size) per
``(trait_type, value)``; ``TraitMasks`` holds a collection's masks with the
order their layers are drawn in, so a masked trait paints only where it is
visible in a token: its mask less the masks of the token's traits drawn above it.
``official`` reads masks and order from a collection's layer art; ``derived``
finds both from its token images alone, where nobody published layers; ``store``
builds each collection's once and keeps them in S3; ``draw`` is the per-sample
draw that hides picked traits in image and caption.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Key = tuple[str, str]
Mask = npt.NDArray[np.bool_]

# A mask covering this much of the canvas is a backdrop (Background layers, and the
# derived masks of tasks.train.masks widen backdrops to the whole canvas).
BACKDROP_COVER = 0.9
# How a collection's drawing order was found (TraitMasks.order).
ORDERS = ("official", "inferred", "area")


@dataclass(frozen=True, eq=False)
class TraitMasks(Mapping[Key, Mask]):
    """A collection's masks by value, and each value's depth in the drawing order.

    A larger ``depth`` is drawn later, on top; values of one depth do not cover
    each other. ``order`` says where the depths come from: the layer art
    (``official``), the token images (``inferred``, tasks.train.masks.derived), or
    only the masks' areas (``area``: backdrops under everything, all else level,
    which is how masks stored before the order existed are read).
    """

    masks: Mapping[Key, Mask]
    depth: Mapping[Key, int]
    order: str = "area"

    def __post_init__(self) -> None:
        missing = [key for key in self.masks if key not in self.depth]
        if missing:
            raise ValueError(f"no depth for {missing[:3]}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")

    def __getitem__(self, key: Key) -> Mask:
        return self.masks[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def visible(self, key: Key, shown: Iterable[Key]) -> Mask:
        """``key``'s pixels in a token showing ``shown``: its mask less the masks of
        the shown values drawn above it (values without a mask cover nothing)."""
        region = self.masks[key]
        for other in shown:
            if other != key and other in self.masks and self.depth[other] > self.depth[key]:
                region = region & ~self.masks[other]
        return region


def by_area(masks: Mapping[Key, Mask]) -> TraitMasks:
    """Masks whose order nobody knows: backdrops (nearly the whole canvas) lie under
    everything, every other value at one level, so none hides another."""
    depth = {key: 0 if mask.mean() >= BACKDROP_COVER else 1 for key, mask in masks.items()}
    return TraitMasks(dict(masks), depth, "area")


def by_type_order(
    masks: Mapping[Key, Mask], types: Sequence[Sequence[str]], order: str
) -> TraitMasks:
    """Masks whose trait types are drawn in the order of ``types``, back to front;
    each entry lists the types drawn at that level. A type not listed lies under
    all listed ones, at the backdrops' level."""
    level = {t: i + 1 for i, same in enumerate(types) for t in same}
    depth = {key: level.get(key[0], 0) for key in masks}
    return TraitMasks(dict(masks), depth, order)


def iou(a: Mask, b: Mask) -> float:
    """Intersection over union of two masks of one shape; 1.0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union
