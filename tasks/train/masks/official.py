"""Official masks from a collection's layer art: a layer's alpha > 0, united over every
layer file that draws the value (Moonbirds' layer folders, or HashLips-style
``<trait>/<value>#<weight>.png`` files), with the order the layers are drawn in
where the art says it (Moonbirds' folders do; HashLips folders do not, their
order lives in the engine's config, so theirs come ordered by area only and
tasks.train.masks.store takes the order from the token images)."""

from __future__ import annotations

import csv
import io
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.train.masks import Key, Mask, TraitMasks, by_area, by_type_order

# Moonbirds layer folders back to front. Compositing a token's layers in this
# order over its background colour reproduces 9,964 of the 10,000 token images
# exactly (the rest are 1/1 legendaries and the renamed skeleton eyes).
MOONBIRDS_ORDER = ("body", "eyes", "beak", "eyewear", "headwear", "outerwear")
MOONBIRDS_CSV = "moonbirds.csv"
_HASHLIPS_FILE = re.compile(r"(?:^|/)(?P<trait>[^/]+)/(?P<value>[^/#]+)#\d+\.png$")


@dataclass(frozen=True)
class LayerArt:
    """Moonbirds layer art: the layers' alpha and which layers draw each token.

    ``tokens[id]`` lists ``(key, layer)`` back to front; ``key`` is the metadata
    trait the layer draws, or None for legendary art the metadata leaves out. A
    layer may draw two traits (Body and Feathers share one body layer).
    ``backdrop`` traits (Background) have no layer file: they fill the canvas.
    """

    size: tuple[int, int]  # (height, width)
    alpha: dict[str, Mask]
    tokens: dict[int, tuple[tuple[Key | None, str], ...]]
    backdrop: dict[int, Key]


def official_masks(source: Path | str) -> TraitMasks:
    """Masks from layer art: a folder or .tar.gz of Moonbirds or HashLips layers.

    Moonbirds: the union of the alpha of every layer that draws the value in some
    token (``moonbirds_art``); Background, which has no layer, is the whole canvas.
    HashLips (``<Trait>/<Value>#<weight>.png``): each file's alpha, at the file's
    own size, ordered by area.
    """
    files = _read_files(source)
    if any(_name(path) == MOONBIRDS_CSV for path in files):
        levels = [_folder_types(folder) for folder in MOONBIRDS_ORDER]
        return by_type_order(_union_masks(moonbirds_art(files)), levels, "official")
    return by_area(_hashlips_masks(files))


def _folder_types(folder: str) -> tuple[str, ...]:
    """The metadata trait types a Moonbirds layer folder draws (the body layer draws two)."""
    return ("Body", "Feathers") if folder == "body" else (folder.title(),)


def moonbirds_art(source: Path | str | Mapping[str, bytes]) -> LayerArt:
    """Read ``moonbirds.csv`` and the layer PNGs under ``attributes/``.

    The csv writes Beak and Eyes as ``<shape> - <colour>`` ("Small - Orange",
    "Angry - Yellow"); the metadata keeps only the shape ("Small", "Angry"), and
    leaves out the legendary-only beaks and eyes written without " - " ("Small
    (Cosmic)", "Glitch 1"). Body and Feathers are separate traits drawn by one
    layer ``<body>-<feathers>``. File names are the values in lower case with
    " - " as "-", spaces as "_" and apostrophes dropped ("Aviator's Cap" ->
    ``aviators_cap``). Folders ``*_w_gradients`` (bodies pre-composited on the
    legendary backgrounds) and ``gradients`` (those backgrounds) are not layers.
    """
    files = source if isinstance(source, Mapping) else _read_files(source)
    csv_path = next((path for path in files if _name(path) == MOONBIRDS_CSV), None)
    if csv_path is None:
        raise ValueError(f"no {MOONBIRDS_CSV} in the layer art")
    root = csv_path[: -len(MOONBIRDS_CSV)] + "attributes/"
    index: dict[tuple[str, str], str] = {}
    for path in sorted(files):
        if not (path.startswith(root) and path.endswith(".png")):
            continue
        folder, _, name = path[len(root) :].rpartition("/")
        if folder.endswith("_w_gradients") or folder == "gradients" or "/" in folder:
            continue
        index.setdefault((folder.split("-")[0], name[: -len(".png")]), path)

    alpha: dict[str, Mask] = {}
    tokens: dict[int, tuple[tuple[Key | None, str], ...]] = {}
    backdrop: dict[int, Key] = {}
    rows = csv.DictReader(io.StringIO(files[csv_path].decode("utf-8")), skipinitialspace=True)
    for row in rows:
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        token = int(cells["id"])
        drawn: list[tuple[Key | None, str]] = []
        for folder in MOONBIRDS_ORDER:
            for key, stem in _moonbirds_layers(folder, cells):
                layer = index.get((folder, stem))
                if layer is None:
                    raise ValueError(f"token {token}: no layer {folder}/{stem}.png")
                if layer not in alpha:
                    alpha[layer] = _alpha(files[layer])
                drawn.append((key, layer))
        tokens[token] = tuple(drawn)
        backdrop[token] = ("Background", cells["background"])
    shapes = {mask.shape for mask in alpha.values()}
    if len(shapes) != 1:
        raise ValueError(f"layers differ in size: {sorted(shapes)}")
    (size,) = shapes
    return LayerArt((size[0], size[1]), alpha, tokens, backdrop)


def _moonbirds_layers(folder: str, cells: Mapping[str, str]) -> list[tuple[Key | None, str]]:
    """The (metadata key, layer stem) pairs a csv row draws from one layer folder."""
    if folder == "body":
        stem = f"{_slug(cells['body'])}-{_slug(cells['feathers'])}"
        return [(("Body", cells["body"]), stem), (("Feathers", cells["feathers"]), stem)]
    value = cells[folder]
    if not value:
        return []
    if folder in ("beak", "eyes"):
        shape, sep, _ = value.partition(" - ")
        return [((folder.title(), shape) if sep else None, _slug(value))]
    return [((folder.title(), value), _slug(value))]


def _slug(value: str) -> str:
    return value.lower().replace("'", "").replace(" - ", "-").replace(" ", "_")


def _union_masks(art: LayerArt) -> dict[Key, Mask]:
    masks: dict[Key, Mask] = {}
    for drawn in art.tokens.values():
        for key, path in drawn:
            if key is not None:
                masks[key] = masks.get(key, np.zeros(art.size, bool)) | art.alpha[path]
    for key in art.backdrop.values():
        masks[key] = np.ones(art.size, bool)
    return masks


def _hashlips_masks(files: Mapping[str, bytes]) -> dict[Key, Mask]:
    masks: dict[Key, Mask] = {}
    for path, data in files.items():
        match = _HASHLIPS_FILE.search(path)
        if match:
            masks[(match["trait"], match["value"])] = _alpha(data)
    if not masks:
        raise ValueError("no moonbirds.csv and no HashLips <Trait>/<Value>#<weight>.png")
    return masks


def _read_files(source: Path | str) -> dict[str, bytes]:
    """PNG and csv files of a layer-art folder or .tar.gz, by path relative to it."""
    source = Path(source)
    wanted = (".png", ".csv")
    if source.is_dir():
        return {
            path.relative_to(source).as_posix(): path.read_bytes()
            for path in sorted(source.rglob("*"))
            if path.is_file() and path.suffix in wanted
        }
    files: dict[str, bytes] = {}
    with tarfile.open(source, "r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(wanted):
                extracted = archive.extractfile(member)
                if extracted is not None:
                    files[member.name] = extracted.read()
    return files


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _alpha(data: bytes) -> Mask:
    with Image.open(io.BytesIO(data), formats=("PNG",)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    return np.asarray(rgba[..., 3] > 0)
