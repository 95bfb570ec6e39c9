"""Training runs as later stages see them: where a run lives, the pointer to the last
finished one, what a model name means, and the device and precision to run on.

A finished nft1000/finetune run writes ``models/<name>/latest.json`` and
``models/latest.json`` (tasks.core.paths); nft1000/evaluate and nft1000/cvi read
them through ``resolve_model``, so "latest" means the same model to both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from tasks.core import paths
from tasks.core.folders import open_folder
from tasks.core.json_bounded import loads_bounded
from tasks.core.settings import Settings
from tasks.train.loop import TrainConfig

PRETRAINED = "pretrained"  # the settings' model with its pretrained weights


@dataclass(frozen=True)
class ModelRef:
    """The weights a name resolves to, and the label results are stored under."""

    architecture: str
    weights: str  # an open_clip tag, a checkpoint file (local or s3://) or "" (random)
    label: str


def run_folder_name(config: TrainConfig) -> str:
    """``<architecture>-<mode>``, with the folder name of ``local-dir:`` architectures."""
    arch = config.architecture.removeprefix("local-dir:").rstrip("/").rsplit("/", 1)[-1]
    return paths.slug(arch, config.mode)


def publish_run(
    settings: Settings, name: str, run_id: str, config: TrainConfig, train_data: str
) -> dict[str, Any]:
    """Point ``models/<name>/latest.json`` and ``models/latest.json`` at a finished run."""
    pointer = {
        "name": name,
        "run_id": run_id,
        "model": paths.url(settings, paths.run_folder(name, run_id), paths.MODEL),
        "architecture": config.architecture,
        "train_data": train_data,
        "config": asdict(config),
    }
    models = open_folder(paths.url(settings, paths.MODELS), settings)
    for path in (paths.latest(name), paths.latest()):
        models.put(path, json.dumps(pointer, indent=1).encode())
    return pointer


def has_finished_run(settings: Settings) -> bool:
    """Whether any nft1000/finetune run has finished (``models/latest.json`` exists)."""
    return open_folder(paths.url(settings, paths.MODELS), settings).exists(paths.latest())


def resolve_model(model: str, architecture: str | None, settings: Settings) -> ModelRef:
    """What ``model`` names: "latest" (the last finished run), a run name under
    ``models/``, "pretrained" (the settings' model and weights) or a ``.pt`` file."""
    if model == PRETRAINED:
        arch = architecture or settings.model
        return ModelRef(arch, settings.pretrained, f"{arch}:{settings.pretrained or 'random'}")
    if model.endswith(".pt"):
        return ModelRef(architecture or settings.model, model, model)
    models = open_folder(paths.url(settings, paths.MODELS), settings)
    pointer = paths.latest(None if model == "latest" else model)
    if not models.exists(pointer):
        raise ValueError(f"no finished nft1000/finetune run at {paths.MODELS}/{pointer}")
    doc = loads_bounded(models.read(pointer, 1024 * 1024), max_bytes=1024 * 1024)
    return ModelRef(str(doc["architecture"]), str(doc["model"]), f"{doc['name']}/{doc['run_id']}")
