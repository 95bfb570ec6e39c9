"""Real Moonbirds as WebDataset shards, split by token, with their trait masks: the data
of the training benches (bench.train, bench.evaluate, bench.cvi) and of
bench.experiments.masking.

The shards are what nft1000/export writes: the token images go into a real S3
(a private SeaweedFS, started for the preparation and stopped by PID after it)
as blobs, and ``tasks.export.webdataset.write_shard``/``write_index`` turn export items
(template caption, caption_method ``visual_template``, the caption's traits)
into ``<root>/<split>/shard-NNNNNN.tar`` and ``sizes.json`` in a local folder.
Tokens are split by a seeded hash of their id: the ``test_share`` of ids with the
lowest ``sha256(seed/id)`` are ``test``, the rest ``train``. Each split is ordered
like an export's (``order_key``).

Masks of the collection come from the train images through
``tasks.train.masks.store.build_masks``, under ``<root>/masks/derived`` (derived from
the images) and ``<root>/masks/official`` (from the Moonbirds layer art; its
report holds the derived masks' IoU against them).

A prepared folder is named by a hash of the arguments and of the code that
decides its bytes (``SOURCES``), and finished by ``prepared.json``: a rerun with
the same arguments and code starts no S3 and returns at once (so a GPU machine
without SeaweedFS can use a folder prepared elsewhere from the same tree).

    python -m tests.data.moonbird_shards [--tokens 10000] [--seed 0] [--test-share 0.2]
        [--per-shard 500] [--shortest-side 64] [--cache DIR]

prints the folder's summary as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.train.masks import TraitMasks
from tasks.train.masks.store import load_masks
from tasks.train.shards import ShardSet, open_shards

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE = PROJECT_ROOT / ".nft1000" / "bench"
COLLECTION = "Moonbirds"
CONTRACT = "0x23581767a106ae21c074b2276d25e5c3e136a68b"
FOLDER = "Moonbirds"
MASK_SOURCES = ("derived", "official")
DONE = "prepared.json"
VERSION = 2  # bump when what a prepared folder holds changes
# The code that decides a prepared folder's bytes: shards, captions, traits, masks.
SOURCES = (
    "tests/data/known_masks.py",
    "tasks/export/images.py",
    "tasks/train/masks/draw.py",
    "tasks/train/masks/__init__.py",
    "tasks/train/masks/derived.py",
    "tasks/train/masks/official.py",
    "tasks/train/masks/store.py",
    "tasks/tables/traits.py",
    "tasks/export/webdataset.py",
)
# Local folders need no endpoint: these settings never reach S3.
LOCAL = Settings()


@dataclass(frozen=True)
class Params:
    tokens: int = 10_000  # Moonbirds 0..tokens-1
    seed: int = 0
    test_share: float = 0.2
    per_shard: int = 500
    shortest_side: int = 64

    def __post_init__(self) -> None:
        if not 2 <= self.tokens <= 10_000:
            raise ValueError(f"tokens must be in [2, 10000], got {self.tokens}")
        if not 0 <= self.test_share < 1 or self.per_shard < 1 or self.shortest_side < 1:
            raise ValueError("test_share in [0, 1), per_shard >= 1 and shortest_side >= 1 please")

    def digest(self) -> str:
        code = hashlib.sha256(b"".join((PROJECT_ROOT / p).read_bytes() for p in SOURCES))
        doc = {"version": VERSION, "code": code.hexdigest(), **asdict(self)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Prepared:
    """A prepared folder: ``<split>/`` shards, ``masks/<source>/`` and its summary."""

    root: Path
    summary: dict[str, Any]

    def split(self, name: str) -> ShardSet:
        return open_shards(str(self.root / name), LOCAL)

    @property
    def contract(self) -> str:
        """The collection's contract (Moonbirds' unless the summary names another)."""
        return str(self.summary.get("contract", CONTRACT))

    def masks(self, source: str) -> dict[str, TraitMasks]:
        """The collection's masks by contract, as tasks.train.loop takes them."""
        if source not in MASK_SOURCES:
            raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
        folder = open_folder(str(self.root / "masks" / source), LOCAL)
        return load_masks(folder, [self.contract])


def prepare(params: Params, cache: Path = CACHE) -> Prepared:
    """The prepared folder for ``params``, built now unless an earlier run finished it."""
    root = (cache / f"moonbirds-{params.digest()}").resolve()
    if (root / DONE).is_file():
        return open_prepared(root)
    text = json.dumps(_build(params, root), indent=1)
    (root / DONE).write_text(text + "\n")
    return Prepared(root, json.loads(text))


def open_prepared(root: Path) -> Prepared:
    """A folder prepared earlier, whatever code or arguments wrote it (one carried to a
    machine without S3, say): its ``prepared.json`` says what it holds."""
    root = root.resolve()  # absolute: open_clip_train reads the shards from another folder
    done = root / DONE
    if not done.is_file():
        raise ValueError(f"{root} is not a prepared folder: no {DONE}")
    return Prepared(root, json.loads(done.read_text()))


def split_of(seed: int, token_ids: list[int], test_share: float) -> dict[int, str]:
    """``test`` for the ``test_share`` of ids with the lowest sha256(seed/id), else ``train``."""
    ranked = sorted(token_ids, key=lambda i: hashlib.sha256(f"{seed}/{i}".encode()).digest())
    tests = set(ranked[: round(len(ranked) * test_share)])
    return {i: "test" if i in tests else "train" for i in token_ids}


def _build(params: Params, root: Path) -> dict[str, Any]:
    # Preparation alone needs the archive, S3 and the export: imported here, so a
    # machine that only reads a prepared folder needs none of them.
    from infra.stack import MOONBIRDS_LAYERS
    from tasks.core.s3 import ObjectStore
    from tasks.export.items import ExportItem
    from tasks.export.webdataset import (
        ShardOptions,
        order_key,
        plan_shards,
        write_index,
        write_shard,
    )
    from tasks.train.masks.draw import caption
    from tasks.train.masks.store import build_masks
    from tests.data.known_masks import moonbirds_tokens
    from tests.data.local_s3 import seaweedfs

    started = time.perf_counter()
    tokens = [(int(t), png, traits) for t, png, traits in moonbirds_tokens()]
    tokens = [t for t in tokens if t[0] < params.tokens]
    splits = split_of(params.seed, [t[0] for t in tokens], params.test_share)
    options = ShardOptions(shortest_side=params.shortest_side)
    with seaweedfs() as settings:
        s3_seconds = time.perf_counter() - started
        store = ObjectStore(settings)
        with ThreadPoolExecutor(16) as pool:
            keys = list(pool.map(lambda t: store.put_blob(t[1], "image/png").key, tokens))
        items: dict[str, list[ExportItem]] = {"train": [], "test": []}
        for (token, _, traits), key in zip(tokens, keys, strict=True):
            pairs = tuple((t, v) for t, v in traits)
            items[splits[token]].append(
                ExportItem(
                    collection=COLLECTION,
                    contract=CONTRACT,
                    token_id=str(token),
                    split=splits[token],
                    in_mini=False,
                    metadata_key="",
                    image_key=key,
                    image_mime="image/png",
                    caption=caption(COLLECTION, pairs),
                    prompt="",
                    folder=FOLDER,
                    caption_method="visual_template",
                    traits=pairs,
                )
            )
        for split in items.values():
            split.sort(key=lambda i: order_key(str(params.seed), i.contract, i.token_id))
        shards_started = time.perf_counter()
        results = [
            write_shard(plan, str(root), settings, options)
            for name, split in items.items()
            if split
            for plan in plan_shards(name, split, params.per_shard)
        ]
        index = write_index(str(root), settings, results, options)
        masks_started = time.perf_counter()
        reports = {
            source: build_masks(
                items["train"],
                store,
                open_folder(str(root / "masks" / source), LOCAL),
                layers=MOONBIRDS_LAYERS if source == "official" else None,
            )
            for source in MASK_SOURCES
        }
        done = time.perf_counter()
    return {
        "params": asdict(params),
        "root": str(root),
        "splits": {
            name: {k: split[k] for k in ("samples", "failed", "failures_by_kind")}
            | {"shards": len(split["shards"])}
            for name, split in index["splits"].items()
        },
        "masks": {source: asdict(report) for source, report in reports.items()},
        "seconds": {
            "s3_up_and_read": round(s3_seconds, 1),
            "blobs_and_items": round(shards_started - started - s3_seconds, 1),
            "shards": round(masks_started - shards_started, 1),
            "masks": round(done - masks_started, 1),
        },
    }


def add_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """The data arguments every bench of this family takes."""
    base = Params(**defaults)
    parser.add_argument("--tokens", type=int, default=base.tokens)
    parser.add_argument("--seed", type=int, default=base.seed)
    parser.add_argument("--test-share", type=float, default=base.test_share)
    parser.add_argument("--per-shard", type=int, default=base.per_shard)
    parser.add_argument("--shortest-side", type=int, default=base.shortest_side)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument(
        "--prepared", type=Path, default=None, help="a prepared folder to use as it is"
    )


def params_of(args: argparse.Namespace) -> Params:
    return Params(args.tokens, args.seed, args.test_share, args.per_shard, args.shortest_side)


def prepared_of(args: argparse.Namespace) -> Prepared:
    """The folder ``--prepared`` names, else the one the data arguments prepare."""
    if args.prepared is not None:
        return open_prepared(args.prepared)
    return prepare(params_of(args), args.cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    print(json.dumps(prepared_of(args).summary, indent=2))


if __name__ == "__main__":
    main()
