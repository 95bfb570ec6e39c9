"""Dynamic-masking training on real Moonbirds shards in the real S3, with the tiny CLIP on CPU."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.core.folders import open_folder
from tasks.core.paths import CHECKPOINT, DONE, MODEL
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.train.batches import ShardBatches
from tasks.train.loop import TrainConfig, train
from tasks.train.masks import Key, Mask, TraitMasks, by_area
from tasks.train.masks.draw import FILL, caption
from tasks.train.model import load_clip
from tasks.train.model_configs import TINY_ARCHITECTURE, training_defaults
from tasks.train.shards import ShardSet, open_shards, read_shard
from tests.support.train_data import MOONBIRDS, moonbird_items, write_split

TRAIN = 40


@pytest.fixture
def shards(store: ObjectStore, settings: Settings, tmp_path: Path) -> ShardSet:
    root = str(tmp_path / "export")
    write_split(moonbird_items(store, range(TRAIN), "train"), root, settings, per_shard=16)
    return open_shards(f"{root}/train", settings)


def _box_masks(shards: ShardSet, settings: Settings) -> dict[str, TraitMasks]:
    """A distinct 4x4 box per trait value at the Moonbirds' native 42x42, all level."""
    folder = open_folder(shards.url, settings)
    keys = sorted({t for n in shards.sizes for s in read_shard(folder, n) for t in s.traits})
    masks: dict[Key, Mask] = {}
    for i, key in enumerate(keys):
        mask = np.zeros((42, 42), bool)
        row, col = divmod(i % 100, 10)
        mask[row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] = True
        masks[key] = mask
    return {MOONBIRDS[1]: by_area(masks)}


def _identity(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())


def _batches(shards: ShardSet, settings: Settings, epoch: int, **kw: Any) -> list[dict[str, Any]]:
    data = ShardBatches(
        shards,
        settings,
        _identity,
        lambda texts: torch.tensor([len(t) for t in texts]),
        epoch=epoch,
        seed=7,
        batch_size=8,
        workers=1,
        **kw,
    )
    return list(data)


def _scaled(mask: Mask, shape: tuple[int, ...]) -> Mask:
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(image) > 127


def test_a_trait_leaves_the_caption_exactly_when_its_region_is_painted_over(
    shards: ShardSet, settings: Settings
) -> None:
    masks = _box_masks(shards, settings)[MOONBIRDS[1]]
    folder = open_folder(shards.url, settings)
    originals = {s.key: s for n in shards.sizes for s in read_shard(folder, n)}
    texts: list[str] = []

    def tokenizer(batch: list[str]) -> torch.Tensor:
        texts.extend(batch)
        return torch.zeros(len(batch))

    data = ShardBatches(
        shards, settings, _identity, tokenizer, epoch=0, seed=7, batch_size=TRAIN, workers=1,
        masks={MOONBIRDS[1]: masks}, mask_probability=0.5,
    )  # fmt: skip
    (batch,) = list(data)
    assert len(batch["keys"]) == len(texts) == TRAIN
    hidden = traits = 0
    for i, (key, text) in enumerate(zip(batch["keys"], texts, strict=True)):
        sample = originals[key]
        pixels = batch["images"][i].numpy()
        original = np.asarray(sample.decode().convert("RGB"))
        painted = {
            t: (pixels[_scaled(masks[t], pixels.shape)] == FILL).all() for t in sample.traits
        }
        kept = [t for t in sample.traits if not painted[t]]
        assert text == caption("Moonbirds", kept)
        assert batch["masked"][i] == len(sample.traits) - len(kept)
        covered = np.zeros(pixels.shape[:2], bool)
        for trait in sample.traits:
            if painted[trait]:
                covered |= _scaled(masks[trait], pixels.shape)
        assert (pixels[~covered] == original[~covered]).all()
        hidden += batch["masked"][i]
        traits += len(sample.traits)
    # p = 0.5 over about 7 traits a token: far from none and from all.
    assert 0.3 * traits < hidden < 0.7 * traits


def test_every_load_draws_anew_and_a_replay_draws_the_same(
    shards: ShardSet, settings: Settings
) -> None:
    masks = _box_masks(shards, settings)
    draws = {}
    for epoch in range(4):
        batches = _batches(shards, settings, epoch, masks=masks, mask_probability=0.5)
        draws[epoch] = {k: m for b in batches for k, m in zip(b["keys"], b["masked"], strict=True)}
        again = _batches(shards, settings, epoch, masks=masks, mask_probability=0.5)
        assert [b["images"].tolist() for b in again] == [b["images"].tolist() for b in batches]
    assert all(len(d) == TRAIN for d in draws.values())
    # The number hidden per token changes between epochs for most tokens.
    changed = sum(len({draws[e][k] for e in draws}) > 1 for k in draws[0])
    assert changed > TRAIN // 2


def test_a_resumed_epoch_delivers_the_batches_not_yet_delivered(
    shards: ShardSet, settings: Settings
) -> None:
    whole = _batches(shards, settings, 1)
    rest = _batches(shards, settings, 1, skip=[2])
    assert [b["index"] for b in rest] == [b["index"] for b in whole[2:]]
    assert [b["keys"] for b in rest] == [b["keys"] for b in whole[2:]]
    assert sorted(k for b in whole for k in b["keys"]) == sorted(
        f"{MOONBIRDS[0]}_{i}" for i in range(TRAIN)
    )


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        architecture=TINY_ARCHITECTURE, mode="dynamic-mask", lr=1e-3, epochs=2,
        batch_size=8, precision="fp32", warmup_steps=2, workers=0, seed=3,
    )  # fmt: skip
    return TrainConfig(**(base | kw))


def _weights(folder_url: str, settings: Settings) -> dict[str, torch.Tensor]:
    data = open_folder(folder_url, settings).get(MODEL)
    return torch.load(io.BytesIO(data), weights_only=True)["state_dict"]  # type: ignore[no-any-return]


class Stop(Exception):
    pass


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_weights(
    shards: ShardSet, settings: Settings, tmp_path: Path
) -> None:
    masks = _box_masks(shards, settings)
    config = _config()
    whole_url, stopped_url = str(tmp_path / "whole"), str(tmp_path / "stopped")
    whole = train(config, shards, settings, open_folder(whole_url, settings), masks, log_every=1)
    assert whole.steps == 2 * 5 and whole.resumed_from_step == 0
    assert whole.epochs[0].masked_per_sample > 1

    def stop_at_7(entry: dict[str, Any]) -> None:
        if entry["step"] == 7:
            raise Stop

    stopped = open_folder(stopped_url, settings)
    with pytest.raises(Stop):
        train(config, shards, settings, stopped, masks, checkpoint_every_steps=3,
              log_every=1, on_log=stop_at_7)  # fmt: skip
    assert stopped.exists(CHECKPOINT) and not stopped.exists(DONE)
    logged: list[int] = []
    resumed = train(config, shards, settings, stopped, masks, log_every=1,
                    on_log=lambda e: logged.append(e["step"]))  # fmt: skip
    assert resumed.resumed_from_step == 6  # the last checkpoint before the stop
    assert logged == [7, 8, 9, 10]
    a, b = _weights(whole_url, settings), _weights(stopped_url, settings)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = train(config, shards, settings, stopped, masks)
    assert again.finished_before and again.steps == 10


def test_training_learns_and_the_model_loads_back_through_open_clip(
    shards: ShardSet, settings: Settings, tmp_path: Path
) -> None:
    out = str(tmp_path / "plain")
    result = train(_config(mode="plain", epochs=3), shards, settings, open_folder(out, settings))
    assert result.epochs[0].masked_per_sample == 0
    assert result.epochs[-1].loss < result.epochs[0].loss
    clip = load_clip(TINY_ARCHITECTURE, f"{out}/{MODEL}", settings, "cpu")
    trained = _weights(out, settings)
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in trained.items())


def test_a_config_for_other_data_is_another_run(shards: ShardSet) -> None:
    config = _config()
    other = ShardSet(shards.url, {**shards.sizes, "shard-000009.tar": 3})
    assert config.run_id(shards) != config.run_id(other)
    assert config.run_id(shards) != _config(mode="plain").run_id(shards)
    with pytest.raises(ValueError, match="mode"):
        _config(mode="masked")


def test_a_run_takes_what_it_is_given_then_the_models_measured_defaults(tmp_path: Path) -> None:
    tiny = training_defaults(TINY_ARCHITECTURE)
    assert tiny["mode"] == "plain" and tiny["lr"] == 1e-3  # random weights: measured
    config = TrainConfig.resolve(TINY_ARCHITECTURE, "", epochs=5, lr=None, workers=1)
    assert (config.mode, config.lr, config.epochs, config.batch_size) == (
        "plain",
        1e-3,
        5,
        tiny["batch_size"],
    )
    # A model with no training.json gets ours, and the authors' rate for its mode.
    other = TrainConfig.resolve("ViT-B-32", "openai")
    assert (other.mode, other.lr, other.batch_size, other.precision) == (
        "dynamic-mask",
        3e-5,
        256,
        "bf16",
    )
    assert TrainConfig.resolve("ViT-B-32", "openai", mode="plain").lr == 5e-6
    assert TrainConfig.resolve(TINY_ARCHITECTURE, "", mode="dynamic-mask").lr == 1e-3

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "training.json").write_text('{"why": "x", "lr": 0.1, "optimizer": "sgd"}')
    with pytest.raises(ValueError, match="unknown training defaults"):
        TrainConfig.resolve(f"local-dir:{odd}", "")
