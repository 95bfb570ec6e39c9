"""Batches from WebDataset shards, for training (dynamic-masking draw per load) and embedding.

Each epoch deals the shards, in an order seeded by (seed, epoch), round-robin to
the DataLoader workers; each worker shuffles its samples through a seeded buffer
and yields whole batches tagged with its id and the batch's number. Everything
random (shard order, buffer, masking draw, image augmentation) is seeded from
(seed, epoch, worker or sample key), so a stopped run that skips the batches
each worker already delivered replays the rest of the epoch exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from tasks.core.errors import ItemError
from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.train.masks import TraitMasks
from tasks.train.masks.draw import apply_mask, draw, draw_seed, union_mask
from tasks.train.shards import Sample, ShardSet, read_shard

Transform = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class EpochPlan:
    """Which shards each worker reads in one epoch, and how many batches that makes."""

    shards: tuple[tuple[str, ...], ...]  # per worker
    batches: tuple[int, ...]  # per worker

    @property
    def total(self) -> int:
        return sum(self.batches)


def batches_of(samples: int, batch_size: int, drop_last: bool, min_last: int = 2) -> int:
    """Batches a worker makes of its samples. A short last batch is kept unless
    ``drop_last``, and only with ``min_last`` samples (a contrastive loss needs two)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest >= min_last and rest > 0 and not drop_last else 0)


def plan_epoch(
    shards: ShardSet,
    epoch: int,
    seed: int,
    workers: int,
    batch_size: int,
    drop_last: bool,
    min_last: int = 2,
) -> EpochPlan:
    names = sorted(shards.sizes)
    random.Random(f"{seed}/{epoch}/shards").shuffle(names)
    count = max(1, workers)
    dealt = tuple(tuple(names[w::count]) for w in range(count))
    batches = tuple(
        batches_of(sum(shards.sizes[n] for n in mine), batch_size, drop_last, min_last)
        for mine in dealt
    )
    return EpochPlan(dealt, batches)


@dataclass
class ShardBatches(IterableDataset[dict[str, Any]]):
    """One epoch's batches: ``images``, ``texts`` (token ids), ``keys``, ``groups`` (the
    samples' collection folders), ``tokens`` ((collection, contract, token id, split)),
    ``masked`` (traits hidden per sample), ``worker``
    and ``index`` (the worker's batch number)."""

    shards: ShardSet
    settings: Settings
    transform: Transform
    tokenizer: Tokenizer
    epoch: int
    seed: int
    batch_size: int
    workers: int
    drop_last: bool = False
    min_last: int = 2  # smallest last batch kept (1 when embedding: every sample counts)
    masks: Mapping[str, TraitMasks] = field(default_factory=dict)  # by contract
    mask_probability: float = 0.0
    skip: Sequence[int] = ()  # batches each worker already delivered (resume)
    shuffle_buffer: int = 1000

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        plan = plan_epoch(
            self.shards,
            self.epoch,
            self.seed,
            self.workers,
            self.batch_size,
            self.drop_last,
            self.min_last,
        )
        skip = self.skip[worker] if worker < len(self.skip) else 0
        samples = self._shuffled(plan.shards[worker], worker)
        for index in range(plan.batches[worker]):
            drawn = [next(samples) for _ in range(self.batch_size)]
            chunk = [s for s in drawn if s is not None]
            if index < skip:
                continue  # delivered before the stop: skipped undecoded
            yield self._batch(chunk, worker, index)

    def _shuffled(self, names: Sequence[str], worker: int) -> Iterator[Sample | None]:
        """The worker's samples through a seeded shuffle buffer, then None forever."""
        rng = random.Random(f"{self.seed}/{self.epoch}/{worker}/buffer")
        folder = open_folder(self.shards.url, self.settings)
        buffer: list[Sample] = []
        for name in names:
            for sample in read_shard(folder, name):
                buffer.append(sample)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer
        while True:
            yield None

    def _batch(self, chunk: list[Sample], worker: int, index: int) -> dict[str, Any]:
        pixels: list[torch.Tensor] = []
        captions: list[str] = []
        keys: list[str] = []
        groups: list[str] = []
        tokens: list[tuple[str, str, str, str]] = []
        masked: list[int] = []
        for sample in chunk:
            loaded = self._load(sample)
            if loaded is None:
                continue
            pixels.append(loaded[0])
            captions.append(loaded[1])
            masked.append(loaded[2])
            keys.append(sample.key)
            groups.append(sample.group)
            tokens.append(sample.token)
        return {
            "images": torch.stack(pixels) if pixels else torch.empty(0),
            "texts": self.tokenizer(captions) if captions else torch.empty(0),
            "keys": keys,
            "groups": groups,
            "tokens": tokens,
            "masked": masked,
            "worker": worker,
            "index": index,
        }

    def _load(self, sample: Sample) -> tuple[torch.Tensor, str, int] | None:
        seed = draw_seed(self.seed, self.epoch, sample.key)
        try:
            image = sample.decode()
        except ItemError:
            return None  # a corrupt image in someone's shard costs one sample, not the run
        caption, hidden = sample.caption, 0
        masks = self.masks.get(sample.contract)
        if masks and self.mask_probability > 0 and sample.traits:
            picked = draw(
                sample.collection,
                sample.traits,
                masks,
                self.mask_probability,
                np.random.default_rng(seed),
            )
            image = apply_mask(image, union_mask(picked.masked, masks, sample.traits))
            caption, hidden = picked.caption, len(picked.masked)
        # Augmentations draw from torch's generator: seeded per sample, replayable.
        torch.manual_seed(seed)
        return self.transform(image.convert("RGB")), caption, hidden
