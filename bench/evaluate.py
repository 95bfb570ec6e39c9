"""bench/evaluate: embedding throughput and retrieval time on real Moonbirds shards; prints JSON.

Three measurements on one split of ``tests.data.moonbird_shards`` (real tokens, the
export's shards), with one model (random weights unless ``--pretrained`` names a
checkpoint file; the accuracies then sit near chance and only the times matter):

- ``embed``: ``tasks.evaluate.embed.embed_shards`` end to end (shards read, images
  decoded and transformed, captions tokenised in ``--workers`` data workers,
  both towers run): pairs per second, i.e. images/s = texts/s of the pipeline.
  Run ``--repeats`` times; the first is a warm-up (workers, kernels, autotune);
- ``towers``: each tower alone on one real batch already on the device
  (``encode_image`` / ``encode_text``, synchronised), the model's ceiling:
  images/s and texts/s;
- ``retrieval``: ``tasks.evaluate.retrieval.evaluate`` on the embeddings, per pool
  (``within`` the collection and ``pooled``; one collection here, so both rank
  the same candidates), best of ``--repeats`` after a warm-up, with the top-K
  it found.

    python -m bench.evaluate [--architecture A] [--pretrained FILE] [--precision fp32|bf16]
        [--batch-size B] [--device cpu|cuda] [--workers W] [--split test|train]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.measure import Meter
from tasks.evaluate.embed import embed_shards
from tasks.evaluate.retrieval import POOLS, PoolResult, evaluate
from tasks.train.batches import ShardBatches
from tasks.train.model import ClipModel, load_clip, resolve_device
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import ShardSet
from tests.data.moonbird_shards import LOCAL, add_arguments, prepared_of

KS = (1, 5, 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` timed calls after one untimed warm-up call."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        meter = Meter()
        fn()
        _sync(device)
        best = min(best, meter.seconds())
    return best


def towers(
    clip: ClipModel, shards: ShardSet, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Each tower's throughput on one real batch, data loading left out."""
    data = ShardBatches(
        shards, LOCAL, clip.eval_transform, clip.tokenizer, epoch=0, seed=0,
        batch_size=args.batch_size, workers=1, min_last=1, shuffle_buffer=1,
    )  # fmt: skip
    batch = next(iter(data))
    images, texts = batch["images"].to(device), batch["texts"].to(device)
    model = clip.model.eval()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    autocast = torch.autocast(device.type, dtype=dtype, enabled=args.precision != "fp32")

    def image() -> object:
        with torch.inference_mode(), autocast:
            return model.encode_image(images, normalize=True)  # type: ignore[operator]

    def text() -> object:
        with torch.inference_mode(), autocast:
            return model.encode_text(texts, normalize=True)  # type: ignore[operator]

    count = len(batch["keys"])
    image_s = _best_time(image, device, args.repeats)
    text_s = _best_time(text, device, args.repeats)
    return {
        "batch": count,
        "images_per_s": round(count / image_s, 1),
        "texts_per_s": round(count / text_s, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    data = prepared_of(args)
    shards = data.split(args.split)
    torch.manual_seed(0)
    clip = load_clip(args.architecture, args.pretrained or None, LOCAL, device)
    runs = []
    for _ in range(max(2, args.repeats)):
        embedded = embed_shards(
            clip, shards, LOCAL, device=device, batch_size=args.batch_size,
            precision=args.precision, workers=args.workers,
        )  # fmt: skip
        runs.append(embedded)
    timed = runs[1:]  # the first warms up
    best = max(r.per_second for r in timed)
    retrieval: dict[str, Any] = {}
    for pool in POOLS:

        def rank(pool: str = pool) -> PoolResult:
            return evaluate(
                embedded.images, embedded.texts, embedded.groups, pools=(pool,), ks=KS,
                device=device,
            )[pool]  # fmt: skip

        found = rank()
        seconds = _best_time(rank, device, args.repeats)
        retrieval[pool] = {
            "seconds": round(seconds, 4),
            "queries_per_s": round(len(embedded.keys) / seconds, 1),
            **{f"top{k}": round(found.micro(k), 4) for k in KS},
        }
    return {
        "benchmark": "evaluate",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": str(device),
            **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        },
        "config": {
            "architecture": Path(args.architecture).name,
            "pretrained": args.pretrained or "none (random init)",
            "precision": args.precision,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "split": args.split,
        },
        "pairs": len(embedded.keys),
        "dim": int(embedded.images.shape[1]),
        "embed": {
            "pairs_per_s": round(best, 1),
            "seconds_per_run": [round(r.seconds, 2) for r in runs],
            "note": "end to end; the first run is a warm-up and not in pairs_per_s",
        },
        "towers": towers(clip, shards, device, args),
        "retrieval": retrieval,
        "chance_top1": round(1 / len(embedded.keys), 5),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--architecture", default=TINY_ARCHITECTURE)
    p.add_argument("--pretrained", default="", help="a checkpoint file; empty: random weights")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "amp"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--repeats", type=int, default=3)
    return p


def main() -> None:
    print(json.dumps(run(parser().parse_args()), indent=2))


if __name__ == "__main__":
    main()
