"""Embed the images and captions of WebDataset shards with an open_clip model.

Images go through the model's evaluation transform, captions (the ``.txt`` of
each sample, the tables' preferred caption) through its tokenizer; both come
back L2-normalised on the CPU, with each sample's key and collection folder.

``embed_shards`` keeps the vectors in memory (nft1000/evaluate ranks them at
once). ``embed_split`` writes a whole split as embedding files
(tasks.evaluate.embedding_files), ``<out>/<split>/<first>-<last>.parquet``, one
per fixed group of SHARDS_PER_FILE shards: a group feeds every DataLoader worker
at once, and a file that exists is a group that is done, so a rerun embeds only
the missing groups and never writes a pair twice (nft1000/cvi).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.evaluate.embedding_files import embeddings_to_parquet
from tasks.train.batches import ShardBatches
from tasks.train.model import ClipModel
from tasks.train.shards import ShardSet


class NoSamples(ValueError):
    """Not one sample of the shards could be read (all missing or corrupt)."""


@dataclass(frozen=True)
class Embedded:
    images: torch.Tensor  # (N, D) float32, unit rows
    texts: torch.Tensor  # (N, D) float32, unit rows
    keys: tuple[str, ...]
    groups: tuple[str, ...]  # each sample's collection folder
    tokens: tuple[tuple[str, str, str, str], ...]  # (collection, contract, token id, split)
    seconds: float

    @property
    def per_second(self) -> float:
        return len(self.keys) / self.seconds if self.seconds > 0 else 0.0


def embed_shards(
    clip: ClipModel,
    shards: ShardSet,
    settings: Settings,
    *,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "fp32",
    workers: int = 2,
) -> Embedded:
    data = ShardBatches(
        shards,
        settings,
        clip.eval_transform,
        clip.tokenizer,
        epoch=0,
        seed=0,
        batch_size=batch_size,
        workers=workers,
        min_last=1,
        shuffle_buffer=1,  # order does not matter: every sample keeps its key
    )
    loader = DataLoader(
        data, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda"
    )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")
    model = clip.model.eval()
    images: list[torch.Tensor] = []
    texts: list[torch.Tensor] = []
    keys: list[str] = []
    groups: list[str] = []
    tokens: list[tuple[str, str, str, str]] = []
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in loader:
            if not batch["keys"]:
                continue
            image = model.encode_image(batch["images"].to(device), normalize=True)  # type: ignore[operator]
            text = model.encode_text(batch["texts"].to(device), normalize=True)  # type: ignore[operator]
            images.append(image.float().cpu())
            texts.append(text.float().cpu())
            keys += batch["keys"]
            groups += batch["groups"]
            tokens += [(c, a, t, s) for c, a, t, s in batch["tokens"]]  # lists after workers
    seconds = time.perf_counter() - started
    if not keys:
        raise NoSamples(f"no samples could be read from {shards.url}")
    return Embedded(
        torch.cat(images), torch.cat(texts), tuple(keys), tuple(groups), tuple(tokens), seconds
    )


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
                out.put(name, embeddings_to_parquet([], np.zeros((0, 1)), np.zeros((0, 1))))
            else:
                data = embeddings_to_parquet(
                    result.tokens, result.images.numpy(), result.texts.numpy()
                )
                out.put(name, data)
                embedded += len(result.keys)
        if on_group is not None:
            on_group(done, len(groups))
    return SplitEmbeddings(out.url, tuple(files), embedded, time.perf_counter() - started)
