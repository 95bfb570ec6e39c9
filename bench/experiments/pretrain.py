"""bench/experiments/pretrain: a "pretrained" tiny CLIP made here, from a corpus that holds
neither evaluation target of the masking experiment; prints JSON.

The paper fine-tunes a pretrained CLIP (docs/method.md section 4). No weights can be
downloaded here, so this trains the tiny CLIP (``TINY_ARCHITECTURE``: 3.4M parameters
at 64 px, the only open_clip model that trains in minutes on 2 CPU cores) from random
weights, plain contrastive (mode ``plain``, fp32), through ``tasks.train.loop.train``,
on the corpus of ``tests.data.corpus``: composed collections of varied layers,
colours, geometry and caption templates, and real Loot bags, with no Moonbirds and
not ``Composed target k=06``.

The run goes into ``<cache>/pretrained-<digest>/`` (the digest covers the corpus's
digest and the training parameters), whose ``model.pt`` is the checkpoint;
``pretrained.json`` finishes it, so the same parameters return it at once (a run
stopped mid-way resumes from its last epoch's ``checkpoint.pt``). The training code
is not in the digest, so a refactor of tasks/train does not throw away a 10-minute
run; its hash is in the report (``training.code``): bump ``VERSION`` when a change
alters what plain training computes.
``pretrained_checkpoint`` is that for other benches. ``--upload s3://bucket/key.pt``
copies ``model.pt`` there with the stack's settings (``eval "$(nft1000 stack env)"``),
so ``prefect deployment run nft1000/finetune -p pretrained=s3://bucket/key.pt``
starts from it.

    python -m bench.experiments.pretrain [--collections 40] [--tokens 400]
        [--loot 2000] [--epochs 2] [--batch-size 64] [--lr 1e-3] [--warmup-steps 100]
        [--seed 0] [--workers 1] [--quick] [--cache DIR] [--upload s3://bucket/key.pt]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.measure import Meter
from tasks.core.folders import open_folder
from tasks.core.paths import MODEL
from tasks.core.settings import Settings, load_settings
from tasks.train.loop import TrainConfig, TrainResult, train
from tasks.train.model_configs import TINY, TINY_ARCHITECTURE
from tasks.train.shards import open_shards
from tests.data.corpus import CorpusPlan, prepare
from tests.data.moonbird_shards import CACHE, LOCAL, PROJECT_ROOT

DONE = "pretrained.json"
VERSION = 1  # bump when what a pretrained folder holds changes
# The code that trains the weights: hashed into the report, not into the folder's name.
SOURCES = (
    "tasks/train/loop.py",
    "tasks/train/batches.py",
    "tasks/train/model.py",
    "tasks/train/shards.py",
)


@dataclass(frozen=True)
class PretrainParams:
    """The corpus and the training budget; together they name the checkpoint."""

    corpus: CorpusPlan = field(default_factory=CorpusPlan)
    # Measured on 2 CPU cores, default corpus: an epoch 288 s with the cores shared, 111 s
    # alone; the corpus 4.3 min once. Two epochs: 8 min from nothing when alone.
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    workers: int = 1

    def config(self) -> TrainConfig:
        """Plain contrastive training from random weights, fp32 on the CPU."""
        return TrainConfig(
            architecture=TINY_ARCHITECTURE,
            pretrained="",
            mode="plain",
            lr=self.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            precision="fp32",
            warmup_steps=self.warmup_steps,
            workers=self.workers,
            seed=self.seed,
        )

    def digest(self) -> str:
        """Names the checkpoint's folder: the corpus's digest and the training parameters."""
        training = {k: v for k, v in asdict(self).items() if k != "corpus"}
        doc = {"version": VERSION, "corpus": self.corpus.digest(), **training}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


# The --quick run (and the test's): a tiny corpus and one epoch, well under a minute.
QUICK = PretrainParams(CorpusPlan(collections=3, tokens=40, loot=20), epochs=1, warmup_steps=2)


def pretrain(params: PretrainParams, cache: Path = CACHE) -> dict[str, Any]:
    """The pretraining run's report, training it now unless an earlier run finished it."""
    out = (cache / f"pretrained-{params.digest()}").resolve()
    if (out / DONE).is_file():
        earlier: dict[str, Any] = json.loads((out / DONE).read_text())
        return earlier | {"cached": True}
    meter = Meter()
    corpus = prepare(params.corpus, cache)
    corpus_seconds = meter.seconds()
    config = params.config()
    torch.manual_seed(config.seed)
    result: TrainResult = train(
        config,
        open_shards(corpus.train, LOCAL),
        LOCAL,
        open_folder(str(out), LOCAL),
        None,
        device="cpu",
        checkpoint_every_s=1e9,
        log_every=0,
    )
    trained = sum(e.seconds for e in result.epochs)
    report = {
        "benchmark": "pretrain",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "corpus": {
            k: corpus.summary[k]
            for k in (
                "composed_collections",
                "tokens_per_collection",
                "trait_type_sets",
                "trait_types_used",
                "values_used",
                "templates",
                "loot_bags",
                "samples",
                "written",
                "failed",
                "root",
            )
        }
        | {"excluded": list(params.corpus.excluded), "digest": params.corpus.digest()},
        "training": {
            **asdict(config),
            "architecture": Path(TINY_ARCHITECTURE.removeprefix("local-dir:")).name,
            "run_id": result.run_id,
            "code": training_code(),
            "steps": result.steps,
        },
        "epoch_loss": [round(e.loss, 4) for e in result.epochs],
        "epoch_seconds": [round(e.seconds, 1) for e in result.epochs],
        "samples_per_s": round(result.samples / trained, 1) if trained else None,
        "seconds": {"corpus": round(corpus_seconds, 1), "total": round(meter.seconds(), 1)},
        "checkpoint": str(out / MODEL),
    }
    (out / DONE).write_text(json.dumps(report, indent=1) + "\n")
    return report | {"cached": False}


def training_code() -> str:
    """A hash of the training code and the model config, to tell runs apart by."""
    code = hashlib.sha256(b"".join((PROJECT_ROOT / p).read_bytes() for p in SOURCES))
    code.update((TINY / "open_clip_config.json").read_bytes())
    return code.hexdigest()[:12]


def pretrained_checkpoint(params: PretrainParams, cache: Path = CACHE) -> Path:
    """The checkpoint (``model.pt``) pretrained with ``params``, trained now if missing."""
    return Path(pretrain(params, cache)["checkpoint"])


def chosen_checkpoint(choice: str, quick: bool = False, cache: Path = CACHE) -> Path | None:
    """What another bench's ``--pretrained`` names: ``corpus`` (this bench's checkpoint,
    its ``--quick`` one with ``quick``; trained now if missing), ``none`` (random
    weights) or a checkpoint file."""
    if choice == "none":
        return None
    if choice == "corpus":
        return pretrained_checkpoint(QUICK if quick else PretrainParams(), cache)
    return Path(choice)


def upload(checkpoint: Path, url: str, settings: Settings) -> str:
    """Copy a checkpoint to an ``s3://bucket/key.pt`` URL, where nft1000/finetune reads it."""
    if not url.startswith("s3://") or url.endswith("/"):
        raise ValueError(f"upload wants s3://bucket/key.pt, got {url!r}")
    parent, _, name = url.rpartition("/")
    open_folder(parent, settings).put(name, checkpoint.read_bytes())
    return url


def params_of(args: argparse.Namespace) -> PretrainParams:
    if args.quick:
        return QUICK
    return PretrainParams(
        CorpusPlan(args.collections, args.tokens, args.loot, seed=args.seed),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        workers=args.workers,
    )


def run(args: argparse.Namespace, settings: Settings | None = None) -> dict[str, Any]:
    """The report; with ``--upload``, after copying the checkpoint with ``settings``
    (default: the stack's, from the environment)."""
    report = pretrain(params_of(args), args.cache)
    if args.upload:
        uploaded = upload(Path(report["checkpoint"]), args.upload, settings or load_settings())
        report["uploaded"] = uploaded
    return report


def parser() -> argparse.ArgumentParser:
    base = PretrainParams()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--collections", type=int, default=base.corpus.collections)
    p.add_argument("--tokens", type=int, default=base.corpus.tokens)
    p.add_argument("--loot", type=int, default=base.corpus.loot)
    p.add_argument("--epochs", type=int, default=base.epochs)
    p.add_argument("--batch-size", type=int, default=base.batch_size)
    p.add_argument("--lr", type=float, default=base.lr)
    p.add_argument("--warmup-steps", type=int, default=base.warmup_steps)
    p.add_argument("--seed", type=int, default=base.seed)
    p.add_argument("--workers", type=int, default=base.workers)
    p.add_argument("--quick", action="store_true", help="tiny corpus, one epoch (the test's)")
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--upload", default="", help="also copy model.pt to this s3:// URL")
    return p


def main() -> None:
    print(json.dumps(run(parser().parse_args()), indent=2))


if __name__ == "__main__":
    main()
