"""open_clip_train's own CLI trains a tiny CLIP on our shards as they are, on the CPU.

Real Moonbirds go through the S3 store into WebDataset shards; then
``python -m open_clip_train.main`` runs one epoch with no ``--train-num-samples``,
so the epoch size it logs comes from our ``sizes.json``. The model is
``tasks/train/model_configs/tiny_clip`` (3.4 M parameters) through open_clip's
``local-dir:`` schema; no weights are downloaded.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.train.model_configs import TINY
from tests.services.test_webdataset import export, moonbird_items

TINY_CLIP = TINY
TRAIN, VALIDATION, PER_SHARD, BATCH = 240, 48, 120, 24
_TRAIN_LINE = re.compile(r"Train Epoch: 0 \[\s*(\d+)/(\d+) \(100%\)\].* Contrastive_loss: (\S+)")
_EVAL_LINE = re.compile(
    r"Eval Epoch: 1 image_to_text.*\tclip_val_loss: (\S+)\t.*num_samples: (\S+)"
)


def test_open_clip_train_runs_an_epoch_on_exported_shards(
    store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    items = moonbird_items(store, range(TRAIN), "train")
    items += moonbird_items(store, range(TRAIN, TRAIN + VALIDATION), "validation")
    results, index = export(items, str(tmp_path / "wds"), settings, per_shard=PER_SHARD)
    assert [(r.name, r.samples) for r in results] == [
        ("train/shard-000000.tar", PER_SHARD),
        ("train/shard-000001.tar", PER_SHARD),
        ("validation/shard-000000.tar", VALIDATION),
    ]
    splits = index["splits"]
    assert isinstance(splits, dict)

    command = [
        sys.executable, "-m", "open_clip_train.main",
        "--dataset-type", "webdataset",
        "--train-data", splits["train"]["train_data"],
        "--val-data", splits["validation"]["train_data"],
        "--val-num-samples", str(splits["validation"]["samples"]),
        "--model", f"local-dir:{TINY_CLIP}",
        "--epochs", "1",
        "--batch-size", str(BATCH),
        "--workers", "1",
        "--device", "cpu",
        "--precision", "fp32",
        "--lr", "1e-3",
        "--warmup", "2",
        "--log-every-n-steps", "1",
        "--save-frequency", "1",
        "--report-to", "",
        "--logs", str(tmp_path / "logs"),
        "--name", "tiny",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"open_clip_train: {seconds:.1f} s")

    run_dir = tmp_path / "logs" / "tiny"
    assert (run_dir / "checkpoints" / "epoch_1.pt").stat().st_size > 1_000_000
    log = (run_dir / "out.log").read_text()
    done = _TRAIN_LINE.findall(log)
    assert len(done) == 1, log[-3000:]
    seen, epoch_size, loss = done[0]
    assert (int(seen), int(epoch_size)) == (TRAIN, TRAIN)  # epoch size read from sizes.json
    assert math.isfinite(float(loss))
    assert len(re.findall(r"Train Epoch: 0 \[", log)) == TRAIN // BATCH  # one line per step
    evaluated = _EVAL_LINE.findall(log)
    assert len(evaluated) == 1, log[-3000:]
    val_loss, val_samples = evaluated[0]
    assert math.isfinite(float(val_loss)) and float(val_samples) == VALIDATION
