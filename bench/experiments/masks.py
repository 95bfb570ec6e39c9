"""How good derived trait masks are: IoU against layer art, and how long they take.

Two collections with known masks:

- Moonbirds (10,000 real tokens, 42x42): derived masks against the official ones
  (layer alpha united over the layers that draw each value; Background is the
  whole canvas), and, with backdrops kept as they show, against the official
  visible region (a layer's alpha minus the layers drawn above it in that token,
  united over the value's tokens).
- A collection composed here from the HashLips sample layers: each token takes one
  value per layer, drawn with the weights in the file names, alpha-composited in
  the engine's layer order, so each token's exact masks are known. Derived masks
  are compared with the layer alpha and with the visible region (visible in any
  of the value's tokens, and in at least ``tau`` of them: what "differs in tau of
  its tokens" can find).

    python -m bench.masks [--hashlips-tokens 2000] [--hashlips-size 128]

prints JSON: mean IoU per trait type and overall, and timings (decode, add, masks).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.synthetic import LAYER_ORDER, LAYERS_ARCHIVE
from infra.stack import MOONBIRDS_ARCHIVE, MOONBIRDS_LAYERS
from tasks.core.content import parse_metadata
from tasks.export.images import PNG_MIME, decode
from tasks.tables.traits import normalise_traits
from tasks.train.masks import (
    DerivedMasks,
    Key,
    LayerArt,
    Mask,
    MaskBuilder,
    iou,
    moonbirds_art,
    official_masks,
)

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


def bench_moonbirds(tau: float) -> dict[str, Any]:
    start = time.perf_counter()
    tokens = list(moonbirds_tokens())
    read = time.perf_counter() - start
    builder = MaskBuilder(MOONBIRDS_SIZE)
    decode_s = add_s = 0.0
    for token, png, traits in tokens:
        t0 = time.perf_counter()
        image = decode(png, PNG_MIME)
        t1 = time.perf_counter()
        builder.add(image, traits, token)
        add_s += time.perf_counter() - t1
        decode_s += t1 - t0
    t0 = time.perf_counter()
    derived = builder.masks(tau=tau)
    masks_s = time.perf_counter() - t0
    art = moonbirds_art(MOONBIRDS_LAYERS)
    shown = builder.masks(tau=tau, fill_backdrop=False).masks  # backdrops as they show
    return {
        "tokens": derived.tokens,
        "iou_vs_official": mean_iou(derived.masks, official_masks(MOONBIRDS_LAYERS)),
        "iou_vs_official_visible": mean_iou(shown, visible_official(art)),
        "backdrops": list(derived.backdrops),
        "bases": list(derived.bases),
        "no_mask": {f"{t}: {v}": reason for (t, v), reason in derived.reasons.items()},
        "seconds": {
            "read_archive": round(read, 2),
            "decode": round(decode_s, 2),
            "add": round(add_s, 2),
            "masks": round(masks_s, 2),
        },
        "count_megabytes": round(builder.count_bytes / 1e6, 1),
    }


def bench_hashlips(tokens: int, size: int, tau: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    composed = compose_hashlips(tokens, size)
    compose_s = time.perf_counter() - t0
    builder = MaskBuilder((size, size), grid=size)
    t0 = time.perf_counter()
    for i, image in enumerate(composed.images):
        builder.add(image, composed.traits[i], str(i))
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    derived = builder.masks(tau=tau)
    masks_s = time.perf_counter() - t0
    share = composed.visible_share
    return {
        "tokens": tokens,
        "size": size,
        "layers_left_out": list(composed.left_out),
        "iou_vs_layer_alpha": mean_iou(derived.masks, composed.full),
        "iou_vs_visible_any": mean_iou(derived.masks, {k: s > 0 for k, s in share.items()}),
        "iou_vs_visible_share": mean_iou(derived.masks, {k: s >= tau for k, s in share.items()}),
        "backdrops": list(derived.backdrops),
        "bases": list(derived.bases),
        "per_value_vs_visible_share": _per_value(derived, share, tau),
        "no_mask": {f"{t}: {v}": reason for (t, v), reason in derived.reasons.items()},
        "seconds": {
            "compose": round(compose_s, 2),
            "add": round(add_s, 2),
            "masks": round(masks_s, 2),
        },
    }


def _per_value(
    derived: DerivedMasks, share: Mapping[Key, npt.NDArray[np.float64]], tau: float
) -> dict[str, float]:
    return {
        f"{t}: {v}": round(iou(mask, share[(t, v)] >= tau), 3)
        for (t, v), mask in sorted(derived.masks.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashlips-tokens", type=int, default=2000)
    parser.add_argument("--hashlips-size", type=int, default=128)
    parser.add_argument("--tau", type=float, default=0.2)
    args = parser.parse_args()
    report = {
        "moonbirds": bench_moonbirds(args.tau),
        "hashlips": bench_hashlips(args.hashlips_tokens, args.hashlips_size, args.tau),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
