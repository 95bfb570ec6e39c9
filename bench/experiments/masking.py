"""bench/experiments/masking: does dynamic masking beat plain fine-tuning of a pretrained
CLIP, as the paper claims? Plain against dynamic-mask arms on two held-out targets,
several learning rates and seeds, top-K within the collection; prints JSON.

The paper fine-tunes a pretrained CLIP. No weights can be downloaded here, so the
start is the tiny CLIP pretrained on our broad corpus (bench.experiments.pretrain:
many HashLips-composed collections and real Loot, neither target among them), or
any checkpoint given with ``--pretrained``. Every arm fine-tunes that checkpoint
on a target's train split with one budget (epochs, batch, warm-up, precision)
through ``tasks.train.loop.train``; the arms differ only in mode, masks and rate:

- ``plain``: full images and captions;
- ``dynamic-official``: dynamic masking (p = ``--mask-probability``) with the
  masks from the layer art and its drawing order;
- ``dynamic-derived``: the same with masks and order derived from the train
  images (what a collection without layer art gets);
- ``dynamic-official-whole``, ``dynamic-derived-whole`` (not run by default): the
  same masks painted whole, as before masks had an order (only backdrops gave
  way to the rest), to tell what painting only the visible region changes.

Rates: the paper's (5e-6 plain, 3e-5 dynamic masking) with lower and higher ones
(``--plain-rates``, ``--dynamic-rates``); each (arm, rate) runs with every seed
(initialisation of anything the checkpoint lacks, data order, masking draw).

Targets, each split 80/20 by token with a fixed seed: ``moonbirds`` (real,
``tests.data.moonbird_shards``, official masks from the Moonbirds layer art) and
``composed`` (``tests.data.composed_target``: a HashLips-composed collection held
out of the corpus, official masks from its art). Each trained model embeds the
test split (tokens never trained on, full template captions) and
``tasks.evaluate.retrieval.evaluate`` ranks each caption's own image among all
the test images. Floors: the checkpoint with no fine-tuning (zero-shot), and
chance (K / test size).

Per target and mask source the JSON also gives what the first epoch's draw does
(``draw``): the painted share, how much of each training image it paints over
(mean, and the share of images painted over 90%), painted whole and painted
visible; and the caption collisions, the share of samples whose caption equals
another in its batch (the contrastive loss treats them as negatives), with and
without masking.

    python -m bench.experiments.masking [--targets moonbirds,composed] [--seeds 0,1,2]
        [--epochs 2] [--pretrained corpus|none|PATH] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.experiments import pretrain
from bench.measure import Meter
from tasks.core.folders import open_folder
from tasks.core.paths import MODEL
from tasks.evaluate.embed import embed_shards
from tasks.evaluate.retrieval import WITHIN, evaluate
from tasks.train.loop import AUTHORS_LR, Mode, TrainConfig, TrainResult, train
from tasks.train.masks import TraitMasks, by_area
from tasks.train.masks.draw import Draw, draw, draw_seed, union_mask
from tasks.train.model import ClipModel, load_clip, resolve_device
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import Sample, ShardSet, read_shard
from tests.data.composed import Plan
from tests.data.composed_target import TARGET, prepare_target
from tests.data.moonbird_shards import LOCAL, MASK_SOURCES, Prepared, add_arguments, prepared_of

KS = (1, 5, 10)
PAPER = {
    "claim": "dynamic masking beats plain fine-tuning of a pretrained CLIP",
    "top1_points": 7.4,
    "rates": dict(AUTHORS_LR),
}
QUICK_TARGET = Plan(values=(3,), tokens=60, seed=TARGET.seed, name=TARGET.name)


@dataclass(frozen=True)
class Arm:
    mode: Mode
    masks: str | None = None  # mask source (tests.data.moonbird_shards.MASK_SOURCES)
    visible: bool = True  # False: each mask painted whole (ordered by area only)


ARMS: dict[str, Arm] = {
    "plain": Arm("plain"),
    "dynamic-official": Arm("dynamic-mask", "official"),
    "dynamic-derived": Arm("dynamic-mask", "derived"),
    "dynamic-official-whole": Arm("dynamic-mask", "official", visible=False),
    "dynamic-derived-whole": Arm("dynamic-mask", "derived", visible=False),
}
TARGETS = ("moonbirds", "composed")


def top_k(clip: ClipModel, test: ShardSet, device: torch.device, workers: int) -> dict[str, float]:
    """Within-collection top-K accuracy of a model on the test split."""
    embedded = embed_shards(clip, test, LOCAL, device=device, batch_size=256, workers=workers)
    result = evaluate(embedded.images, embedded.texts, embedded.groups, pools=(WITHIN,), ks=KS)
    return {f"top{k}": round(result[WITHIN].micro(k), 4) for k in KS}


def arm_masks(arm: Arm, data: Prepared) -> dict[str, TraitMasks] | None:
    if arm.masks is None:
        return None
    masks = data.masks(arm.masks)
    return masks if arm.visible else {c: by_area(m) for c, m in masks.items()}


Drawn = list[tuple[Sample, Draw | None]]


def first_draws(
    shards: ShardSet, masks: dict[str, TraitMasks] | None, p: float, seed: int
) -> Drawn:
    """Each training sample with the first epoch's draw (the same draw as
    tasks.train.batches: ``draw_seed(seed, 0, key)``); None where it has no masks."""
    drawn: Drawn = []
    folder = open_folder(shards.url, LOCAL)
    for name in sorted(shards.sizes):
        for sample in read_shard(folder, name):
            mine = (masks or {}).get(sample.contract)
            if not mine:
                drawn.append((sample, None))
                continue
            rng = np.random.default_rng(draw_seed(seed, 0, sample.key))
            drawn.append((sample, draw(sample.collection, sample.traits, mine, p, rng)))
    return drawn


def painted(drawn: Drawn, masks: dict[str, TraitMasks]) -> dict[str, float]:
    """Share of each training image the draws paint over with ``masks``, at their size."""
    shares: list[float] = []
    for sample, picked in drawn:
        union = (
            None
            if picked is None
            else union_mask(picked.masked, masks[sample.contract], sample.traits)
        )
        shares.append(0.0 if union is None else float(union.mean()))
    values = np.array(shares)
    return {
        "mean": round(float(values.mean()), 3),
        "over_90_percent": round(float((values > 0.9).mean()), 3),
    }


def caption_collisions(drawn: Drawn, seed: int, batch_size: int) -> float:
    """Share of training samples whose caption, after the draw, equals another caption
    in its batch (batches of a seeded shuffle): pairs the contrastive loss must push
    apart although their texts are the same (false negatives)."""
    captions = [sample.caption if picked is None else picked.caption for sample, picked in drawn]
    order = np.random.default_rng(seed).permutation(len(captions))
    shared = 0
    for start in range(0, len(order), batch_size):
        counts = Counter(captions[i] for i in order[start : start + batch_size])
        shared += sum(n for n in counts.values() if n > 1)
    return round(shared / max(1, len(captions)), 3)


def draw_effects(data: Prepared, p: float, seed: int, batch_size: int) -> dict[str, Any]:
    """Per mask source, the painted share with masks painted whole and painted visible
    (one draw: the picks do not depend on the order), and the in-batch caption
    collisions the draw makes (``none``: plain training)."""
    train_set = data.split("train")
    plain = first_draws(train_set, None, p, seed)
    found: dict[str, Any] = {
        "none": {"caption_collisions": caption_collisions(plain, seed, batch_size)}
    }
    for source in MASK_SOURCES:
        visible = data.masks(source)
        drawn = first_draws(train_set, visible, p, seed)
        found[source] = {
            "order": sorted({m.order for m in visible.values()}),
            "whole": painted(drawn, {c: by_area(m) for c, m in visible.items()}),
            "visible": painted(drawn, visible),
            "caption_collisions": caption_collisions(drawn, seed, batch_size),
        }
    return found


def run_arm(
    name: str,
    config: TrainConfig,
    data: Prepared,
    device: torch.device,
    scratch: Path,
) -> dict[str, Any]:
    """Fine-tune one (arm, rate, seed) into ``scratch`` and evaluate it on the test split."""
    arm = ARMS[name]
    out = scratch / f"{name}-{config.lr:g}-{config.seed}"
    meter = Meter()
    result: TrainResult = train(
        dataclasses.replace(config, mode=arm.mode),
        data.split("train"),
        LOCAL,
        open_folder(str(out), LOCAL),
        arm_masks(arm, data),
        device=str(device),
        checkpoint_every_s=1e9,
        log_every=0,
    )
    seconds = meter.seconds()
    clip = load_clip(config.architecture, str(out / MODEL), LOCAL, device)
    accuracy = top_k(clip, data.split("test"), device, config.workers)
    return {
        "arm": name,
        "lr": config.lr,
        "seed": config.seed,
        "seconds": round(seconds, 1),
        "steps": result.steps,
        "epoch_loss": [round(e.loss, 4) for e in result.epochs],
        "masked_per_sample": [round(e.masked_per_sample, 2) for e in result.epochs],
        **accuracy,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and rate, the mean and spread over seeds of each top-K; then each arm's
    best rate by mean top-1, and each dynamic arm's lead over plain at the best rates."""
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        table.setdefault(run["arm"], {}).setdefault(f"{run['lr']:g}", []).append(run)
    summary: dict[str, Any] = {}
    for arm, by_rate in table.items():
        rows = {rate: _spread(mine) for rate, mine in by_rate.items()}
        best = max(rows, key=lambda rate: rows[rate]["top1_mean"])
        summary[arm] = {"by_rate": rows, "best_rate": float(best), "best": rows[best]}
    if "plain" in summary:
        plain = summary["plain"]["best"]["top1_mean"]
        for arm, found in summary.items():
            if arm != "plain":
                found["top1_points_over_plain"] = round(
                    100 * (found["best"]["top1_mean"] - plain), 2
                )
    return summary


def _spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"seeds": len(runs)}
    for k in KS:
        values = [r[f"top{k}"] for r in runs]
        found[f"top{k}_mean"] = round(statistics.fmean(values), 4)
        found[f"top{k}_stdev"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    return found


def rates_of(arm: str, args: argparse.Namespace) -> list[float]:
    return list(args.plain_rates if ARMS[arm].mode == "plain" else args.dynamic_rates)


def run_target(
    name: str,
    data: Prepared,
    base: TrainConfig,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Every (seed, arm, rate) on one target, with its floors and painted shares."""
    meter = Meter()
    train_set, test_set = data.split("train"), data.split("test")
    floors = {}
    for label, weights in (("zero_shot", base.pretrained or None), ("untrained", None)):
        torch.manual_seed(0)
        model = load_clip(base.architecture, weights, LOCAL, device)
        floors[label] = top_k(model, test_set, device, 0)
    runs = []
    with tempfile.TemporaryDirectory(prefix="nft1000-masking-") as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                for lr in rates_of(arm, args):
                    config = dataclasses.replace(base, seed=seed, lr=lr)
                    runs.append(run_arm(arm, config, data, device, Path(tmp)))
                    _progress(name, runs[-1])
    return {
        "collection": data.summary.get("collection", "Moonbirds"),
        "train": train_set.samples,
        "test": test_set.samples,
        "prepared": str(data.root),
        "chance": {f"top{k}": round(k / test_set.samples, 4) for k in KS},
        **floors,
        "draw": draw_effects(data, base.mask_probability, 0, base.batch_size),
        "runs": runs,
        "summary": summarise(runs),
        "seconds": round(meter.seconds(), 1),
    }


def _progress(target: str, run: dict[str, Any]) -> None:
    """One line per finished run on stderr: the experiment takes a while."""
    keys = ("arm", "lr", "seed", "top1", "top10", "seconds")
    print(target, " ".join(f"{k}={run[k]}" for k in keys), flush=True, file=sys.stderr)


def targets_of(args: argparse.Namespace) -> dict[str, Callable[[], Prepared]]:
    plan = QUICK_TARGET if args.quick else TARGET
    loaders: dict[str, Callable[[], Prepared]] = {
        "moonbirds": lambda: prepared_of(args),
        "composed": lambda: prepare_target(plan, args.cache),
    }
    return {name: loaders[name] for name in args.targets}


def run(args: argparse.Namespace) -> dict[str, Any]:
    unknown = [a for a in args.arms if a not in ARMS] + [
        t for t in args.targets if t not in TARGETS
    ]
    if unknown:
        raise ValueError(f"unknown arms or targets {unknown}: use {sorted(ARMS)}, {TARGETS}")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = resolve_device(args.device)
    meter = Meter()
    start = pretrain.chosen_checkpoint(args.pretrained, args.quick, args.cache)
    pretrained = str(start) if start else ""
    base = TrainConfig(
        architecture=args.architecture,
        pretrained=pretrained,
        epochs=args.epochs,
        batch_size=args.batch_size,
        precision=args.precision,
        warmup_steps=args.warmup_steps,
        workers=args.workers,
        mask_probability=args.mask_probability,
    )
    targets = {
        name: run_target(name, load(), base, args, device)
        for name, load in targets_of(args).items()
    }
    return {
        "benchmark": "masking_experiment",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "paper": PAPER,
        "budget": {
            "architecture": Path(args.architecture).name,
            "pretrained": pretrained or "none (random init)",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "warmup_steps": args.warmup_steps,
            "precision": args.precision,
            "mask_probability": args.mask_probability,
            "plain_rates": args.plain_rates,
            "dynamic_rates": args.dynamic_rates,
            "seeds": args.seeds,
            "workers": args.workers,
        },
        "targets": targets,
        "seconds": round(meter.seconds(), 1),
    }


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


QUICK = {
    "tokens": 80,
    "per_shard": 16,
    "test_share": 0.25,
    "epochs": 1,
    "batch_size": 16,
    "warmup_steps": 2,
    "workers": 0,
    "seeds": [0],
    "plain_rates": [1e-4],
    "dynamic_rates": [1e-4],
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p, tokens=5000)
    p.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS))
    p.add_argument("--architecture", default=TINY_ARCHITECTURE)
    p.add_argument(
        "--pretrained",
        default="corpus",
        help="corpus (bench.experiments.pretrain), none, or a file",
    )
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--plain-rates", type=_floats, default=[1e-6, 5e-6, 3e-5, 3e-4, 1e-3])
    p.add_argument("--dynamic-rates", type=_floats, default=[5e-6, 3e-5, 3e-4, 1e-3])
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "amp"))
    p.add_argument("--mask-probability", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument(
        "--arms",
        type=lambda s: s.split(","),
        default=["plain", "dynamic-official", "dynamic-derived"],
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small check of the whole experiment: 80 Moonbirds, a 60-token composed "
        "target, the quick pretrained checkpoint, one seed, one rate, one epoch",
    )
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, with ``--quick``'s small budget where it is given."""
    args = parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    print(json.dumps(run(parse()), indent=2))


if __name__ == "__main__":
    main()
