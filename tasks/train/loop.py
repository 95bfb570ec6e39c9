"""Fine-tune (or train from scratch) an open_clip model on WebDataset shards.

The model, tokenizer and symmetric contrastive loss are open_clip's; the loop is
ours so that dynamic masking (tasks.train.batches) and exact resumption fit in.
Optimiser as the paper's authors set it (docs/method.md section 4): AdamW with beta2
0.98, eps 1e-6, weight decay 0.1 on weights but not gains, biases or the logit
scale, and a cosine schedule after a linear warm-up.

A run writes into its own folder (``models/<name>/<run_id>`` in S3): every
``checkpoint_every_s`` seconds and at each epoch's end ``checkpoint.pt`` (model,
optimiser, where each data worker stands) and ``log.jsonl``; at the end
``model.pt`` (weights, loadable by open_clip's ``load_checkpoint``) and
``done.json``. The run id hashes the configuration and the shard list, so
rerunning a stopped run resumes it, rerunning a finished one returns its result,
and new data or settings start a new run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import open_clip
import torch
from torch.utils.data import DataLoader

from tasks.core.folders import Folder
from tasks.core.paths import CHECKPOINT, DONE, LOG, MODEL
from tasks.core.settings import Settings
from tasks.train.batches import ShardBatches, plan_epoch
from tasks.train.masks import TraitMasks
from tasks.train.model import ClipModel, load_clip, resolve_device
from tasks.train.model_configs import training_defaults
from tasks.train.shards import ShardSet

Mode = Literal["plain", "dynamic-mask"]
Precision = Literal["fp32", "bf16", "amp"]
MODES: tuple[str, ...] = ("plain", "dynamic-mask")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "amp")
# The authors' learning rates (docs/method.md section 4), for fine-tuning pretrained weights.
AUTHORS_LR: dict[str, float] = {"dynamic-mask": 3e-5, "plain": 5e-6}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights a run ends with (and so its run id)."""

    architecture: str
    pretrained: str = ""
    mode: Mode = "dynamic-mask"
    mask_probability: float = 0.5
    lr: float = 3e-5
    epochs: int = 1
    batch_size: int = 256
    precision: Precision = "bf16"
    compile: bool = False
    warmup_steps: int = 100
    weight_decay: float = 0.1
    workers: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.mask_probability <= 1:
            raise ValueError(f"mask_probability must be in [0, 1], got {self.mask_probability}")
        if self.batch_size < 2 or self.epochs < 1 or self.lr <= 0 or self.workers < 0:
            raise ValueError("batch_size >= 2, epochs >= 1, lr > 0 and workers >= 0 please")

    @classmethod
    def resolve(cls, architecture: str, pretrained: str, **given: Any) -> TrainConfig:
        """The config a run gets: what it was given (None: not given), else the model's
        measured training defaults (tasks.train.model_configs), else ours; the learning rate
        then defaults to the authors' rate for the mode."""
        chosen = {
            **training_defaults(architecture),
            **{k: v for k, v in given.items() if v is not None},
        }
        mode = chosen.get("mode", cls.mode)
        chosen.setdefault("lr", AUTHORS_LR[mode])
        return cls(architecture=architecture, pretrained=pretrained, **chosen)

    def run_id(self, data: ShardSet) -> str:
        doc = {"config": asdict(self), "data": data.url, "sizes": data.sizes}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    steps: int
    samples: int
    loss: float  # mean over the epoch's steps run in this process
    masked_per_sample: float  # traits hidden per sample, on average
    seconds: float
    samples_per_s: float


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    config: TrainConfig
    steps: int
    samples: int  # trained in this process (a resumed run counts only its part)
    resumed_from_step: int
    epochs: tuple[EpochStats, ...] = field(default_factory=tuple)
    device: str = "cpu"
    finished_before: bool = False  # the run was already complete: nothing trained


@dataclass
class _State:
    epoch: int = 0
    done: list[int] = field(default_factory=list)  # batches delivered per worker
    step: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig,
    shards: ShardSet,
    settings: Settings,
    out: Folder,
    masks: Mapping[str, TraitMasks] | None = None,
    *,
    device: str = "auto",
    checkpoint_every_s: float = 600.0,
    checkpoint_every_steps: int = 0,
    log_every: int = 10,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``config`` on ``shards`` into ``out``, resuming what ``out`` holds."""
    run_id = config.run_id(shards)
    if out.exists(DONE):
        return _finished(json.loads(out.get(DONE)), run_id, config)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    clip = load_clip(config.architecture, config.pretrained or None, settings, dev)
    run = _Run(config, clip, dev)
    state = _restore(out, run.model, run.optimiser, run.scaler, run_id)
    resumed_from = state.step
    workers = max(1, config.workers)
    total_steps = planned_steps(config, shards)
    last_save = time.monotonic()
    trained: list[EpochStats] = []  # epochs run in this process

    def save() -> None:
        nonlocal last_save
        _save_checkpoint(out, run.model, run.optimiser, run.scaler, state, run_id)
        last_save = time.monotonic()

    def after_step(loss: torch.Tensor, lr: float, epoch: int, rate: float) -> None:
        if log_every and state.step % log_every == 0:
            entry = {
                "step": state.step,
                "epoch": epoch,
                "loss": float(loss),
                "lr": lr,
                "samples_per_s": rate,
            }
            state.log.append(entry)
            if on_log is not None:
                on_log(entry)
        due = checkpoint_every_steps and state.step % checkpoint_every_steps == 0
        if due or time.monotonic() - last_save > checkpoint_every_s:
            save()

    for epoch in range(state.epoch, config.epochs):
        if len(state.done) != workers:
            state.done = [0] * workers
        batches = _loader(config, shards, settings, run.clip, masks, epoch, state.done, dev)
        stats = run.epoch(batches, epoch, state, total_steps, after_step)
        trained.append(stats)
        state.epochs.append(asdict(stats))
        state.epoch, state.done = epoch + 1, [0] * workers
        save()

    result = TrainResult(
        run_id=run_id,
        config=config,
        steps=state.step,
        samples=sum(s.samples for s in trained),
        resumed_from_step=resumed_from,
        epochs=tuple(EpochStats(**e) for e in state.epochs),
        device=str(dev),
    )
    _write_model(out, run.model)
    out.put(DONE, json.dumps(_done_doc(result), indent=1).encode())
    return result


class _Run:
    """The model, optimiser and loss of one run, and how one step and one epoch go."""

    def __init__(self, config: TrainConfig, clip: ClipModel, device: torch.device) -> None:
        self.config, self.clip, self.model, self.device = config, clip, clip.model, device
        self.optimiser = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay),
            lr=config.lr,
            betas=(0.9, 0.98),
            eps=1e-6,
        )
        uses_scaler = _uses_scaler(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if uses_scaler else None
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.loss_fn = open_clip.ClipLoss()
        self.autocast = _autocast(config.precision, self.device)
        self.model.train()

    def step(self, images: torch.Tensor, texts: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimiser step on one batch at learning rate ``lr``; the batch's loss."""
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        with self.autocast:
            features = self.forward(images, texts)
            loss = self.loss_fn(
                features["image_features"],
                features["text_features"],
                features["logit_scale"],
            )
        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            loss.backward()
            self.optimiser.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))  # type: ignore[operator]
        loss_value: torch.Tensor = loss.detach()
        return loss_value

    def epoch(
        self,
        batches: Iterable[dict[str, Any]],
        epoch: int,
        state: _State,
        total_steps: int,
        after_step: Callable[[torch.Tensor, float, int, float], None],
    ) -> EpochStats:
        """Every batch of one epoch; ``state`` records where each data worker stands."""
        config, dev = self.config, self.device
        started, samples, steps, hidden = time.perf_counter(), 0, 0, 0
        loss_sum = torch.zeros((), device=dev)
        for batch in batches:
            state.done[batch["worker"]] = batch["index"] + 1
            count = len(batch["keys"])
            if count < 2:
                continue  # corrupt images left one sample: nothing to contrast
            lr = cosine_lr(state.step, total_steps, config.lr, config.warmup_steps)
            images = batch["images"].to(dev, non_blocking=True)
            texts = batch["texts"].to(dev, non_blocking=True)
            loss = self.step(images, texts, lr)
            state.step += 1
            steps += 1
            samples += count
            hidden += sum(batch["masked"])
            loss_sum += loss
            after_step(loss, lr, epoch, samples / (time.perf_counter() - started))
        seconds = time.perf_counter() - started
        return EpochStats(
            epoch=epoch,
            steps=steps,
            samples=samples,
            loss=float(loss_sum) / max(steps, 1),
            masked_per_sample=hidden / max(samples, 1),
            seconds=round(seconds, 3),
            samples_per_s=round(samples / seconds, 2) if seconds > 0 else 0.0,
        )


def _loader(
    config: TrainConfig,
    shards: ShardSet,
    settings: Settings,
    clip: ClipModel,
    masks: Mapping[str, TraitMasks] | None,
    epoch: int,
    done: list[int],
    dev: torch.device,
) -> DataLoader[dict[str, Any]]:
    """The epoch's batches, skipping what each data worker delivered before a stop."""
    dynamic = config.mode == "dynamic-mask"
    data = ShardBatches(
        shards,
        settings,
        clip.train_transform,
        clip.tokenizer,
        epoch=epoch,
        seed=config.seed,
        batch_size=config.batch_size,
        workers=config.workers,
        drop_last=config.compile,  # fixed batch shapes: no recompiles for a short last batch
        masks=(masks or {}) if dynamic else {},
        mask_probability=config.mask_probability if dynamic else 0,
        skip=list(done),
    )
    return DataLoader(
        data,
        batch_size=None,
        num_workers=config.workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )


def planned_steps(config: TrainConfig, shards: ShardSet) -> int:
    """The optimiser steps of the whole run (the schedule's length and the progress bar's)."""
    return sum(
        plan_epoch(shards, e, config.seed, config.workers, config.batch_size, config.compile).total
        for e in range(config.epochs)
    )


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1 + math.cos(math.pi * progress)) * base


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only, as open_clip_train does."""
    decay: list[torch.nn.Parameter] = []
    keep: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "logit_scale" in name or name.endswith(".bias")
        (keep if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]


def _uses_scaler(config: TrainConfig, device: torch.device) -> bool:
    return config.precision == "amp" and device.type == "cuda"


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "amp": torch.float16}.get(precision, torch.float32)
    enabled = precision != "fp32" and not (precision == "amp" and device.type != "cuda")
    return torch.autocast(device.type, dtype=dtype, enabled=enabled)


def _save_checkpoint(
    out: Folder,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: _State,
    run_id: str,
) -> None:
    doc = {
        "run_id": run_id,
        "state_dict": model.state_dict(),
        "optimizer": optimiser.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": state.epoch,
        "done": list(state.done),
        "step": state.step,
        "epochs": json.dumps(state.epochs),
    }
    buffer = io.BytesIO()
    torch.save(doc, buffer)
    out.put(CHECKPOINT, buffer.getvalue())
    out.put(LOG, "".join(json.dumps(e) + "\n" for e in state.log).encode())


def _restore(
    out: Folder,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    run_id: str,
) -> _State:
    if not out.exists(CHECKPOINT):
        return _State()
    doc = torch.load(io.BytesIO(out.get(CHECKPOINT)), map_location="cpu", weights_only=True)
    if doc.get("run_id") != run_id:
        raise ValueError(f"{CHECKPOINT} in {out.url} belongs to run {doc.get('run_id')}")
    model.load_state_dict(doc["state_dict"])
    optimiser.load_state_dict(doc["optimizer"])
    if scaler is not None and doc.get("scaler"):
        scaler.load_state_dict(doc["scaler"])
    lines = out.get(LOG).decode().splitlines() if out.exists(LOG) else []
    log = [json.loads(line) for line in lines]
    return _State(
        epoch=int(doc["epoch"]),
        done=[int(d) for d in doc["done"]],
        step=int(doc["step"]),
        log=log,
        epochs=json.loads(doc["epochs"]),
    )


def _write_model(out: Folder, model: torch.nn.Module) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, buffer)
    out.put(MODEL, buffer.getvalue())


def _done_doc(result: TrainResult) -> dict[str, Any]:
    doc = asdict(result)
    doc["model"] = MODEL
    return doc


def _finished(doc: dict[str, Any], run_id: str, config: TrainConfig) -> TrainResult:
    if doc.get("run_id") != run_id:
        raise ValueError(f"{DONE} belongs to run {doc.get('run_id')}, not {run_id}")
    fields = {f.name for f in dataclasses.fields(EpochStats)}
    return TrainResult(
        run_id=run_id,
        config=config,
        steps=int(doc["steps"]),
        samples=0,
        resumed_from_step=int(doc["steps"]),
        epochs=tuple(EpochStats(**{k: e[k] for k in fields}) for e in doc["epochs"]),
        device=str(doc.get("device", "")),
        finished_before=True,
    )
