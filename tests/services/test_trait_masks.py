"""Collection mask sets built from real Moonbirds blobs in the real S3, official and derived."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from infra.stack import MOONBIRDS_LAYERS
from tasks.core.folders import open_folder
from tasks.core.paths import mask_report
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.train.masks.official import official_masks
from tasks.train.masks.store import build_masks, load_masks
from tests.support.train_data import MOONBIRDS, moonbird_items

LAYERS = MOONBIRDS_LAYERS
TOKENS = 1500


def test_official_masks_are_stored_with_how_well_derived_ones_match(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    items = moonbird_items(store, range(TOKENS), "train")
    folder = open_folder(str(tmp_path / "masks"), settings)
    report = build_masks(items, store, folder, layers=LAYERS)
    official = official_masks(LAYERS)
    assert report.source == "official" and report.values == len(official)
    assert report.tokens == TOKENS and report.size == (42, 42)
    # Derived from 2,000 of the 10,000 tokens: below the full collection's figure,
    # far above chance (masks cover a few percent to all of the canvas).
    assert report.mean_iou is not None and 0.6 < report.mean_iou <= 1.0
    assert report.iou_values >= 80
    stored = load_masks(folder, [MOONBIRDS[1], "0xmissing"])
    assert list(stored) == [MOONBIRDS[1]]
    assert stored[MOONBIRDS[1]].keys() == official.keys()
    assert all(np.array_equal(stored[MOONBIRDS[1]][k], m) for k, m in official.items())
    # With the layer art's drawing order: a body under its eyes, a hat over both.
    assert stored[MOONBIRDS[1]].order == "official"
    assert dict(stored[MOONBIRDS[1]].depth) == dict(official.depth)
    doc = json.loads(folder.get(mask_report(MOONBIRDS[1])))
    assert doc["source"] == "official" and doc["order"] == "official"
    assert doc["levels"][:2] == [["Background"], ["Body", "Feathers"]]
    assert doc["levels"][-1] == ["Outerwear"]


def test_without_layers_the_masks_are_derived_and_say_which_values_have_none(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    items = moonbird_items(store, range(600), "train")
    folder = open_folder(str(tmp_path / "masks"), settings)
    report = build_masks(items, store, folder)
    assert report.source == "derived" and report.mean_iou is None
    masks = load_masks(folder, [MOONBIRDS[1]])[MOONBIRDS[1]]
    assert len(masks) == report.values > 40
    # The order comes from the images: backdrop, then the body, then what lies on it.
    assert masks.order == report.order == "inferred"
    assert report.levels[:2] == [["Background"], ["Body", "Feathers"]]
    depth = {t: d for (t, _), d in masks.depth.items()}
    assert depth["Background"] < depth["Body"] == depth["Feathers"] < depth["Eyes"]
    assert report.no_mask  # rare values (fewer than 3 tokens) are listed with why
    assert all("tokens" in why or "differs" in why for why in report.no_mask.values())
    every_value = {t for item in items for t in item.traits}
    assert set(masks) < every_value


def test_a_collection_without_visual_traits_gets_a_report_and_no_masks(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    items = [replace(i, traits=()) for i in moonbird_items(store, range(20), "train")]
    folder = open_folder(str(tmp_path / "masks"), settings)
    report = build_masks(items, store, folder)
    assert (report.source, report.values, report.tokens) == ("none", 0, 0)
    assert folder.exists(mask_report(MOONBIRDS[1]))
    assert load_masks(folder, [MOONBIRDS[1]]) == {}
