"""open_clip model configs shipped with the project, as ``local-dir:`` folders.

A folder may also hold ``training.json``: the training defaults measured for that
model (its ``why`` says how), which nft1000/finetune uses for whatever parameter
a run leaves out. Kept free of torch imports so the CLI can name them without
loading torch.
"""

import json
from pathlib import Path
from typing import Any

TINY = Path(__file__).parent / "tiny_clip"
# 3.4M parameters at 64 px: trains on a CPU in the tests and the demo.
TINY_ARCHITECTURE = f"local-dir:{TINY}"

TRAINING_FILE = "training.json"
# What a training.json may set: TrainConfig fields a model's own budget decides.
TRAINING_KEYS = frozenset({"mode", "lr", "epochs", "batch_size", "warmup_steps", "precision"})


def training_defaults(architecture: str) -> dict[str, Any]:
    """The measured training defaults of a ``local-dir:`` model config; {} for others."""
    if not architecture.startswith("local-dir:"):
        return {}
    path = Path(architecture.removeprefix("local-dir:")) / TRAINING_FILE
    if not path.is_file():
        return {}
    values = {k: v for k, v in json.loads(path.read_text()).items() if k != "why"}
    unknown = set(values) - TRAINING_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown training defaults {sorted(unknown)}")
    return values
