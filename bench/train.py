"""bench/train: training throughput of our loop (tasks.train.loop) against open_clip_train
on the same WebDataset shards; prints JSON.

Both train the same architecture from random weights on the same shards: the
fewest first shards of the Moonbirds train split (``tests.data.moonbird_shards``: real
tokens written by the export's shard writer) that hold ``--samples``, at least
one per data worker, for the epochs it takes to train ``--samples``, with the
same batch size, precision, data workers and device, one after the other:

- ours: ``tasks.train.loop.train`` in each mode of ``--modes`` (``dynamic-mask``
  draws and paints masks on every load; ``plain`` does not), logging every step;
- the named baseline: ``python -m open_clip_train.main`` (open_clip's own
  trainer, the same model code and loss) on the same shards (``--train-data``
  lists them; the epoch size comes from our ``sizes.json``),
  ``--log-every-n-steps 1``. Should it fail, its entry holds the error and ours
  are still reported.

What is measured, for each:

- ``steady_samples_per_s``: samples over seconds of the steps after the first
  ``--skip-steps`` of every epoch (data-loader start, compilation and warm-up
  left out). Ours: time between the logged steps (a callback right after each
  optimiser step, which synchronises on the loss). open_clip_train: the sum of
  its logged ``Batch (t)`` per step (also data wait plus step, synchronised by
  its ``loss.item()``), each step a full batch;
- ``wall_seconds`` and ``wall_samples_per_s``: the whole call, from before the
  model is built to the last checkpoint written (open_clip_train: the whole
  process, interpreter start included); both write a checkpoint every epoch;
- open_clip_train's ``data_share``: its logged data wait over its batch time;
- ``steady_over_open_clip_train``: each of our modes' best steady rate over the
  baseline's. ``--repeats`` runs every contender that many times, in turn, and
  keeps each one's best (for shared, noisy machines).

Note the two epochs differ: ours reads each sample once per epoch, each
worker batching its own shards (a short last batch per worker, dropped when
compiling), and starts its data workers anew every epoch; open_clip_train fills
``ceil(samples / batch)`` full batches per epoch (repeating samples to fill
them) with persistent workers. Sample counts are reported as trained.

    python -m bench.train [--architecture A] [--precision fp32|bf16|amp]
        [--batch-size B] [--device cpu|cuda] [--compile] [--samples N] [--workers W]
        [--modes dynamic-mask,plain] [--repeats R]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from bench.measure import Meter
from tasks.core.folders import open_folder
from tasks.train.loop import MODES, TrainConfig, train
from tasks.train.model import resolve_device
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import ShardSet
from tests.data.moonbird_shards import LOCAL, Prepared, add_arguments, prepared_of

# open_clip_train names mixed precision its own way.
OPEN_CLIP_PRECISION = {"fp32": "fp32", "bf16": "amp_bf16", "amp": "amp"}
_STEP_LINE = re.compile(
    r"Train Epoch: (\d+) \[\s*(\d+)/\d+ .*?\] Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+),"
    r".*?Contrastive_loss: ([\d.eE+-]+|nan)"
)


@dataclasses.dataclass(frozen=True)
class Window:
    """One epoch's steps after the first ``skip``: what steady throughput counts."""

    steps: int
    samples: int
    seconds: float  # from the end of step ``skip`` to the end of the epoch's last step
    data_seconds: float | None = None  # of it, waiting for data (open_clip_train only)


def steady(windows: list[Window]) -> dict[str, Any]:
    """Samples per second over every epoch's timed steps."""
    samples, seconds = sum(w.samples for w in windows), sum(w.seconds for w in windows)
    result: dict[str, Any] = {
        "steady_steps": sum(w.steps for w in windows),
        "steady_samples": samples,
        "steady_samples_per_s": round(samples / seconds, 1) if seconds > 0 else None,
    }
    waits = [w.data_seconds for w in windows if w.data_seconds is not None]
    if waits and seconds > 0:
        result["data_share"] = round(sum(waits) / seconds, 3)
    return result


def ours(
    config: TrainConfig, data: Prepared, shards: ShardSet, device: torch.device, skip: int
) -> dict[str, Any]:
    """Our loop, timed step by step through its log callback."""
    masks = data.masks("derived") if config.mode == "dynamic-mask" else None
    stamps: list[tuple[int, float, float]] = []  # (epoch, seconds on clock, loss) per step
    clock = Meter()

    def on_log(entry: dict[str, Any]) -> None:
        stamps.append((int(entry["epoch"]), clock.seconds(), float(entry["loss"])))

    with tempfile.TemporaryDirectory(prefix="nft1000-bench-train-") as tmp:
        meter = Meter()
        result = train(
            config, shards, LOCAL, open_folder(tmp, LOCAL), masks, device=str(device),
            checkpoint_every_s=1e9, log_every=1, on_log=on_log,
        )  # fmt: skip
        wall = meter.seconds()
    windows = []
    for epoch in result.epochs:
        times = [t for e, t, _ in stamps if e == epoch.epoch]
        if len(times) > skip:
            # Only each worker's last batch can be short: the first ``skip`` are full
            # (while every worker has a full batch to give).
            samples = epoch.samples - skip * config.batch_size
            windows.append(Window(len(times) - skip, samples, times[-1] - times[skip - 1]))
    samples = sum(e.samples for e in result.epochs)
    return {
        "name": f"ours ({config.mode})",
        "epochs": len(result.epochs),
        "steps": result.steps,
        "samples": samples,
        "wall_seconds": round(wall, 1),
        "wall_samples_per_s": round(samples / wall, 1),
        **steady(windows),
        "epoch_samples_per_s": [e.samples_per_s for e in result.epochs],
        "masked_per_sample": round(result.epochs[-1].masked_per_sample, 2),
        "last_loss": round(stamps[-1][2], 4) if stamps else None,
    }


def open_clip_train(
    config: TrainConfig, shards: ShardSet, device: torch.device, skip: int, timeout_s: float
) -> dict[str, Any]:
    """open_clip_train's CLI on the same shards; its per-step log lines parsed."""
    command = [
        sys.executable, "-m", "open_clip_train.main",
        "--dataset-type", "webdataset",
        # A list of shards; their sizes come from the folder's sizes.json.
        "--train-data", "::".join(f"{shards.url}/{name}" for name in sorted(shards.sizes)),
        "--model", _absolute(config.architecture),
        "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size),
        "--workers", str(config.workers),
        "--device", device.type,
        "--precision", OPEN_CLIP_PRECISION[config.precision],
        "--lr", str(config.lr),
        "--warmup", str(config.warmup_steps),
        "--wd", str(config.weight_decay),
        "--seed", str(config.seed),
        "--log-every-n-steps", "1",
        "--save-frequency", "1",  # a checkpoint every epoch, as ours writes
        "--report-to", "",
        "--name", "bench",
    ]  # fmt: skip
    if config.compile:
        command.append("--torchcompile")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="nft1000-bench-oct-") as tmp:
        meter = Meter()
        run = subprocess.run(
            [*command, "--logs", tmp], cwd=tmp, env=env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        wall = meter.seconds()
    if run.returncode != 0:
        raise RuntimeError(f"open_clip_train failed ({run.returncode}):\n{run.stderr[-4000:]}")
    lines = _STEP_LINE.findall(run.stdout + run.stderr)
    if not lines:
        raise RuntimeError(f"no step lines in open_clip_train's log:\n{run.stderr[-4000:]}")
    per_epoch: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for epoch, count, data_t, batch_t, _ in lines:
        per_epoch[int(epoch)].append((int(count), float(data_t), float(batch_t)))
    windows = [
        Window(
            len(steps) - skip,
            steps[-1][0] - steps[skip - 1][0],
            sum(s[2] for s in steps[skip:]),
            sum(s[1] for s in steps[skip:]),
        )
        for steps in per_epoch.values()
        if len(steps) > skip
    ]
    samples = sum(steps[-1][0] for steps in per_epoch.values())
    return {
        "name": "open_clip_train",
        "epochs": len(per_epoch),
        "steps": len(lines),
        "samples": samples,
        "wall_seconds": round(wall, 1),
        "wall_samples_per_s": round(samples / wall, 1),
        **steady(windows),
        "last_loss": float(lines[-1][4]),
    }


def _absolute(architecture: str) -> str:
    """A ``local-dir:`` model as an absolute path: open_clip_train runs in another folder."""
    schema, colon, path = architecture.partition(":")
    return f"{schema}:{Path(path).resolve()}" if colon and schema == "local-dir" else architecture


def first_shards(shards: ShardSet, samples: int, workers: int) -> ShardSet:
    """The fewest first shards holding ``samples`` (all if fewer), and at least one per
    data worker (open_clip_train deals whole shards to its workers)."""
    kept: dict[str, int] = {}
    for name in sorted(shards.sizes):
        if sum(kept.values()) >= samples and len(kept) >= max(1, workers):
            break
        kept[name] = shards.sizes[name]
    if len(kept) < workers:
        raise ValueError(f"{len(kept)} shards for {workers} workers: prepare smaller shards")
    return ShardSet(shards.url, kept)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.skip_steps < 1:
        raise ValueError("--skip-steps must be >= 1: a step is timed from the one before")
    device = resolve_device(args.device)
    data = prepared_of(args)
    shards = first_shards(data.split("train"), args.samples, args.workers)
    epochs = max(1, math.ceil(args.samples / shards.samples))
    config = TrainConfig(
        architecture=args.architecture,
        lr=args.lr,
        epochs=epochs,
        batch_size=args.batch_size,
        precision=args.precision,
        compile=args.compile,
        warmup_steps=args.warmup_steps,
        workers=args.workers,
    )
    results: list[dict[str, Any]] = []

    def done(repeat: int, run: dict[str, Any]) -> None:
        results.append({"repeat": repeat, **run})
        # Each run on stderr as it ends: a bench stopped by a time limit still tells.
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)

    for repeat in range(args.repeats):  # in turn, so a busy spell hits every contender
        for mode in args.modes:
            mine = dataclasses.replace(config, mode=mode)
            done(repeat, ours(mine, data, shards, device, args.skip_steps))
        if not args.no_baseline:
            try:
                run = open_clip_train(config, shards, device, args.skip_steps, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as e:  # ours still get reported
                run = {"name": "open_clip_train", "error": str(e)[-2000:]}
            done(repeat, run)
    best: dict[str, float] = {}
    for r in results:
        if r.get("steady_samples_per_s"):
            best[r["name"]] = max(best.get(r["name"], 0.0), r["steady_samples_per_s"])
    baseline = best.get("open_clip_train")
    ratios = {
        name: round(rate / baseline, 2)
        for name, rate in best.items()
        if baseline and name != "open_clip_train"
    }
    return {
        "benchmark": "train",
        "machine": _machine(device),
        "data": {
            "epoch_samples": shards.samples,  # the train split's first shards
            "shards": len(shards.sizes),
        },
        "config": {
            "architecture": Path(args.architecture).name,
            "pretrained": "none (random init)",
            "precision": args.precision,
            "batch_size": args.batch_size,
            "compile": args.compile,
            "workers": args.workers,
            "epochs": epochs,
            "skip_steps_per_epoch": args.skip_steps,
        },
        "runs": results,
        "best_steady_samples_per_s": best,
        "steady_over_open_clip_train": ratios,
    }


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--architecture", default=TINY_ARCHITECTURE)
    p.add_argument("--precision", default="fp32", choices=tuple(OPEN_CLIP_PRECISION))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--samples", type=int, default=2000, help="samples each run trains")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--skip-steps", type=int, default=2, help="first steps of an epoch not timed")
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    p.add_argument("--no-baseline", action="store_true", help="leave open_clip_train out")
    p.add_argument("--timeout", type=float, default=1800.0, help="open_clip_train's limit (s)")
    p.add_argument("--repeats", type=int, default=1, help="rounds of every run, in turn")
    return p


def main() -> None:
    print(json.dumps(run(parser().parse_args()), indent=2))


if __name__ == "__main__":
    main()
