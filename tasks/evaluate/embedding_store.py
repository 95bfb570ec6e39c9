"""An export's CLIP embeddings as float16 parquet in S3, written so a stopped run resumes.

Each split folder of an export (``<data>/<split>/shard-NNNNNN.tar``) becomes
``<out>/<split>/<first>-<last>.parquet`` files, one per fixed group of
SHARDS_PER_FILE shards: the group feeds every DataLoader worker at once, and a
file that exists is a group that is done, so a rerun embeds only the missing
groups and never writes a pair twice. The files' format: tasks.evaluate.embedding_files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.evaluate.embed import NoSamples, embed_shards
from tasks.evaluate.embedding_files import to_parquet
from tasks.train.model import ClipModel
from tasks.train.shards import ShardSet

SHARDS_PER_FILE = 8  # fixed: changing it would misalign the groups of a resumed run


@dataclass(frozen=True)
class SplitEmbeddings:
    """What one split's embedding pass found and did."""

    url: str  # the split's embeddings folder
    files: tuple[str, ...]  # every group's parquet file, done before or now
    embedded: int  # pairs embedded by this call (0 when all groups were done)
    seconds: float

    @property
    def per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def group_name(names: Sequence[str]) -> str:
    """``shard-000008-000015.parquet`` for the group of shards 8 to 15."""
    first, last = names[0].removesuffix(".tar"), names[-1].removesuffix(".tar")
    return f"{first}-{last.rsplit('-', 1)[-1]}.parquet"


def shard_groups(shards: ShardSet) -> list[list[str]]:
    """The split's shards in name order, cut into groups of SHARDS_PER_FILE."""
    names = sorted(shards.sizes)
    return [names[i : i + SHARDS_PER_FILE] for i in range(0, len(names), SHARDS_PER_FILE)]


def embed_split(
    clip: ClipModel,
    shards: ShardSet,
    out_url: str,
    settings: Settings,
    *,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
    workers: int = 2,
    force: bool = False,
    on_group: Callable[[int, int], None] | None = None,
) -> SplitEmbeddings:
    """Embed the groups of ``shards`` whose file is missing under ``out_url`` (all with
    ``force``); ``on_group(done, total)`` reports progress after each group."""
    out = open_folder(out_url, settings)
    groups = shard_groups(shards)
    files: list[str] = []
    embedded = 0
    started = time.perf_counter()
    for done, names in enumerate(groups, 1):
        name = group_name(names)
        files.append(f"{out.url}/{name}")
        if force or not out.exists(name):
            group = ShardSet(shards.url, {n: shards.sizes[n] for n in names})
            try:
                result = embed_shards(
                    clip,
                    group,
                    settings,
                    device=device,
                    batch_size=batch_size,
                    precision=precision,
                    workers=min(workers, len(names)),
                )
            except NoSamples:  # every image corrupt: the group is done, with no pairs
                out.put(name, to_parquet([], np.zeros((0, 1)), np.zeros((0, 1))))
            else:
                data = to_parquet(result.tokens, result.images.numpy(), result.texts.numpy())
                out.put(name, data)
                embedded += len(result.keys)
        if on_group is not None:
            on_group(done, len(groups))
    return SplitEmbeddings(out.url, tuple(files), embedded, time.perf_counter() - started)
