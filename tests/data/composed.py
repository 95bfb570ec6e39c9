"""Collections of known retrieval difficulty, composed from the HashLips sample layers.

The CVI (docs/method.md section 6) is only worth shipping if it ranks how hard a
collection is to search, so the validation needs collections whose difficulty
order is known before any model sees them. Here every collection has the same
number of tokens and the same six trait types (Background, Eyeball, Eye color,
Iris, Bottom lid, Top lid); collection ``k`` takes the first ``k`` values of each
type from ``VALUES`` and draws its tokens' trait combinations uniformly, without
replacement, from the ``k**6`` possible ones. No combination repeats within a
collection: retrieval counts an exact duplicate as a hit, which would make a
collection easier. With few values a token has many near twins (tokens that
differ in one trait: about ``6 * (k - 1) * tokens / k**6`` of them), so top-1
retrieval is hard; with many values near twins are rare and it is easy.

The sample layers hold only a few values per layer, so more are made by
recolouring a layer's art: a solid fill (Background, Iris), a tint of the art's
shading (the white Eyeball), or a hue rotation of coloured art (Eye color, lids).
Each made value has a readable name ("Navy", "Red Low"), since captions name the
values. Shine is drawn on every token and is no trait; Goo lies outside the
engine's layer order and is left out.

Images are composed back to front in ``LAYER_ORDER`` on an opaque canvas at the
plan's size, from layer art scaled with premultiplied alpha, and stored as PNG.
The lids of the sample art cover the whole canvas but the eye, which would hide
the background; so every layer but the background is drawn at ``INSET`` of the
size, centred, and the background shows as a frame.
``write_export`` puts them into S3 and writes ``<root>/train`` and ``<root>/test``
WebDataset shards with the export's own writer, so they are exactly what
nft1000/export writes.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export.images import PNG_MIME, encode
from tasks.export.items import ExportItem, safe_names
from tasks.export.webdataset import ShardOptions, order_key, plan_shards, write_index, write_shard
from tasks.train.masks.draw import caption
from tests.data.synthetic import LAYER_ORDER, LAYERS_ARCHIVE

SPLITS = ("train", "test")
CONSTANT = ("Shine",)  # drawn on every token; never a trait
BACKDROP = "Background"  # drawn at full size; every other layer at INSET of it
INSET = 0.75  # the background frame is then 44% of the image
RGB = tuple[int, int, int]


class Recolour(NamedTuple):
    """How a made value's art follows from its base art."""

    kind: Literal["fill", "tint", "hue"]
    colour: RGB = (0, 0, 0)  # fill and tint
    hue: float = 0.0  # hue: the art's dominant hue is turned to this one, in degrees


class Value(NamedTuple):
    name: str
    base: str  # the value of the sample layer whose art it starts from
    recolour: Recolour | None = None


def _fill(name: str, base: str, colour: RGB) -> Value:
    return Value(name, base, Recolour("fill", colour))


def _tint(name: str, base: str, colour: RGB) -> Value:
    return Value(name, base, Recolour("tint", colour))


def _hue(name: str, base: str, degrees: float) -> Value:
    return Value(name, base, Recolour("hue", hue=degrees))


def _coloured(base_names: Sequence[str], colours: Sequence[tuple[str, Recolour]]) -> list[Value]:
    """The base values, then each colour applied to every base in turn ("Red Low", ...)."""
    made = [Value(f"{colour} {base}", base, how) for colour, how in colours for base in base_names]
    return [Value(base, base) for base in base_names] + made


# Per trait type (a layer folder), its values in the order collections take them:
# collection k uses the first k. Colours are picked so the values of a type look
# apart at 64 pixels, and so an iris is never painted in its eye colour's tones.
VALUES: dict[str, tuple[Value, ...]] = {
    "Background": (
        Value("Black", "Black"),
        _fill("Navy", "Black", (28, 38, 110)),
        _fill("Maroon", "Black", (110, 28, 40)),
        _fill("Forest", "Black", (30, 95, 50)),
        _fill("Teal", "Black", (0, 120, 125)),
        _fill("Plum", "Black", (95, 45, 110)),
        _fill("Olive", "Black", (120, 115, 30)),
        _fill("Grey", "Black", (120, 120, 120)),
        _fill("Brown", "Black", (115, 70, 35)),
        _fill("Sand", "Black", (200, 180, 130)),
        _fill("Sky", "Black", (120, 180, 230)),
        _fill("Rose", "Black", (220, 130, 150)),
    ),
    "Eyeball": (
        Value("White", "White"),
        Value("Red", "Red"),
        _tint("Blue", "White", (110, 160, 255)),
        _tint("Green", "White", (120, 220, 120)),
        _tint("Yellow", "White", (240, 220, 80)),
        _tint("Orange", "White", (255, 150, 70)),
        _tint("Purple", "White", (180, 120, 240)),
        _tint("Grey", "White", (130, 130, 130)),
        _tint("Teal", "White", (80, 200, 190)),
        _tint("Brown", "White", (170, 110, 70)),
        _tint("Pink", "White", (255, 140, 190)),
        _tint("Navy", "White", (70, 80, 160)),
    ),
    "Eye color": (
        Value("Cyan", "Cyan"),
        Value("Green", "Green"),
        Value("Pink", "Pink"),
        Value("Purple", "Purple"),
        Value("Red", "Red"),
        Value("Yellow", "Yellow"),
        _hue("Orange", "Red", 30),
        _hue("Lime", "Green", 95),
        _hue("Azure", "Cyan", 210),
        _hue("Rose", "Pink", 335),
        _tint("Brown", "Yellow", (150, 90, 40)),
        _tint("Silver", "Cyan", (200, 200, 205)),
    ),
    "Iris": tuple(
        _coloured(
            ("Small", "Medium", "Large"),
            [
                ("White", Recolour("fill", (235, 235, 235))),
                ("Grey", Recolour("fill", (125, 125, 125))),
                ("Maroon", Recolour("fill", (100, 20, 30))),
            ],
        )
    ),
    **{
        lid: tuple(
            _coloured(
                ("Low", "Middle", "High"),
                [
                    ("Red", Recolour("hue", hue=0)),
                    ("Green", Recolour("hue", hue=130)),
                    ("Blue", Recolour("hue", hue=215)),
                ],
            )
        )
        for lid in ("Bottom lid", "Top lid")
    },
}
TRAIT_TYPES = tuple(layer for layer in LAYER_ORDER if layer in VALUES)
MAX_VALUES = min(len(values) for values in VALUES.values())


@dataclass(frozen=True)
class Plan:
    """Which collections to compose: one per entry of ``values`` (values per trait type)."""

    values: tuple[int, ...] = (3, 4, 5, 6, 8, 10)
    tokens: int = 400  # per collection: the same in all, so only the values set difficulty
    size: int = 64  # pixels a side (the tiny CLIP's input)
    test_share: float = 0.2
    seed: int = 0
    name: str = "Composed"  # collections are "<name> k=03" and so on

    def __post_init__(self) -> None:
        if not self.values or len(set(self.values)) != len(self.values):
            raise ValueError(f"values must be distinct and not empty, got {self.values}")
        if not all(2 <= k <= MAX_VALUES for k in self.values):
            raise ValueError(f"values per trait type must be in [2, {MAX_VALUES}]: {self.values}")
        fewest = min(self.values) ** len(TRAIT_TYPES)
        if not 1 <= self.tokens <= fewest:
            raise ValueError(f"tokens must be in [1, {fewest}] for unique combinations")
        if self.size < 8 or not 0 <= self.test_share < 1:
            raise ValueError("size >= 8 and test_share in [0, 1) please")


@dataclass(frozen=True)
class ComposedToken:
    token_id: int
    png: bytes
    traits: tuple[tuple[str, str], ...]  # (trait_type, value) in layer order
    split: str


@dataclass(frozen=True)
class ComposedCollection:
    name: str
    contract: str
    folder: str  # export folder name (safe_names)
    values_per_type: int  # k
    size: int
    tokens: tuple[ComposedToken, ...]


Art = dict[str, list[Image.Image]]  # layer -> art per value (VALUES order); CONSTANT: one


def compose(plan: Plan, archive: Path = LAYERS_ARCHIVE) -> list[ComposedCollection]:
    """The plan's collections, in its order; the same plan gives the same bytes."""
    art = load_art(plan.size, max(plan.values), archive)
    names = {k: f"{plan.name} k={k:02d}" for k in plan.values}
    pairs = {k: (name, _contract(name)) for k, name in names.items()}
    folders = safe_names(list(pairs.values()))
    return [
        ComposedCollection(
            name=pairs[k][0],
            contract=pairs[k][1],
            folder=folders[pairs[k]],
            values_per_type=k,
            size=plan.size,
            tokens=_tokens(plan, k, art),
        )
        for k in plan.values
    ]


def write_export(
    collections: Sequence[ComposedCollection],
    root_url: str,
    settings: Settings,
    per_shard: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Store the images as blobs and write ``<root_url>/<split>/`` shards as the export does.

    Items are ordered by ``order_key(seed, ...)`` within each split, which mixes the
    collections across shards as nft1000/export does. Returns what was written.
    """
    if not collections:
        raise ValueError("no collections to export")
    sizes = {c.size for c in collections}
    if len(sizes) != 1:
        raise ValueError(f"collections of one export share a size, got {sorted(sizes)}")
    store = ObjectStore(settings)
    tokens = [(c, t) for c in collections for t in c.tokens]
    with ThreadPoolExecutor(max(1, settings.concurrency)) as pool:
        keys = list(pool.map(lambda pair: store.put_blob(pair[1].png, PNG_MIME).key, tokens))
    items: dict[str, list[ExportItem]] = {split: [] for split in SPLITS}
    for (collection, token), key in zip(tokens, keys, strict=True):
        items[token.split].append(_item(collection, token, key))
    for split in items.values():
        split.sort(key=lambda i: order_key(str(seed), i.contract, i.token_id))
    options = ShardOptions(shortest_side=sizes.pop())
    results = [
        write_shard(plan, root_url, settings, options)
        for name, split in items.items()
        for plan in plan_shards(name, split, per_shard)
    ]
    index = write_index(root_url, settings, results, options)
    return {
        "root": root_url,
        "collections": [_summary(c) for c in collections],
        "splits": {
            name: {k: split[k] for k in ("samples", "failed")} | {"shards": len(split["shards"])}
            for name, split in index["splits"].items()
        },
    }


def neighbours(tokens: Sequence[ComposedToken], differing: int = 1) -> float:
    """Mean number of other tokens that differ from a token in exactly ``differing`` traits.

    The known difficulty: tokens one or two traits away are what top-1 retrieval
    confuses a token with. Pairs are compared in row blocks, so memory stays small.
    """
    if not tokens:
        return 0.0
    columns = zip(*(tuple(value for _, value in t.traits) for t in tokens), strict=True)
    codes = np.stack([np.unique(c, return_inverse=True)[1] for c in columns], axis=1)
    pairs = 0
    for start in range(0, len(codes), 256):
        block = codes[start : start + 256]
        distance = (block[:, None, :] != codes[None, :, :]).sum(axis=2)
        pairs += int((distance == differing).sum())
    return pairs / len(tokens)


def _item(collection: ComposedCollection, token: ComposedToken, image_key: str) -> ExportItem:
    return ExportItem(
        collection=collection.name,
        contract=collection.contract,
        token_id=str(token.token_id),
        split=token.split,
        in_mini=False,
        metadata_key="",
        image_key=image_key,
        image_mime=PNG_MIME,
        caption=caption(collection.name, token.traits),
        prompt="",
        folder=collection.folder,
        caption_method="visual_template",
        traits=token.traits,
    )


def _summary(collection: ComposedCollection) -> dict[str, Any]:
    distinct = {
        trait_type: len({dict(t.traits)[trait_type] for t in collection.tokens})
        for trait_type in TRAIT_TYPES
    }
    by_split = {split: [t for t in collection.tokens if t.split == split] for split in SPLITS}
    return {
        "name": collection.name,
        "contract": collection.contract,
        "folder": collection.folder,
        "values_per_type": collection.values_per_type,
        "combinations": collection.values_per_type ** len(TRAIT_TYPES),
        "distinct_values": distinct,
        "tokens": {split: len(tokens) for split, tokens in by_split.items()},
        # Mean tokens one and two traits away, in the collection and within each split.
        "neighbours": {
            group: {d: round(neighbours(tokens, d), 3) for d in (1, 2)}
            for group, tokens in {"all": list(collection.tokens), **by_split}.items()
        },
    }


def _contract(name: str) -> str:
    """A valid-looking address that no chain holds: the name's digest."""
    return "0x" + hashlib.sha256(name.encode()).hexdigest()[:40]


def _tokens(plan: Plan, k: int, art: Art) -> tuple[ComposedToken, ...]:
    """Seeded by (seed, k), so a collection is the same whatever else the plan holds."""
    rng = np.random.default_rng([plan.seed, k])
    drawn = rng.choice(k ** len(TRAIT_TYPES), size=plan.tokens, replace=False)
    combos = np.stack(np.unravel_index(drawn, (k,) * len(TRAIT_TYPES)), axis=1)
    tests = set(
        rng.choice(plan.tokens, round(plan.tokens * plan.test_share), replace=False).tolist()
    )
    tokens = []
    for token_id, combo in enumerate(combos.tolist()):
        picks = dict(zip(TRAIT_TYPES, combo, strict=True))
        traits = tuple((t, VALUES[t][i].name) for t, i in picks.items())
        png = encode(render(art, picks).convert("RGB"), "png")
        split = "test" if token_id in tests else "train"
        tokens.append(ComposedToken(token_id, png, traits, split))
    return tuple(tokens)


def render(art: Art, picks: Mapping[str, int]) -> Image.Image:
    """One token's image: the picked value of each trait type, back to front."""
    size = next(iter(art.values()))[0].size
    canvas = Image.new("RGBA", size, (0, 0, 0, 255))
    for layer in LAYER_ORDER:
        if layer in picks:
            canvas = Image.alpha_composite(canvas, art[layer][picks[layer]])
        elif layer in art and layer in CONSTANT:
            canvas = Image.alpha_composite(canvas, art[layer][0])
    return canvas


def load_art(size: int, values: int, archive: Path = LAYERS_ARCHIVE, inset: float = INSET) -> Art:
    """The art of the first ``values`` values of each trait type, and of CONSTANT layers;
    every layer but the backdrop at ``inset`` of the size (tests.data.corpus varies it)."""
    bases = _read_layers(archive)
    inner = round(size * inset)
    art: Art = {layer: [_scaled(bases[(layer, "Shapes")], size, inner)] for layer in CONSTANT}
    for layer, table in VALUES.items():
        side = size if layer == BACKDROP else inner
        art[layer] = [
            _scaled(_recoloured(bases[(layer, v.base)], v.recolour), size, side)
            for v in table[:values]
        ]
    return art


def _read_layers(archive: Path) -> dict[tuple[str, str], npt.NDArray[np.uint8]]:
    """Full-size RGBA art of every sample layer file, keyed by (layer, value)."""
    found: dict[tuple[str, str], npt.NDArray[np.uint8]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not (member.isfile() and len(parts) >= 3 and parts[-3] == "layers"):
                continue
            if parts[-2] not in VALUES and parts[-2] not in CONSTANT:
                continue
            data = tar.extractfile(member)
            if data is not None:
                value = parts[-1].removesuffix(".png").rsplit("#", 1)[0]
                with Image.open(io.BytesIO(data.read()), formats=("PNG",)) as im:
                    found[(parts[-2], value)] = np.asarray(im.convert("RGBA"))
    return found


def _recoloured(rgba: npt.NDArray[np.uint8], how: Recolour | None) -> npt.NDArray[np.uint8]:
    if how is None:
        return rgba
    out = rgba.copy()
    rgb = rgba[..., :3].astype(np.float64)
    shown = rgba[..., 3] > 0
    if how.kind == "fill":
        out[..., :3] = how.colour
    elif how.kind == "tint":
        # The art's shading carried onto the colour: its mean shade becomes the colour.
        lum = rgb @ np.array([0.299, 0.587, 0.114])
        scale = lum / max(float(lum[shown].mean()), 1.0)
        out[..., :3] = np.clip(scale[..., None] * np.array(how.colour), 0, 255).round()
    else:
        hsv = np.asarray(Image.fromarray(rgba[..., :3]).convert("HSV")).copy()
        hue = hsv[..., 0].astype(np.float64) * 2 * np.pi / 256
        weight = shown * hsv[..., 1].astype(np.float64)
        dominant = np.arctan2((weight * np.sin(hue)).sum(), (weight * np.cos(hue)).sum())
        turn = round((np.deg2rad(how.hue) - dominant) * 256 / (2 * np.pi))
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + turn) % 256
        out[..., :3] = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    return out


def _scaled(rgba: npt.NDArray[np.uint8], size: int, side: int) -> Image.Image:
    """The art scaled to ``side`` pixels, centred on a clear ``size`` canvas.

    Scaled with premultiplied alpha, so edges get no dark fringe.
    """
    image = Image.fromarray(rgba).convert("RGBa").resize((side, side), Image.Resampling.BOX)
    canvas = Image.new("RGBA", (size, size))
    canvas.paste(image.convert("RGBA"), ((size - side) // 2,) * 2)
    return canvas
