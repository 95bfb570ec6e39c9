"""Collections whose trait masks are known, and how close derived masks come to them.

- ``compose_hashlips``: a collection composed here from the HashLips sample layers
  (``tests/data/hashlips_layers.tar.gz``): each token takes one value per layer, drawn
  with the weights in the file names, alpha-composited in the engine's layer order,
  so each token's exact masks are known (the layer alpha, and the visible region).
- ``moonbirds_tokens``: the real Moonbirds (10,000 tokens, 42x42) with their traits,
  whose official masks come from the layer art (``visible_official``: what each
  value's layer shows in any token).
- ``mean_iou``: derived masks against known ones, per trait type and overall.

The tests (slow/test_masks.py) hold tasks.train.masks to these; bench/experiments/masks.py
measures the same, at full size, with timings.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from infra.stack import MOONBIRDS_ARCHIVE
from tasks.core.content import parse_metadata
from tasks.tables.traits import normalise_traits
from tasks.train.masks import Key, Mask, iou
from tasks.train.masks.official import LayerArt
from tests.data.synthetic import LAYER_ORDER, LAYERS_ARCHIVE

MOONBIRDS_SIZE = (42, 42)
_MOONBIRDS_FILE = re.compile(r"moonbirds/(images|metadata)/(\d+)\.(png|json)")


@dataclass(frozen=True)
class Composed:
    """A collection composed from layers, with each value's exact masks."""

    images: npt.NDArray[np.uint8]  # (tokens, size, size, 4)
    traits: list[list[Key]]
    full: dict[Key, Mask]  # layer alpha > 0
    visible_share: dict[Key, npt.NDArray[np.float64]]  # share of its tokens showing each pixel
    left_out: tuple[str, ...]  # layer folders outside the engine's layer order


def compose_hashlips(
    tokens: int, size: int = 64, seed: int = 0, archive: Path = LAYERS_ARCHIVE
) -> Composed:
    """Compose ``tokens`` images from the HashLips sample layers, scaled to ``size``.

    Layers are scaled with premultiplied alpha (no dark fringes) and drawn in
    LAYER_ORDER; a layer is visible where its alpha is > 0 and no later layer is
    fully opaque.
    """
    layers: dict[str, list[tuple[str, int, npt.NDArray[np.uint8]]]] = defaultdict(list)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) >= 3 and parts[-3] == "layers"):
                continue
            value, weight = parts[-1].removesuffix(".png").rsplit("#", 1)
            data = tar.extractfile(member)
            if data is not None:
                layers[parts[-2]].append((value, int(weight), _scaled(data.read(), size)))
    order = [name for name in LAYER_ORDER if name in layers]
    rng = np.random.default_rng(seed)
    picks = {}
    for name in order:
        options = sorted(layers[name])
        weights = np.array([weight for _, weight, _ in options], float)
        layers[name] = options
        picks[name] = rng.choice(len(options), size=tokens, p=weights / weights.sum())

    images = np.zeros((tokens, size, size, 4), np.uint8)
    traits: list[list[Key]] = []
    shown: dict[Key, npt.NDArray[np.float64]] = defaultdict(lambda: np.zeros((size, size)))
    counts: dict[Key, int] = defaultdict(int)
    for i in range(tokens):
        chosen = [(name, *layers[name][picks[name][i]]) for name in order]
        canvas = Image.new("RGBA", (size, size))
        covered = np.zeros((size, size), bool)
        for name, value, _, rgba in reversed(chosen):  # front to back for visibility
            shown[(name, value)] += (rgba[..., 3] > 0) & ~covered
            counts[(name, value)] += 1
            covered |= rgba[..., 3] == 255
        for _, _, _, rgba in chosen:
            canvas = Image.alpha_composite(canvas, Image.fromarray(rgba))
        images[i] = np.asarray(canvas)
        traits.append([(name, value) for name, value, _, _ in chosen])
    full = {(name, value): rgba[..., 3] > 0 for name in order for value, _, rgba in layers[name]}
    share = {key: shown[key] / counts[key] for key in counts}
    left_out = tuple(sorted(set(layers) - set(order)))
    return Composed(images, traits, full, share, left_out)


def _scaled(data: bytes, size: int) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data), formats=("PNG",)) as im:
        scaled = im.convert("RGBA").convert("RGBa").resize((size, size), Image.Resampling.BOX)
    return np.asarray(scaled.convert("RGBA"))


def moonbirds_tokens(archive: Path = MOONBIRDS_ARCHIVE) -> Iterator[tuple[str, bytes, list[Key]]]:
    """(token id, PNG bytes, traits) of every Moonbird, in id order.

    The archive lists images before metadata, so the encoded images (5 MB) are
    held until their traits arrive; the mask builder itself streams.
    """
    images: dict[int, bytes] = {}
    traits: dict[int, list[Key]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = _MOONBIRDS_FILE.fullmatch(member.name)
            data = tar.extractfile(member) if match else None
            if match is None or data is None:
                continue
            token = int(match[2])
            if match[1] == "images":
                images[token] = data.read()
            else:
                found = normalise_traits(parse_metadata(data.read())).traits
                traits[token] = [(t.trait_type, t.value) for t in found]
    for token in sorted(images):
        yield str(token), images[token], traits.get(token, [])


def visible_official(art: LayerArt) -> dict[Key, Mask]:
    """Per value, the pixels its layer shows in any token (a later layer's alpha > 0 covers)."""
    visible: dict[Key, Mask] = {}
    for token, drawn in art.tokens.items():
        shows = {path: art.alpha[path].copy() for _, path in drawn}
        covered = np.zeros(art.size, bool)
        for path in reversed(shows):  # one layer may draw two traits (Body, Feathers)
            shows[path] &= ~covered
            covered |= art.alpha[path]
        for key, path in drawn:
            if key is not None:
                visible[key] = visible.get(key, np.zeros(art.size, bool)) | shows[path]
        backdrop = art.backdrop[token]
        visible[backdrop] = visible.get(backdrop, np.zeros(art.size, bool)) | ~covered
    return visible


def mean_iou(derived: Mapping[Key, Mask], truth: Mapping[Key, Mask]) -> dict[str, Any]:
    """Mean IoU per trait type and over all values that have both masks."""
    per_type: dict[str, list[float]] = defaultdict(list)
    for key, mask in derived.items():
        if key in truth:
            per_type[key[0]].append(iou(mask, truth[key]))
    every = [value for values in per_type.values() for value in values]
    return {
        "overall": round(float(np.mean(every)), 3) if every else None,
        "values": len(every),
        "per_trait_type": {t: round(float(np.mean(v)), 3) for t, v in sorted(per_type.items())},
    }
