"""Derived masks: found from a collection's own token images, no layer art needed.

``MaskBuilder`` streams over the tokens once and
keeps, per value and per pixel, a histogram of the colours its tokens show there.
A pixel belongs to a value when tokens with the value show colours there that
tokens without it show less often, in at least ``tau`` of the value's tokens:

    excess(v, p) = sum over colours c of max(0, f_v(c) - f_rest(c) - z * se(c))

``f_v``/``f_rest`` are the shares of tokens with/without the value showing colour c
at p, ``se`` the standard error of their difference under "the value changes
nothing" (pooled share, 1/n + 1/(N-n)), so a rare value only counts colours that
are rare without it: the threshold adapts to the number of tokens. Colours are
exact RGBA, matched per pixel against a palette of at most ``palette`` colours
seen there; later colours share one overflow slot. Summing over colours keeps a
value whose layer comes in colour variants (Moonbirds eyes in seven colours), and
``tau`` below one keeps pixels that a layer above (a hat) hides in most tokens.

What "differ" finds is the region that tells the value apart: where it draws
something, and where it leaves visible what its siblings would cover (closed
eyes show the face where open eyes draw). Pixels hidden in every token, and
pixels where all values of a trait type draw the same colours (nested shapes),
cannot differ. Four steps bring the masks towards the layers' full alpha.

The first two use the backdrop. PFP art is drawn over a flat backdrop, so a
token whose sampled border is at least half one colour shows its backdrop
wherever it shows that colour; a value's *foreground* is where at least half of
those of its tokens show anything else. It is observed, not compared, so one
such token suffices; values without one, and collections whose art covers the
border, skip both steps:

- Foreground: a layer draws only over the backdrop; where a value differs only
  by showing the backdrop (a slimmer body than its siblings), it is cut away.
- Bases: the bottom layer of the character (a body) is drawn in every token and
  its values (colours, patterns, shapes) differ across the whole character, while
  the parts drawn on top (eyes, a beak, a hat) differ within their own small box.
  A trait type in every token whose values' differing pixels span, by their
  bounding box, at least three quarters of their foreground (token-weighted) is
  a base; its values' masks become their foreground, the whole silhouette, which
  pixels that all its values draw alike (the outline, a plain belly) leave out of
  what differs.
- Holes: an enclosed hole of a mask is filled when the value's tokens show one
  colour there in at least half of them, or when the hole is at most half the
  mask's size and lies mostly under masks of other (non-backdrop) trait types,
  as eyes on a body do; a large hole such as the body inside a cape is kept.
- Backdrops: a trait type present in every token whose masks cover at least
  three quarters of the image border (token-weighted) lies under everything; its
  values' masks become the whole canvas (``fill_backdrop=False`` keeps what shows).

A value in every token has no tokens without it to compare and gets no mask.
Tokens without traits and images of another size are skipped and reported.

The drawing order of the trait types is inferred from the same counts. Where
the masks of two types overlap, the type drawn on top shows its own art there,
so its values' tokens show one colour at those pixels; the type underneath shows
whatever lies on it, so its values' tokens there vary with the other type. The
type whose values are purer there (share of their tokens showing their most
common colour, token-weighted, by at least ``ORDER_MARGIN``) is drawn above. The
pairs are placed strongest first, leaving out any that would contradict those
already placed (a cycle), and each type's level is the longest chain of types
under it. Backdrops lie under everything, bases on them, level with each other
(Moonbirds' Body and Feathers are one layer), then the rest; types whose
overlaps are too close to call stay level, and neither hides the other.

Memory: ``values x grid_pixels x (palette + 2) x 4`` bytes of counts (Moonbirds,
116 values at 42x42 with 32 colours: 28 MB) plus 18 MB of buffered pixels. Images
larger than ``grid`` on a side are sampled on a grid of pixel centres (never
averaged, which would invent colours), and the masks scaled back to native size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from tasks.train.masks import Key, Mask, TraitMasks, by_type_order

MAX_SKIPPED_LISTED = 100
BACKDROP_BORDER = 0.75  # token-weighted share of border pixels a backdrop type covers
HOLE_PURITY = 0.5  # share of a value's tokens showing one colour in a hole it may claim
HOLE_SIZE = 0.5  # largest hole, relative to the mask, filled because others cover it
BORDER_BACKDROP = 0.5  # share of a token's border in one colour for it to be the backdrop
FOREGROUND = 0.5  # share of a value's tokens drawing over the backdrop at a foreground pixel
BASE_SPAN = 0.75  # share of the foreground a base type's differing pixels span (by their box)
ORDER_MARGIN = 0.1  # lead in purity over an overlap that puts one trait type above another
FLUSH_CELLS = 1 << 21  # sampled pixels buffered before they are counted (18 MB)
COMPARE_CELLS = 1 << 24  # (pixel, palette slot) pairs compared at once (16 MB)


@dataclass(frozen=True)
class Skipped:
    """A token the builder did not use, and why."""

    token: str
    reason: str


@dataclass(frozen=True)
class DerivedMasks:
    """Masks per value, and the reason for each value and token left without one."""

    masks: dict[Key, Mask]
    reasons: dict[Key, str]
    backdrops: tuple[str, ...]  # trait types whose masks were widened to the canvas
    tokens: int  # tokens the statistics came from
    skipped: tuple[Skipped, ...]  # the first MAX_SKIPPED_LISTED skipped tokens
    skipped_count: int
    bases: tuple[str, ...] = ()  # trait types whose masks are their values' foreground
    # Trait types back to front, one tuple per level; backdrops and types not listed lie under.
    levels: tuple[tuple[str, ...], ...] = ()

    def ordered(self) -> TraitMasks:
        """The masks with the drawing order inferred from the images."""
        return by_type_order(self.masks, self.levels, "inferred")


class MaskBuilder:
    """Accumulates per-value colour histograms over tokens; ``masks`` derives the masks.

    ``size`` is (width, height), as Pillow writes it; every image must have it.
    Images are buffered up to FLUSH_CELLS sampled pixels, so memory does not grow
    with the number of tokens.
    """

    def __init__(self, size: tuple[int, int], *, grid: int = 64, palette: int = 32) -> None:
        width, height = size
        if width < 1 or height < 1 or grid < 1 or palette < 1:
            raise ValueError("size, grid and palette must be positive")
        self.size = (width, height)
        gh, gw = min(height, grid), min(width, grid)
        # Sample points: pixel centres of a gh x gw grid; exact pixels, never averages.
        self._rows = (np.arange(gh) * 2 + 1) * height // (2 * gh)
        self._cols = (np.arange(gw) * 2 + 1) * width // (2 * gw)
        self._grid = (gh, gw)
        self._pixels = gh * gw
        self._palette_size = palette
        self._flush_tokens = max(1, FLUSH_CELLS // self._pixels)
        self._palette = np.full((self._pixels, palette), -1, np.int64)
        self._used = np.zeros(self._pixels, np.int64)
        self._counts = np.zeros((0, self._pixels, palette + 1), np.uint32)
        self._total = np.zeros((self._pixels, palette + 1), np.int64)
        # Per value and pixel: tokens showing something over their backdrop there,
        # and per value the tokens whose border shows a backdrop at all.
        self._drawn = np.zeros((0, self._pixels), np.uint32)
        self._backdrop_tokens: list[int] = []
        self._keys: dict[Key, int] = {}
        self._value_tokens: list[int] = []
        self._type_tokens: defaultdict[str, int] = defaultdict(int)
        self._pending: list[npt.NDArray[np.int64]] = []
        self._pending_keys: list[list[int]] = []
        self._pending_drawn: list[npt.NDArray[np.bool_]] = []  # pixels not the backdrop
        self._pending_shows: list[bool] = []  # whether the token shows a backdrop
        self._tokens = 0
        self._skipped: list[Skipped] = []
        self._skipped_count = 0

    @property
    def count_bytes(self) -> int:
        """Bytes held by the per-value colour counts (the builder's main memory)."""
        held = self._counts.nbytes + self._total.nbytes + self._palette.nbytes
        return int(held + self._drawn.nbytes)

    def add(
        self, image: npt.NDArray[np.uint8] | Image.Image, traits: Iterable[Key], token: str = ""
    ) -> str | None:
        """Count one token; returns None, or why it was skipped (also kept for ``masks``)."""
        keys = list(dict.fromkeys((str(t), str(v)) for t, v in traits))
        if not keys:
            return self._skip(token, "no traits")
        if isinstance(image, Image.Image):
            width, height = image.size
        elif isinstance(image, np.ndarray) and image.ndim >= 2:
            height, width = image.shape[:2]
        else:
            return self._skip(token, "not an image")
        if (width, height) != self.size:  # checked first: a huge image is never converted
            want = f"{self.size[0]}x{self.size[1]}"
            return self._skip(token, f"image is {width}x{height}, the collection's is {want}")
        pixels = _rgba(image)
        if pixels is None:
            return self._skip(token, "not an 8-bit grey, RGB or RGBA image")
        sampled = pixels[self._rows][:, self._cols].astype(np.int64)
        packed = (sampled[..., 0] << 24) | (sampled[..., 1] << 16)
        packed |= (sampled[..., 2] << 8) | sampled[..., 3]
        self._pending.append(packed.reshape(-1))
        self._pending_keys.append([self._key_index(key) for key in keys])
        backdrop = _border_colour(packed)
        self._pending_drawn.append(packed.reshape(-1) != backdrop)
        self._pending_shows.append(backdrop >= 0)
        for trait_type in dict.fromkeys(t for t, _ in keys):
            self._type_tokens[trait_type] += 1
        self._tokens += 1
        if len(self._pending) >= self._flush_tokens:
            self._flush()
        return None

    def masks(
        self,
        *,
        min_tokens: int = 3,
        tau: float = 0.2,
        z: float = 3.0,
        fill_backdrop: bool = True,
    ) -> DerivedMasks:
        """The derived mask of every value with enough tokens (see the module docstring)."""
        self._flush()
        total = self._tokens
        reasons: dict[Key, str] = {}
        grid_masks: dict[Key, Mask] = {}
        purity: dict[Key, npt.NDArray[np.float64]] = {}
        pooled = self._total / max(total, 1)
        for key, index in self._keys.items():
            n = self._value_tokens[index]
            if n >= total:
                reasons[key] = "in every token: no tokens without it to compare"
                continue
            if n < min_tokens:
                reasons[key] = f"only {n} tokens (min_tokens={min_tokens})"
                continue
            counts = self._counts[index].astype(np.float64)
            with_v = counts / n
            without = (self._total - counts) / (total - n)
            se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / (total - n)))
            excess = np.clip(with_v - without - z * se, 0, None).sum(axis=1)
            mask = (excess >= tau).reshape(self._grid)
            if not mask.any():
                reasons[key] = f"no pixel differs in {tau:.0%} of its tokens"
                continue
            grid_masks[key] = mask
            purity[key] = with_v[:, :-1].max(axis=1).reshape(self._grid)
        backdrops = self._backdrops(grid_masks)
        foreground = self._foregrounds()
        bases = self._bases(grid_masks, foreground, backdrops)
        for key in list(grid_masks):
            if key[0] in backdrops or key not in foreground:
                continue
            if key[0] in bases:
                grid_masks[key] = foreground[key]
            else:
                grid_masks[key] = grid_masks[key] & foreground[key]
            if not grid_masks[key].any():
                del grid_masks[key]
                reasons[key] = "differs only where its tokens show the backdrop"
        _fill_holes(grid_masks, purity, backdrops)
        levels = _type_levels(grid_masks, purity, self._weights(grid_masks), backdrops | bases)
        if bases:
            levels = (tuple(sorted(bases)), *levels)
        if fill_backdrop:
            for key in grid_masks:
                if key[0] in backdrops:
                    grid_masks[key] = np.ones(self._grid, bool)
        return DerivedMasks(
            masks={key: self._native(mask) for key, mask in grid_masks.items()},
            reasons=reasons,
            backdrops=tuple(sorted(backdrops)),
            tokens=total,
            skipped=tuple(self._skipped),
            skipped_count=self._skipped_count,
            bases=tuple(sorted(bases)),
            levels=levels,
        )

    def _backdrops(self, masks: Mapping[Key, Mask]) -> set[str]:
        """Trait types in every token whose masks cover most of the image border."""
        cover: defaultdict[str, float] = defaultdict(float)
        for key, mask in masks.items():
            border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
            cover[key[0]] += self._value_tokens[self._keys[key]] * float(border.mean())
        return {
            trait_type
            for trait_type, covered in cover.items()
            if self._type_tokens[trait_type] == self._tokens
            and covered >= BACKDROP_BORDER * self._tokens
        }

    def _foregrounds(self) -> dict[Key, Mask]:
        """Per value with tokens that show a backdrop: where most of them draw over it."""
        found: dict[Key, Mask] = {}
        for key, index in self._keys.items():
            n = self._backdrop_tokens[index]
            if n:
                found[key] = (self._drawn[index] >= FOREGROUND * n).reshape(self._grid)
        return found

    def _bases(
        self, masks: Mapping[Key, Mask], foreground: Mapping[Key, Mask], backdrops: set[str]
    ) -> set[str]:
        """Trait types in every token whose values differ across most of their foreground."""
        span: defaultdict[str, float] = defaultdict(float)
        weight: defaultdict[str, float] = defaultdict(float)
        for key, mask in masks.items():
            if key[0] in backdrops or key not in foreground:
                continue
            drawn = foreground[key]
            tokens = self._backdrop_tokens[self._keys[key]]
            weight[key[0]] += tokens
            differs = mask & drawn
            if differs.any():
                rows = np.flatnonzero(differs.any(axis=1))
                cols = np.flatnonzero(differs.any(axis=0))
                box = drawn[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                span[key[0]] += tokens * int(box.sum()) / int(drawn.sum())
        return {
            trait_type
            for trait_type, total in weight.items()
            if self._type_tokens[trait_type] == self._tokens
            and span[trait_type] >= BASE_SPAN * total
        }

    def _weights(self, masks: Mapping[Key, Mask]) -> dict[Key, int]:
        """Tokens per value, for the values that have a mask."""
        return {key: self._value_tokens[self._keys[key]] for key in masks}

    def _native(self, mask: Mask) -> Mask:
        width, height = self.size
        gh, gw = self._grid
        rows = np.arange(height) * gh // height
        cols = np.arange(width) * gw // width
        return np.asarray(mask[rows][:, cols])

    def _key_index(self, key: Key) -> int:
        index = self._keys.get(key)
        if index is None:
            index = self._keys[key] = len(self._keys)
            self._value_tokens.append(0)
            self._backdrop_tokens.append(0)
        self._value_tokens[index] += 1
        return index

    def _skip(self, token: str, reason: str) -> str:
        self._skipped_count += 1
        if len(self._skipped) < MAX_SKIPPED_LISTED:
            self._skipped.append(Skipped(token, reason))
        return reason

    def _flush(self) -> None:
        """Add the buffered images to the counts, one value at a time."""
        if not self._pending:
            return
        slots = np.concatenate([self._slots(chunk) for chunk in self._chunks()])
        width = self._palette_size + 1
        cells = np.arange(self._pixels) * width + slots  # (tokens, pixels) cell per colour
        values = len(self._keys)
        self._counts = _grown(self._counts, values)
        self._drawn = _grown(self._drawn, values)
        shows = np.array(self._pending_shows, bool)
        drawn = np.stack(self._pending_drawn) & shows[:, None]
        members: defaultdict[int, list[int]] = defaultdict(list)
        for row, indices in enumerate(self._pending_keys):
            for index in indices:
                members[index].append(row)
        size = self._pixels * width
        for index, rows in members.items():
            added = np.bincount(cells[rows].ravel(), minlength=size)
            self._counts[index] += added.reshape(self._pixels, width).astype(np.uint32)
            self._drawn[index] += drawn[rows].sum(axis=0, dtype=np.uint32)
            self._backdrop_tokens[index] += int(shows[rows].sum())
        self._total += np.bincount(cells.ravel(), minlength=size).reshape(self._pixels, width)
        self._pending.clear()
        self._pending_keys.clear()
        self._pending_drawn.clear()
        self._pending_shows.clear()

    def _chunks(self) -> Iterable[npt.NDArray[np.int64]]:
        """The buffered colours in row chunks small enough to compare with the palette."""
        step = max(1, COMPARE_CELLS // (self._pixels * self._palette_size))
        for start in range(0, len(self._pending), step):
            yield np.stack(self._pending[start : start + step])

    def _slots(self, colours: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Palette slot of each (token, pixel) colour; new colours take free slots."""
        equal = colours[:, :, None] == self._palette[None]
        found = equal.any(axis=2)
        slots: npt.NDArray[np.int64] = equal.argmax(axis=2)
        if found.all():
            return slots
        token, pixel = np.nonzero(~found)
        wanted = (pixel.astype(np.int64) << 32) | colours[token, pixel]
        unique = np.unique(wanted)
        where = unique >> 32
        rank = np.arange(len(unique)) - np.searchsorted(where, where, side="left")
        slot = self._used[where] + rank
        free = slot < self._palette_size
        self._palette[where[free], slot[free]] = unique[free] & 0xFFFFFFFF
        np.maximum.at(self._used, where[free], slot[free] + 1)
        slot[~free] = self._palette_size  # the overflow slot
        slots[token, pixel] = slot[np.searchsorted(unique, wanted)]
        return slots


def _grown(counts: npt.NDArray[np.uint32], values: int) -> npt.NDArray[np.uint32]:
    """``counts`` with zero rows added up to ``values`` rows (values seen so far)."""
    if counts.shape[0] >= values:
        return counts
    grown = np.zeros((values, *counts.shape[1:]), np.uint32)
    grown[: counts.shape[0]] = counts
    return grown


def _border_colour(packed: npt.NDArray[np.int64]) -> int:
    """The packed colour filling most of the sampled border (the backdrop), or -1 (none)."""
    border = np.concatenate([packed[0], packed[-1], packed[1:-1, 0], packed[1:-1, -1]])
    colours, counts = np.unique(border, return_counts=True)
    best = int(np.argmax(counts))
    return int(colours[best]) if counts[best] >= BORDER_BACKDROP * border.size else -1


def _rgba(image: npt.NDArray[np.uint8] | Image.Image) -> npt.NDArray[np.uint8] | None:
    """The image as an RGBA uint8 array, or None when it is not one we can read."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGBA"))
    if image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        return None
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[2] == 3:
        opaque = np.full((*image.shape[:2], 1), 255, np.uint8)
        image = np.concatenate([image, opaque], axis=2)
    return image


def _fill_holes(
    masks: dict[Key, Mask], purity: Mapping[Key, npt.NDArray[np.float64]], backdrops: set[str]
) -> None:
    """Fill the holes a value's layer most likely spans (see the module docstring)."""
    if not masks:
        return
    shape = next(iter(masks.values())).shape
    others: dict[str, Mask] = {}
    for trait_type in {key[0] for key in masks}:
        others[trait_type] = np.zeros(shape, bool)
        for key, mask in masks.items():
            if key[0] != trait_type and key[0] not in backdrops:
                others[trait_type] |= mask
    for key, mask in list(masks.items()):
        filled = mask.copy()
        for hole in _holes(mask):
            consistent = purity[key][hole].mean() >= HOLE_PURITY
            occluded = hole.sum() <= HOLE_SIZE * mask.sum() and others[key[0]][hole].mean() >= 0.5
            if consistent or occluded:
                filled |= hole
        masks[key] = filled


def _type_levels(
    masks: Mapping[Key, Mask],
    purity: Mapping[Key, npt.NDArray[np.float64]],
    tokens: Mapping[Key, int],
    below_all: set[str],
) -> tuple[tuple[str, ...], ...]:
    """Trait types, less ``below_all``, back to front by who shows purer colours
    where they overlap."""
    types = sorted({key[0] for key in masks} - below_all)
    if not types:
        return ()
    shape = next(iter(masks.values())).shape
    weight = {t: np.zeros(shape) for t in types}
    pure = {t: np.zeros(shape) for t in types}
    for key, mask in masks.items():
        if key[0] in weight:
            weight[key[0]] += tokens[key] * mask
            pure[key[0]] += tokens[key] * mask * purity[key]
    for t in types:
        pure[t] /= np.maximum(weight[t], 1)
    leads: list[tuple[float, str, str]] = []  # (lead, upper, lower)
    for i, a in enumerate(types):
        for b in types[i + 1 :]:
            overlap = (weight[a] > 0) & (weight[b] > 0)
            if overlap.any():
                lead = float(pure[a][overlap].mean() - pure[b][overlap].mean())
                if abs(lead) >= ORDER_MARGIN:
                    leads.append((abs(lead), a, b) if lead > 0 else (abs(lead), b, a))
    below: dict[str, set[str]] = {t: set() for t in types}
    for _, upper, lower in sorted(leads, reverse=True):
        if not _under(below, lower, upper):  # placing it would close a cycle
            below[upper].add(lower)
    level: dict[str, int] = {}

    def level_of(t: str) -> int:
        if t not in level:
            level[t] = 1 + max((level_of(u) for u in below[t]), default=0)
        return level[t]

    for t in types:
        level_of(t)
    return tuple(
        tuple(t for t in types if level[t] == n) for n in range(1, max(level.values()) + 1)
    )


def _under(below: Mapping[str, set[str]], top: str, wanted: str) -> bool:
    """Whether ``wanted`` lies (transitively) under ``top``."""
    seen, todo = set(), [top]
    while todo:
        for lower in below[todo.pop()]:
            if lower == wanted:
                return True
            if lower not in seen:
                seen.add(lower)
                todo.append(lower)
    return False


def _holes(mask: Mask) -> list[Mask]:
    """Connected regions (4-neighbour) outside the mask that do not reach the border."""
    outside = np.zeros_like(mask)
    free = ~mask
    outside[[0, -1], :] = free[[0, -1], :]
    outside[:, [0, -1]] = free[:, [0, -1]]
    outside = _grow(outside, free)
    inside = free & ~outside
    holes = []
    while inside.any():
        seed = np.zeros_like(mask)
        seed[np.unravel_index(int(np.argmax(inside)), mask.shape)] = True
        hole = _grow(seed, inside)
        holes.append(hole)
        inside &= ~hole
    return holes


def _grow(region: Mask, within: Mask) -> Mask:
    """Grow ``region`` through 4-neighbours inside ``within`` until it stops changing."""
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= within
        if np.array_equal(grown, region):
            return grown
        region = grown
