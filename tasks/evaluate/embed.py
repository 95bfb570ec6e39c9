"""Embed the images and captions of WebDataset shards with an open_clip model.

Images go through the model's evaluation transform, captions (the ``.txt`` of
each sample, the tables' preferred caption) through its tokenizer; both come
back L2-normalised on the CPU, with each sample's key and collection folder,
ready for tasks.evaluate.retrieval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from tasks.core.settings import Settings
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
