"""Synthetic token metadata at any scale, for benchmarks of the tables.

The real data sets hold 18,000 tokens; the tables must be measured at a million
and more. The values come from the HashLips sample layers: each layer folder is
a trait type, each file ``<Value>#<weight>.png`` a value drawn with that weight
(only the archive's file names are read; no image is made). Collections differ
in size, token id start and metadata shape, as real ones do:

- ``moonbirds``: ``{"name": "#<id>", "image", "external_url", "attributes"}``
  with absent traits omitted.
- ``opensea``: ``"<Collection> #<id>"``, a long description, attributes with
  numeric display types (number, boost_number, boost_percentage, date), ints and
  booleans as values, a repeated trait type, a sentence as a value, none-like
  values (``"None"``, ``"none"``, ``""``, null), and unrevealed tokens with no
  attributes.
- ``traits``: a ``traits`` object mapping trait type to value, with an int and a
  boolean among them.
- ``features``: a ``features`` list of plain values (no trait types).
- ``loot``: only name and description.

Everything is drawn from numpy generators seeded by (seed, collection, block),
so a block's bytes are the same whichever order or process makes them. Blocks
follow the manifest blocks (ids ``[k*BLOCK, (k+1)*BLOCK)``), as the tokens
table's files do.

    python -m tests.data.synthetic --tokens 1000000 [--seed 0] [--tokens-table DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.ingest.blocks import BLOCK
from tasks.ingest.manifest import ManifestRow
from tasks.tables.tokens import token_record, write_parquet

# The HashLips sample layers (MIT), kept with the test data that tests and benches share.
LAYERS_ARCHIVE = Path(__file__).resolve().parent / "hashlips_layers.tar.gz"
# The HashLips engine's layersOrder (back to front); layers not named here follow, sorted.
LAYER_ORDER = ("Background", "Eyeball", "Eye color", "Iris", "Shine", "Bottom lid", "Top lid")

Shape = Literal["moonbirds", "opensea", "traits", "features", "loot"]

# name, shape, share of the tokens, first token id, description
_PLAN: tuple[tuple[str, Shape, float, int, str], ...] = (
    ("Watchful Goo", "moonbirds", 0.22, 0, ""),
    ("Lidded Society", "opensea", 0.17, 1, "long"),
    ("Iris Club", "moonbirds", 0.13, 1, ""),
    ("Eyeball Bags", "loot", 0.10, 1, "short"),
    ("Shiny Stares", "traits", 0.09, 0, ""),
    ("Blink Genesis", "opensea", 0.08, 0, "long"),
    ("Pink Iris Editions", "features", 0.07, 1, "short"),
    ("Red Eye Lore", "loot", 0.06, 1, "long"),
    ("Low Lids", "moonbirds", 0.05, 0, ""),
    ("Tiny Peepers", "opensea", 0.03, 1, "long"),
)
_SHORT = (
    "{name} are eyes drawn from a handful of layers and stored for anyone to use. "
    "Stats and lore are left out on purpose."
)
# Long enough that a caption made of name and description runs past CLIP's 77 tokens.
_LONG = (
    "{name} is a collection of hand-layered eyes watching over the chain. Every eye is "
    "assembled from a background, an eyeball, an iris, a shine and two lids, each drawn "
    "with its own rarity, so no two holders see the world quite the same way. Holders "
    "get early access to future drops, a vote on the community treasury, entry to "
    "members-only events in the physical world, and a commercial licence for the art "
    "they own. The project began as a weekend sketch and grew into a community of "
    "collectors, artists and builders who believe that small, carefully made things "
    "can outlast the market that first priced them. Look closely: some eyes blink."
)
# Moonbirds-like tokens leave these layers out with these probabilities.
_ABSENT = {"Shine": 0.3, "Goo": 0.6, "Eye color": 0.1}
NONE_LIKE: tuple[str | None, ...] = ("None", "none", "", None)
_NONE_LIKE_RATE = 0.03  # per layer value in opensea tokens
_REPEAT_RATE = 0.1  # opensea tokens with a second "Eye color" (different eyes)
_UNREVEALED_RATE = 0.02  # opensea tokens with an empty attributes list
# A sentence as a trait value (some collections do this); it pushes the template
# caption past 77 tokens, so the traits after it are cut.
_LORE_RATE = 0.25
_LORE = (
    "Found blinking at the bottom of a well, it has not closed its lids since.",
    "Once watched a whole bear market go by without looking away even once.",
    "Sees only in shades of green, and insists that this is the correct way.",
    "Was the first eye to be minted, or so it tells everyone who will listen.",
)
_DAY = 86_400
_EPOCH = 1_640_995_200  # 2022-01-01, the first birthday


@dataclass(frozen=True)
class Layer:
    """A trait type and its values with their rarity weights."""

    trait_type: str
    values: tuple[str, ...]
    weights: tuple[int, ...]


@dataclass(frozen=True)
class SyntheticCollection:
    """One collection: ids ``first_id .. first_id + count - 1`` of one metadata shape."""

    index: int
    name: str
    contract: str  # lowercase 0x address
    shape: Shape
    first_id: int
    count: int
    description: str | None
    layers: tuple[Layer, ...]
    seed: int

    @property
    def end_id(self) -> int:
        return self.first_id + self.count

    @property
    def block_numbers(self) -> range:
        """The manifest blocks the ids fall in (block k holds ids [k*BLOCK, (k+1)*BLOCK))."""
        return range(self.first_id // BLOCK, (self.end_id - 1) // BLOCK + 1)

    def blocks(self) -> Iterator[Block]:
        """The collection's tokens, one manifest block of ids at a time."""
        for number in self.block_numbers:
            yield self.block(number)

    def block(self, number: int) -> Block:
        """The collection's tokens in manifest block ``number``, drawn from that block's seed.

        The same bytes whichever blocks are made before it, or in which process.
        """
        first = max(self.first_id, number * BLOCK)
        end = min(self.end_id, (number + 1) * BLOCK)
        if first >= end:
            raise ValueError(f"{self.name} has no ids in block {number}")
        ids = list(range(first, end))
        rng = np.random.default_rng([self.seed, self.index, number])
        tokens = _MAKERS[self.shape](self, ids, rng)
        return Block(self.name, self.contract, ids, [json.dumps(t).encode() for t in tokens])


@dataclass(frozen=True)
class Block:
    """Up to BLOCK tokens of one collection: ids and their metadata JSON, in id order."""

    collection: str
    contract: str
    token_ids: list[int]
    metadata: list[bytes]


@cache
def load_layers(archive: Path = LAYERS_ARCHIVE) -> tuple[Layer, ...]:
    """The archive's layers in HashLips order, values sorted by name (stable draws)."""
    found: dict[str, dict[str, int]] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            path = Path(member.name)
            if member.isfile() and path.parent.parent.name == "layers" and "#" in path.stem:
                value, weight = path.stem.rsplit("#", 1)
                found.setdefault(path.parent.name, {})[value] = int(weight)
    order = [t for t in LAYER_ORDER if t in found] + sorted(set(found) - set(LAYER_ORDER))
    return tuple(
        Layer(t, tuple(sorted(found[t])), tuple(found[t][v] for v in sorted(found[t])))
        for t in order
    )


def collections(
    n_tokens: int, seed: int = 0, archive: Path = LAYERS_ARCHIVE
) -> list[SyntheticCollection]:
    """Ten collections of different shapes and sizes, n_tokens in all (empty ones left out)."""
    if n_tokens < 0:
        raise ValueError("n_tokens must not be negative")
    layers = load_layers(archive)
    counts = [int(n_tokens * share) for _, _, share, _, _ in _PLAN]
    counts[0] += n_tokens - sum(counts)
    out = []
    for index, ((name, shape, _, first, text), count) in enumerate(zip(_PLAN, counts, strict=True)):
        if count == 0:
            continue
        digest = hashlib.sha256(f"{seed}:{index}:{name}".encode()).hexdigest()
        description = {"": None, "short": _SHORT, "long": _LONG}[text]
        out.append(
            SyntheticCollection(
                index=index,
                name=name,
                contract="0x" + digest[:40],
                shape=shape,
                first_id=first,
                count=count,
                description=None if description is None else description.format(name=name),
                layers=layers,
                seed=seed,
            )
        )
    return out


def blocks(cols: Iterable[SyntheticCollection]) -> Iterator[Block]:
    """Every block of every collection, one at a time, so memory stays flat."""
    for col in cols:
        yield from col.blocks()


def write_tokens(token_blocks: Iterable[Block], root: Path) -> int:
    """Write the tokens table as a run would: ``root/<contract>/shard-<b>-<b+999>.parquet``.

    Rows go through the pipeline's own ``token_record`` (normalise_traits, is_visual),
    as if every token's image had been stored. Returns the number of tokens.
    """
    total = 0
    for block in token_blocks:
        first = block.token_ids[0] - block.token_ids[0] % BLOCK
        folder = root / block.contract
        folder.mkdir(parents=True, exist_ok=True)
        records = (
            token_record(_manifest_row(block, token_id), data)
            for token_id, data in zip(block.token_ids, block.metadata, strict=True)
        )
        total += write_parquet(records, folder / f"shard-{first}-{first + BLOCK - 1}.parquet")
    return total


def _manifest_row(block: Block, token_id: int) -> ManifestRow:
    key = f"synthetic/{block.contract}/{token_id}"
    return ManifestRow(
        collection=block.collection,
        contract=block.contract,
        token_id=str(token_id),
        metadata_key=key + ".json",
        image_key=key + ".png",
        mime="image/png",
        width=512,
        height=512,
    )


_Tokens = Iterator[dict[str, Any]]  # one block's token metadata objects, in id order


def _picks(col: SyntheticCollection, rng: np.random.Generator, n: int) -> list[list[int]]:
    """Per layer, the index of each token's value, drawn by weight."""
    return [
        np.searchsorted(_cumulative(layer), rng.random(n), side="right").tolist()
        for layer in col.layers
    ]


@cache
def _cumulative(layer: Layer) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Boundaries between the values' shares of [0, 1): a uniform draw's bin is the value."""
    weights = np.asarray(layer.weights, dtype=np.float64)
    bounds: np.ndarray[Any, np.dtype[np.float64]] = np.cumsum(weights[:-1]) / weights.sum()
    return bounds


@cache
def _attribute_table(layers: tuple[Layer, ...]) -> list[list[dict[str, str]]]:
    """Per layer and value its attribute object, built once and shared by every token."""
    return [[{"trait_type": t.trait_type, "value": v} for v in t.values] for t in layers]


def _image_base(col: SyntheticCollection) -> str:
    """A placeholder ipfs:// folder (CIDv1-looking, not a real CID)."""
    digest = base64.b32encode(hashlib.sha256(col.contract.encode()).digest()).decode()
    return "ipfs://bafybei" + digest.lower().rstrip("=")[:52]


def _moonbirds(col: SyntheticCollection, ids: list[int], rng: np.random.Generator) -> _Tokens:
    table = _attribute_table(col.layers)
    picks = list(zip(*_picks(col, rng, len(ids)), strict=True))
    absent = np.array([_ABSENT.get(layer.trait_type, 0.0) for layer in col.layers])
    present = (rng.random((len(ids), len(col.layers))) >= absent).tolist()
    base = _image_base(col)
    for token_id, pick, here in zip(ids, picks, present, strict=True):
        yield {
            "name": f"#{token_id}",
            "image": f"{base}/{token_id}.png",
            "external_url": f"https://example.org/{col.contract}/{token_id}",
            "attributes": [row[j] for row, j, h in zip(table, pick, here, strict=True) if h],
        }


def _opensea(col: SyntheticCollection, ids: list[int], rng: np.random.Generator) -> _Tokens:
    n = len(ids)
    table = _attribute_table(col.layers)
    picks = list(zip(*_picks(col, rng, n), strict=True))
    blank = (rng.random((n, len(col.layers))) < _NONE_LIKE_RATE).tolist()
    none_pick = rng.integers(0, len(NONE_LIKE), size=n).tolist()
    eye = next(i for i, layer in enumerate(col.layers) if layer.trait_type == "Eye color")
    second_eye = np.searchsorted(_cumulative(col.layers[eye]), rng.random(n), side="right")
    repeat = (rng.random(n) < _REPEAT_RATE).tolist()
    unrevealed = (rng.random(n) < _UNREVEALED_RATE).tolist()
    lore = np.where(rng.random(n) < _LORE_RATE, rng.integers(0, len(_LORE), size=n), -1).tolist()
    blinks = rng.integers(0, 10, size=n).tolist()
    animated = (rng.random(n) < 0.2).tolist()
    generation = rng.integers(1, 4, size=n).tolist()
    focus = np.round(rng.uniform(0, 10, size=n), 1).tolist()
    sparkle = rng.integers(1, 101, size=n).tolist()
    birthday = (_EPOCH + rng.integers(0, 730, size=n) * _DAY).tolist()
    minted = (_EPOCH + rng.integers(0, 730 * _DAY, size=n)).tolist()
    base = _image_base(col)
    for i, token_id in enumerate(ids):
        attributes: list[dict[str, Any]] = []
        if not unrevealed[i]:
            attributes = [
                {"trait_type": row[0]["trait_type"], "value": NONE_LIKE[none_pick[i]]}
                if b
                else row[j]
                for row, j, b in zip(table, picks[i], blank[i], strict=True)
            ]
            if repeat[i]:
                attributes.append(table[eye][second_eye[i]])
            if lore[i] >= 0:
                attributes.append({"trait_type": "Lore", "value": _LORE[lore[i]]})
            attributes += [
                {"trait_type": "Blinks", "value": blinks[i]},
                {"trait_type": "Animated", "value": animated[i]},
                {"display_type": "number", "trait_type": "Generation", "value": generation[i]},
                {"display_type": "boost_number", "trait_type": "Focus", "value": focus[i]},
                {"display_type": "boost_percentage", "trait_type": "Sparkle", "value": sparkle[i]},
                {"display_type": "date", "trait_type": "Birthday", "value": birthday[i]},
                {"display_type": "date", "trait_type": "Minted", "value": minted[i]},
            ]
        yield {
            "name": f"{col.name} #{token_id}",
            "description": col.description,
            "image": f"{base}/{token_id}.png",
            "external_url": f"https://example.org/{col.contract}/{token_id}",
            "attributes": attributes,
        }


def _traits(col: SyntheticCollection, ids: list[int], rng: np.random.Generator) -> _Tokens:
    picks = list(zip(*_picks(col, rng, len(ids)), strict=True))
    level = rng.integers(0, 10, size=len(ids)).tolist()
    legendary = (rng.random(len(ids)) < 0.2).tolist()
    base = _image_base(col)
    for i, token_id in enumerate(ids):
        traits: dict[str, Any] = {
            layer.trait_type: layer.values[j] for layer, j in zip(col.layers, picks[i], strict=True)
        }
        traits["Level"] = level[i]
        traits["Legendary"] = legendary[i]
        yield {
            "name": f"{col.name} #{token_id}",
            "image": f"{base}/{token_id}.png",
            "traits": traits,
        }


def _features(col: SyntheticCollection, ids: list[int], rng: np.random.Generator) -> _Tokens:
    picks = list(zip(*_picks(col, rng, len(ids)), strict=True))
    base = _image_base(col)
    for token_id, pick in zip(ids, picks, strict=True):
        yield {
            "name": f"{col.name} #{token_id}",
            "description": col.description,
            "image": f"{base}/{token_id}.png",
            "features": [layer.values[j] for layer, j in zip(col.layers, pick, strict=True)],
        }


def _loot(col: SyntheticCollection, ids: list[int], rng: np.random.Generator) -> _Tokens:
    base = _image_base(col)
    for token_id in ids:
        yield {
            "name": f"Bag #{token_id}",
            "description": col.description,
            "image": f"{base}/{token_id}.svg",
        }


_MAKERS: dict[Shape, Callable[[SyntheticCollection, list[int], np.random.Generator], _Tokens]] = {
    "moonbirds": _moonbirds,
    "opensea": _opensea,
    "traits": _traits,
    "features": _features,
    "loot": _loot,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens-table", type=Path, help="also write the tokens table here")
    args = parser.parse_args()
    cols = collections(args.tokens, args.seed)
    started = time.monotonic()
    count = size = 0
    for block in blocks(cols):
        count += len(block.token_ids)
        size += sum(len(m) for m in block.metadata)
    seconds = time.monotonic() - started
    result: dict[str, Any] = {
        "tokens": count,
        "collections": {c.name: [c.shape, c.count] for c in cols},
        "metadata_bytes": size,
        "generate_seconds": round(seconds, 2),
        "generate_tokens_per_s": round(count / seconds),
    }
    if args.tokens_table is not None:
        started = time.monotonic()
        write_tokens(blocks(cols), args.tokens_table)
        result["tokens_table_seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
