"""A HashLips-composed collection as an evaluation target: the masking experiment's
second target beside real Moonbirds, held out from the pretraining corpus.

The same shape as ``tests.data.moonbird_shards``: ``<root>/train`` and ``<root>/test``
WebDataset shards written by the export's writer through a private SeaweedFS
(``tests.data.composed.write_export``), and the collection's masks under
``<root>/masks/official`` (each value's art alpha, drawn in ``LAYER_ORDER``: the
order is known) and ``<root>/masks/derived`` (derived from the train images, with
the order inferred from them, as a collection without layer art gets). A folder
is named by a hash of the plan and of the code that decides its bytes, and
finished by ``prepared.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core import paths
from tasks.core.folders import open_folder
from tasks.export.images import PNG_MIME, decode
from tasks.train.masks import TraitMasks, by_type_order, iou
from tasks.train.masks.derived import MaskBuilder
from tasks.train.masks.store import encode_masks
from tests.data.composed import (
    BACKDROP,
    TRAIT_TYPES,
    VALUES,
    ComposedCollection,
    Plan,
    compose,
    load_art,
    write_export,
)
from tests.data.moonbird_shards import CACHE, DONE, LOCAL, PROJECT_ROOT, Prepared

# The second target: six values per trait type, 2,000 unique tokens, 20% held out.
TARGET = Plan(values=(6,), tokens=2000, seed=15, name="Composed target")
SOURCES = (
    "tests/data/composed.py",
    "tests/data/composed_target.py",
    "tasks/export/images.py",
    "tasks/export/webdataset.py",
    "tasks/train/masks/__init__.py",
    "tasks/train/masks/derived.py",
    "tasks/train/masks/store.py",
)


def digest(plan: Plan) -> str:
    code = hashlib.sha256(b"".join((PROJECT_ROOT / p).read_bytes() for p in SOURCES))
    doc = {"code": code.hexdigest(), **asdict(plan)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def official_masks(plan: Plan) -> TraitMasks:
    """Each value's art alpha at the plan's size, back to front in the layer order."""
    art = load_art(plan.size, max(plan.values))
    masks = {
        (layer, VALUES[layer][i].name): np.asarray(image)[..., 3] > 0
        for layer in TRAIT_TYPES
        for i, image in enumerate(art[layer])
    }
    levels = [(layer,) for layer in TRAIT_TYPES if layer != BACKDROP]
    return by_type_order(masks, levels, "official")


def derived_masks(collection: ComposedCollection) -> tuple[TraitMasks, int]:
    """Masks derived from the train images, and the tokens they came from."""
    builder = MaskBuilder((collection.size, collection.size))
    train = [t for t in collection.tokens if t.split == "train"]
    for token in train:
        builder.add(decode(token.png, PNG_MIME), token.traits, str(token.token_id))
    return builder.masks().ordered(), len(train)


def prepare_target(plan: Plan = TARGET, cache: Path = CACHE) -> Prepared:
    """The prepared folder of a one-collection plan, built now unless done before."""
    if len(plan.values) != 1:
        raise ValueError("a target is one collection: give one entry in values")
    root = (cache / f"composed-{digest(plan)}").resolve()
    if (root / DONE).is_file():
        return Prepared(root, json.loads((root / DONE).read_text()))
    text = json.dumps(_build(plan, root), indent=1)
    (root / DONE).write_text(text + "\n")
    return Prepared(root, json.loads(text))


def _build(plan: Plan, root: Path) -> dict[str, Any]:
    from tests.data.local_s3 import seaweedfs  # preparation alone needs S3

    started = time.perf_counter()
    (collection,) = compose(plan)
    with seaweedfs() as settings:
        written = write_export([collection], str(root), settings)
    official = official_masks(plan)
    derived, tokens = derived_masks(collection)
    for source, masks in (("official", official), ("derived", derived)):
        folder = open_folder(str(root / "masks" / source), LOCAL)
        folder.put(paths.mask_file(collection.contract), encode_masks(masks))
    scores = [iou(mask, official[key]) for key, mask in derived.items() if key in official]
    return {
        "plan": asdict(plan),
        "root": str(root),
        "collection": collection.name,
        "contract": collection.contract,
        "splits": written["splits"],
        "masks": {
            "official": {"values": len(official), "order": official.order},
            "derived": {
                "values": len(derived),
                "order": derived.order,
                "tokens": tokens,
                "mean_iou": round(float(np.mean(scores)), 3) if scores else None,
            },
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
