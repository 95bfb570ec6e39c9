"""bench/experiments/masking: does dynamic masking help retrieval? Plain against
dynamic-mask training on real Moonbirds, top-K within the collection on held-out
tokens; prints JSON.

docs/method.md section 4 fine-tunes a pretrained CLIP. No weights can be downloaded
here, so every arm trains the same small CLIP from random weights, on a CPU, on
the Moonbirds train split (``tests.data.moonbird_shards``: 80% of the tokens, by a
seeded hash of the id), with one budget (epochs, batch, lr, warm-up, seed,
precision) through ``tasks.train.loop.train``. The arms differ only in the mode and
the masks:

- ``plain``: full images and captions;
- ``dynamic-derived``: dynamic masking (p = ``--mask-probability``) with the
  masks derived from the train images (what a collection without layer art gets);
- ``dynamic-official``: the same with the masks from the Moonbirds layer art;
- ``dynamic-derived-no-backdrop``: derived masks without the backdrops (values
  whose mask covers nearly the whole canvas: Background), which are then never
  picked: always shown
  and always named. (A picked backdrop paints only what the token's other
  traits leave showing, ``tasks.train.masks.draw.union_mask``; this arm tells how much
  masking the backdrop at all costs or brings.)

Each arm also reports ``painted_share``: how much of each training image the
first epoch's draw paints over (mean, and the share of images painted over 90%).

Each trained model embeds the test split (tokens never trained on, with their
full template captions) through ``tasks.evaluate.embed.embed_shards``, and
``tasks.evaluate.retrieval.evaluate`` ranks each caption's own image among all test
images (pool ``within``: one collection, so pooled is the same pool). The
untrained model and chance (K / test size) are the floor. Each seed repeats
every arm with another initialisation, data order and draw.

    python -m bench.experiments.masking [--epochs 3] [--batch-size 128] [--lr 1e-3]
        [--seeds 0] [--arms plain,dynamic-derived,...] [--tokens 10000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.measure import Meter
from tasks.core.folders import open_folder
from tasks.core.paths import MODEL
from tasks.evaluate.embed import embed_shards
from tasks.evaluate.retrieval import WITHIN, evaluate
from tasks.train.loop import Mode, TrainConfig, TrainResult, train
from tasks.train.masks import Key, Mask
from tasks.train.masks.draw import BACKDROP_COVER, draw, draw_seed, union_mask
from tasks.train.model import ClipModel, load_clip, resolve_device
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import ShardSet, read_shard
from tests.data.moonbird_shards import LOCAL, Prepared, add_arguments, prepared_of


@dataclass(frozen=True)
class Arm:
    mode: Mode
    masks: str | None = None  # mask source (tests.data.moonbird_shards.MASK_SOURCES)
    # Backdrops (values whose mask covers nearly the whole canvas, as tasks.train.masks.draw
    # tells them): False leaves them out of the masks, so they are never picked.
    canvas_masks: bool = True


ARMS: dict[str, Arm] = {
    "plain": Arm("plain"),
    "dynamic-derived": Arm("dynamic-mask", "derived"),
    "dynamic-official": Arm("dynamic-mask", "official"),
    "dynamic-derived-no-backdrop": Arm("dynamic-mask", "derived", canvas_masks=False),
}
KS = (1, 5, 10)


def top_k(
    clip: ClipModel, test: ShardSet, device: torch.device, workers: int
) -> tuple[dict[str, float], float]:
    """Within-collection top-K accuracy of a model on the test split, and embedding seconds."""
    embedded = embed_shards(clip, test, LOCAL, device=device, batch_size=256, workers=workers)
    result = evaluate(embedded.images, embedded.texts, embedded.groups, pools=(WITHIN,), ks=KS)
    within = result[WITHIN]
    return {f"top{k}": round(within.micro(k), 4) for k in KS}, embedded.seconds


def arm_masks(arm: Arm, data: Prepared) -> dict[str, dict[Key, Mask]] | None:
    if arm.masks is None:
        return None
    masks = data.masks(arm.masks)
    if arm.canvas_masks:
        return masks
    return {
        c: {k: m for k, m in by.items() if m.mean() < BACKDROP_COVER} for c, by in masks.items()
    }


def painted(
    shards: ShardSet, masks: dict[str, dict[Key, Mask]] | None, p: float, seed: int
) -> dict[str, float]:
    """Share of each training image that the first epoch's draw paints over (the same
    draw as tasks.train.batches: ``draw_seed(seed, 0, key)``), at the masks' size."""
    shares: list[float] = []
    folder = open_folder(shards.url, LOCAL)
    for name in sorted(shards.sizes):
        for sample in read_shard(folder, name):
            mine = (masks or {}).get(sample.contract)
            if not mine:
                shares.append(0.0)
                continue
            rng = np.random.default_rng(draw_seed(seed, 0, sample.key))
            picked = draw(sample.collection, sample.traits, mine, p, rng).masked
            union = union_mask(picked, mine, sample.traits)
            shares.append(0.0 if union is None else float(union.mean()))
    values = np.array(shares)
    return {
        "mean": round(float(values.mean()), 3),
        "over_90_percent": round(float((values > 0.9).mean()), 3),
    }


def run_arm(
    name: str, config: TrainConfig, data: Prepared, device: torch.device, scratch: Path
) -> dict[str, Any]:
    """Train one arm into ``scratch`` and evaluate it on the test split."""
    arm = ARMS[name]
    masks = arm_masks(arm, data)
    out = scratch / f"{name}-{config.seed}"
    meter = Meter()
    result: TrainResult = train(
        dataclasses.replace(config, mode=arm.mode),
        data.split("train"),
        LOCAL,
        open_folder(str(out), LOCAL),
        masks,
        device=str(device),
        checkpoint_every_s=1e9,
        log_every=0,
    )
    seconds = meter.seconds()
    clip = load_clip(config.architecture, str(out / MODEL), LOCAL, device)
    accuracy, embed_seconds = top_k(clip, data.split("test"), device, config.workers)
    trained = sum(e.seconds for e in result.epochs)
    return {
        "arm": name,
        "seed": config.seed,
        "mode": arm.mode,
        "masks": arm.masks,
        "canvas_masks": arm.canvas_masks,
        "mask_values": sum(len(m) for m in (masks or {}).values()),
        "painted_share": painted(data.split("train"), masks, config.mask_probability, config.seed),
        "train_seconds": round(seconds, 1),
        "samples_per_s": round(result.samples / trained, 1) if trained else None,
        "steps": result.steps,
        "epoch_loss": [round(e.loss, 4) for e in result.epochs],
        "masked_per_sample": [round(e.masked_per_sample, 2) for e in result.epochs],
        "embed_seconds": round(embed_seconds, 1),
        **accuracy,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and spread, over several seeds) of each arm's accuracies."""
    summary: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {"seeds": len(mine)}
        for k in KS:
            values = [r[f"top{k}"] for r in mine]
            summary[arm][f"top{k}_mean"] = round(statistics.fmean(values), 4)
            if len(values) > 1:
                summary[arm][f"top{k}_stdev"] = round(statistics.stdev(values), 4)
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}: use {sorted(ARMS)}")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = resolve_device(args.device)
    data = prepared_of(args)
    train_set, test_set = data.split("train"), data.split("test")
    meter = Meter()
    base = TrainConfig(
        architecture=args.architecture,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        precision=args.precision,
        warmup_steps=args.warmup_steps,
        workers=args.workers,
        mask_probability=args.mask_probability,
    )
    torch.manual_seed(0)
    untrained, _ = top_k(load_clip(args.architecture, None, LOCAL, device), test_set, device, 0)
    runs = []
    with tempfile.TemporaryDirectory(prefix="nft1000-masking-") as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                config = dataclasses.replace(base, seed=seed)
                runs.append(run_arm(arm, config, data, device, Path(tmp)))
    reports = data.summary["masks"]
    return {
        "benchmark": "masking_experiment",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "data": {
            "collection": "Moonbirds",
            "train": train_set.samples,
            "test": test_set.samples,
            "mask_values": {s: reports[s]["values"] for s in reports},
            "derived_vs_official_mean_iou": reports["official"]["mean_iou"],
            "prepared": str(data.root),
        },
        "budget": {
            "architecture": Path(args.architecture).name,
            "pretrained": "none (random init)",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "precision": args.precision,
            "mask_probability": args.mask_probability,
            "workers": args.workers,
        },
        "chance": {f"top{k}": round(k / test_set.samples, 4) for k in KS},
        "untrained": untrained,
        "runs": runs,
        "summary": summarise(runs),
        "seconds": round(meter.seconds(), 1),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--architecture", default=TINY_ARCHITECTURE)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "amp"))
    p.add_argument("--mask-probability", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument(
        "--arms",
        type=lambda s: s.split(","),
        default=["plain", "dynamic-derived", "dynamic-derived-no-backdrop"],
    )
    return p


def main() -> None:
    print(json.dumps(run(parser().parse_args()), indent=2))


if __name__ == "__main__":
    main()
