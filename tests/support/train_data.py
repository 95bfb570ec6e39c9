"""Training data for tests and benches: real Moonbirds as WebDataset shards with traits.

The images go into the real S3 (SeaweedFS) as blobs and through the export's
own shard writer, so the shards are exactly what nft1000/export writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export.items import ExportItem, safe_names
from tasks.export.webdataset import ShardOptions, plan_shards, write_index, write_shard
from tasks.train.masks.draw import caption
from tests.support.stack import read_moonbirds

MOONBIRDS = ("Moonbirds", "0x23581767a106ae21c074b2276d25e5c3e136a68b")
FOLDER = safe_names([MOONBIRDS])[MOONBIRDS]


def moonbird_traits(metadata: bytes) -> tuple[tuple[str, str], ...]:
    attributes = json.loads(metadata)["attributes"]
    return tuple((str(a["trait_type"]), str(a["value"])) for a in attributes)


def moonbird_items(store: ObjectStore, ids: Sequence[int], split: str) -> list[ExportItem]:
    """Export items of real Moonbirds with their template caption and its traits."""
    tokens = read_moonbirds(max(ids) + 1)
    items = []
    for i in ids:
        metadata, png = tokens[i]
        traits = moonbird_traits(metadata)
        items.append(
            ExportItem(
                collection=MOONBIRDS[0],
                contract=MOONBIRDS[1],
                token_id=str(i),
                split=split,
                in_mini=False,
                metadata_key="",
                image_key=store.put_blob(png, "image/png").key,
                image_mime="image/png",
                caption=caption(MOONBIRDS[0], traits),
                prompt="",
                folder=FOLDER,
                caption_method="visual_template",
                traits=traits,
            )
        )
    return items


def write_split(
    items: Sequence[ExportItem],
    url: str,
    settings: Settings,
    per_shard: int,
    shortest_side: int = 64,
) -> None:
    """The items' split as nft1000/export writes it: ``<url>/<split>/`` shards and sizes.json."""
    options = ShardOptions(shortest_side=shortest_side)
    split = items[0].split
    results = [
        write_shard(plan, url, settings, options) for plan in plan_shards(split, items, per_shard)
    ]
    write_index(url, settings, results, options)
