"""Build an open_clip model, its transforms and tokenizer from an architecture and weights.

``architecture`` is an open_clip model name ("ViT-B-32"), or ``local-dir:<folder>``
holding an ``open_clip_config.json`` (``tasks.train.model_configs.TINY`` is one, small enough to
train on a CPU). ``pretrained`` is an open_clip tag ("openai", "laion2b_s34b_b79k"),
a checkpoint file (local or ``s3://``), or empty for random weights. open_clip
ignores ``pretrained`` for ``local-dir:`` models, so checkpoint files are always
loaded here, through open_clip's own ``load_checkpoint`` (weights only, no pickles).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from PIL import Image

from tasks.core.folders import open_folder
from tasks.core.settings import Settings


@dataclass
class ClipModel:
    model: torch.nn.Module
    train_transform: Callable[[Image.Image], torch.Tensor]
    eval_transform: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]


def is_checkpoint(pretrained: str) -> bool:
    """A file to load rather than an open_clip tag."""
    return pretrained.startswith("s3://") or "/" in pretrained or pretrained.endswith(".pt")


def load_clip(
    architecture: str, pretrained: str | None, settings: Settings, device: str | torch.device
) -> ClipModel:
    tag = pretrained if pretrained and not is_checkpoint(pretrained) else None
    model, train_tf, eval_tf = open_clip.create_model_and_transforms(
        architecture, pretrained=tag, device="cpu", output_dict=True
    )
    if pretrained and is_checkpoint(pretrained):
        with local_copy(pretrained, settings) as path:
            open_clip.load_checkpoint(model, str(path))
    return ClipModel(
        model.to(device),
        train_tf,
        eval_tf,
        open_clip.get_tokenizer(architecture),
    )


@contextmanager
def local_copy(location: str, settings: Settings) -> Iterator[Path]:
    """A local path for a checkpoint; ``s3://`` ones are downloaded to a temporary file."""
    if not location.startswith("s3://"):
        yield Path(location)
        return
    parent, _, name = location.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="nft1000-ckpt-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(open_folder(parent, settings).get(name))
        yield path


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on a GPU, fp32 elsewhere; otherwise the named precision."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" else "fp32"
