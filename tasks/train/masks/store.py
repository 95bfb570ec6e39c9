"""Each collection's trait masks, built once before dynamic-masking training and kept in S3.

A collection whose layer art is configured (``Settings.trait_layers``; the demo
ships Moonbirds') gets the official masks; every other collection gets masks
derived from its own training images (``tasks.train.masks.MaskBuilder``). When both
exist the derived ones are built too and their IoU against the official ones is
reported: that is how good derivation is where nobody published layers.

Masks come with their drawing order (tasks.train.masks.TraitMasks): the layer
art's where it says it (Moonbirds), else the one inferred from the training
images (derived masks, and HashLips layer folders, which do not say it).

Stored per contract under ``masks/``: ``<contract>.npz`` (``keys``: N x 2 strings,
``masks``: N x H x W booleans, ``depth``: N integers, ``order``: how the depths
were found; no pickles) and ``<contract>.json`` (the report). Files written
before the order existed have no ``depth`` and read as ordered by area.
A collection where no value gets a mask (no visual traits, as Loot) gets the
report alone, with source "none", so it is not tried again on every run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np

from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.errors import ItemError
from tasks.core.folders import Folder, open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export import images
from tasks.export.items import ExportItem, export_items
from tasks.export.webdataset import Holdout
from tasks.train.masks import TraitMasks, by_area, by_type_order, iou
from tasks.train.masks.derived import MaskBuilder
from tasks.train.masks.official import official_masks

MAX_REASONS = 50  # values listed per report without a mask, with why


@dataclass(frozen=True)
class MaskReport:
    contract: str
    collection: str
    source: str  # "official", "derived", or "none" (no value has a mask)
    values: int  # values with a mask
    tokens: int  # tokens derivation counted (0 for official masks alone)
    skipped: int  # tokens derivation could not use
    size: tuple[int, int]  # (height, width) of the masks
    mean_iou: float | None = None  # derived against official, where both exist
    iou_values: int = 0
    no_mask: dict[str, str] = field(default_factory=dict)  # value -> why it has none
    order: str = "area"  # how the drawing order was found (tasks.train.masks.ORDERS)
    levels: list[list[str]] = field(default_factory=list)  # trait types back to front


def build_masks(
    items: Iterable[ExportItem],
    store: ObjectStore,
    folder: Folder,
    *,
    layers: Path | None = None,
    min_tokens: int = 3,
) -> MaskReport:
    """Masks of one collection from its items' stored images; written to ``folder``.

    Items must be of one contract and carry the traits of their caption. The
    native image size is the first image's; tokens of another size are skipped
    by the builder and counted.
    """
    builder: MaskBuilder | None = None
    contract = collection = ""
    for item in items:
        contract, collection = item.contract, item.collection
        if not item.traits:
            continue
        data = store.read_blob(item.image_key)
        if data is None:
            continue
        try:
            image = images.decode(data, item.image_mime)
        except ItemError:
            continue
        if builder is None:
            builder = MaskBuilder(image.size)
        builder.add(image, item.traits, item.token_id)
    if not contract:
        raise ValueError("no items to build masks from")
    derived = builder.masks(min_tokens=min_tokens) if builder is not None else None
    masks = derived.ordered() if derived is not None else by_area({})
    no_mask = {f"{t}: {v}": why for (t, v), why in (derived.reasons if derived else {}).items()}
    source, mean, compared = "derived", None, 0
    if layers is not None:
        official = official_masks(layers)
        scores = [iou(m, official[k]) for k, m in masks.items() if k in official]
        mean, compared = (float(np.mean(scores)), len(scores)) if scores else (None, 0)
        if official.order == "area" and derived is not None and derived.levels:
            official = by_type_order(official, derived.levels, "inferred")
        masks, source, no_mask = official, "official", {}
    if not masks:
        source = "none"
    size = next(iter(masks.values())).shape if masks else (0, 0)
    report = MaskReport(
        contract=contract,
        collection=collection,
        source=source,
        values=len(masks),
        tokens=derived.tokens if derived else 0,
        skipped=derived.skipped_count if derived else 0,
        size=(int(size[0]), int(size[1])),
        mean_iou=mean,
        iou_values=compared,
        no_mask=dict(list(no_mask.items())[:MAX_REASONS]),
        order=masks.order,
        levels=_levels(masks),
    )
    if masks:
        folder.put(paths.mask_file(contract), encode_masks(masks))
    folder.put(paths.mask_report(contract), json.dumps(asdict(report), indent=1).encode())
    return report


def encode_masks(masks: TraitMasks) -> bytes:
    """An .npz of the masks and their order: strings, booleans and integers, no pickle."""
    keys = sorted(masks)
    out = io.BytesIO()
    np.savez_compressed(
        out,
        keys=np.array(keys, dtype=str).reshape(len(keys), 2),
        masks=np.stack([masks[k] for k in keys]).astype(bool),
        depth=np.array([masks.depth[k] for k in keys], dtype=np.int64),
        order=np.array(masks.order),
    )
    return out.getvalue()


def decode_masks(data: bytes) -> TraitMasks:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        keys, stack = npz["keys"], npz["masks"]
        depth = npz["depth"] if "depth" in npz.files else None
        order = str(npz["order"]) if "order" in npz.files else "area"
    masks = {(str(t), str(v)): stack[i] for i, (t, v) in enumerate(keys)}
    if depth is None:
        return by_area(masks)
    return TraitMasks(masks, {k: int(d) for k, d in zip(masks, depth, strict=True)}, order)


def _levels(masks: TraitMasks) -> list[list[str]]:
    """The masks' trait types back to front, one list per depth."""
    by_depth: dict[int, set[str]] = {}
    for (trait_type, _), depth in masks.depth.items():
        by_depth.setdefault(depth, set()).add(trait_type)
    return [sorted(by_depth[d]) for d in sorted(by_depth)]


def load_masks(folder: Folder, contracts: Iterable[str]) -> dict[str, TraitMasks]:
    """The stored masks of each contract that has them (others train unmasked)."""
    found: dict[str, TraitMasks] = {}
    for contract in contracts:
        if folder.exists(paths.mask_file(contract)):
            found[contract] = decode_masks(folder.get(paths.mask_file(contract)))
    return found


def masks_folder(settings: Settings) -> Folder:
    """``masks/`` of the configured bucket."""
    return open_folder(paths.url(settings, paths.MASKS), settings)


def mask_targets(
    settings: Settings, holdout: Holdout | None, *, rebuild: bool = False
) -> list[list[ExportItem]]:
    """The train-split items of each collection that has no masks yet, or masks stored
    before they had a drawing order (all with ``rebuild``), less the tokens the
    export held out: derived masks see no held-out image."""
    folder = masks_folder(settings)
    con = connect(settings)
    try:
        items = export_items(
            con,
            paths.tables_root(settings),
            splits=["train"],
            holdout=holdout.per_collection if holdout else 0,
            seed=holdout.seed if holdout else 0,
        )
        return [
            group
            for group in _by_contract(items)
            if rebuild or not _ordered(folder, group[0].contract)
        ]
    finally:
        con.close()


def build_collection_masks(
    items: list[ExportItem], settings: Settings, layers: str | None
) -> MaskReport:
    """``build_masks`` of one collection into the bucket's ``masks/``."""
    art = Path(layers) if layers else None
    return build_masks(items, ObjectStore(settings), masks_folder(settings), layers=art)


def load_all_masks(settings: Settings) -> dict[str, TraitMasks]:
    """Every stored collection's masks, by contract."""
    folder = masks_folder(settings)
    contracts = [p.removesuffix(".npz") for p in folder.walk() if p.endswith(".npz")]
    return load_masks(folder, contracts)


def _ordered(folder: Folder, contract: str) -> bool:
    """Whether the contract's masks were built, with their drawing order."""
    if not folder.exists(paths.mask_report(contract)):
        return False
    return "order" in json.loads(folder.get(paths.mask_report(contract)))


def _by_contract(items: Iterator[ExportItem]) -> Iterator[list[ExportItem]]:
    """Consecutive items of one contract (export_items orders by contract when unshuffled)."""
    for _, group in groupby(items, key=lambda i: i.contract):
        yield list(group)
