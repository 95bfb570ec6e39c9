"""Train: fine-tune (or train) an open_clip model on exported WebDataset shards, plainly
or with dynamic masking.

Reads ``exports/webdataset/train/`` and the tables (for trait masks); writes
``masks/<contract>.{npz,json}``, ``models/<name>/<run id>/`` and the
``latest.json`` pointers (keys in tasks.core.paths).

Entry points: ``TrainConfig`` and ``train`` (the run), ``open_shards`` (the
exported split), ``build_masks``/``load_masks`` (trait masks), and the run
helpers later stages share: ``resolve_model``, ``resolve_device``,
``resolve_precision``, ``load_clip``.
"""

from tasks.train.loop import Mode, Precision, TrainConfig, TrainResult, planned_steps, train
from tasks.train.masks.store import (
    MaskReport,
    build_collection_masks,
    build_masks,
    load_all_masks,
    mask_targets,
)
from tasks.train.model import ClipModel, load_clip, resolve_device, resolve_precision
from tasks.train.runs import (
    ModelRef,
    has_finished_run,
    publish_run,
    resolve_model,
    run_folder_name,
)
from tasks.train.shards import ShardSet, open_shards

__all__ = [
    "ClipModel",
    "MaskReport",
    "Mode",
    "ModelRef",
    "Precision",
    "ShardSet",
    "TrainConfig",
    "TrainResult",
    "build_collection_masks",
    "build_masks",
    "has_finished_run",
    "load_all_masks",
    "load_clip",
    "mask_targets",
    "open_shards",
    "planned_steps",
    "publish_run",
    "resolve_device",
    "resolve_model",
    "resolve_precision",
    "run_folder_name",
    "train",
]
