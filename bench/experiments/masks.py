"""How good derived trait masks are: IoU against layer art, and how long they take.

Two collections with known masks:

- Moonbirds (10,000 real tokens, 42x42): derived masks against the official ones
  (layer alpha united over the layers that draw each value; Background is the
  whole canvas), and, with backdrops kept as they show, against the official
  visible region (a layer's alpha minus the layers drawn above it in that token,
  united over the value's tokens).
- A collection composed from the HashLips sample layers (tests.data.known_masks,
  which also reads the Moonbirds and scores masks): each token takes one
  value per layer, drawn with the weights in the file names, alpha-composited in
  the engine's layer order, so each token's exact masks are known. Derived masks
  are compared with the layer alpha and with the visible region (visible in any
  of the value's tokens, and in at least ``tau`` of them: what "differs in tau of
  its tokens" can find).

    python -m bench.experiments.masks [--hashlips-tokens 2000] [--hashlips-size 128]

prints JSON: mean IoU per trait type and overall, and timings (decode, add, masks).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.measure import Meter
from infra.stack import MOONBIRDS_LAYERS
from tasks.export.images import PNG_MIME, decode
from tasks.train.masks import Key, iou
from tasks.train.masks.derived import DerivedMasks, MaskBuilder
from tasks.train.masks.official import moonbirds_art, official_masks
from tests.data.known_masks import (
    MOONBIRDS_SIZE,
    compose_hashlips,
    mean_iou,
    moonbirds_tokens,
    visible_official,
)


def bench_moonbirds(tau: float) -> dict[str, Any]:
    meter = Meter()
    tokens = list(moonbirds_tokens())
    read = meter.lap()
    builder = MaskBuilder(MOONBIRDS_SIZE)
    decode_s = add_s = 0.0
    for token, png, traits in tokens:
        meter.lap()
        image = decode(png, PNG_MIME)
        decode_s += meter.lap()
        builder.add(image, traits, token)
        add_s += meter.lap()
    meter.lap()
    derived = builder.masks(tau=tau)
    masks_s = meter.lap()
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
    meter = Meter()
    composed = compose_hashlips(tokens, size)
    compose_s = meter.lap()
    builder = MaskBuilder((size, size), grid=size)
    meter.lap()
    for i, image in enumerate(composed.images):
        builder.add(image, composed.traits[i], str(i))
    add_s = meter.lap()
    derived = builder.masks(tau=tau)
    masks_s = meter.lap()
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
