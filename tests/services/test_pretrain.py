"""The pretraining bench's --quick run: the corpus it trains on holds what its plan says and
neither target, its checkpoint is trained and cached, and nft1000/finetune's training
loop accepts it from S3 as ``pretrained``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.experiments.pretrain import QUICK, parser, run
from tasks.core.folders import open_folder
from tasks.core.paths import MODEL
from tasks.train.loop import TrainConfig, train
from tasks.train.model import load_clip
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import Sample, open_shards, read_shard
from tests.data.composed import BACKDROP, MAX_VALUES, TRAIT_TYPES
from tests.data.corpus import EXCLUDED, LOOT_NAME, CorpusPlan, corpus, designs
from tests.data.local_s3 import seaweedfs
from tests.data.moonbird_shards import LOCAL

UPLOAD = "s3://bench/pretrained/tiny-clip.pt"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    cache = tmp_path_factory.mktemp("pretrain")
    return cache, run(parser().parse_args(["--quick", "--cache", str(cache)]))


def _samples(report: dict[str, Any]) -> list[Sample]:
    shards = open_shards(f"{report['corpus']['root']}/train", LOCAL)
    folder = open_folder(shards.url, LOCAL)
    return [s for name in sorted(shards.sizes) for s in read_shard(folder, name)]


def _weights(checkpoint: str | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(QUICK.seed)  # the initialisation the pretraining started from
    model = load_clip(TINY_ARCHITECTURE, checkpoint, LOCAL, "cpu").model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _largest_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_the_corpus_holds_what_the_plan_says_and_no_target(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    _, report = quick
    plan = QUICK.corpus
    samples = _samples(report)
    by_collection: dict[str, list[Sample]] = {}
    for s in samples:
        by_collection.setdefault(s.collection, []).append(s)
    names = [f"Corpus {i:03d}" for i in range(1, plan.collections + 1)]
    assert sorted(by_collection) == sorted([*names, LOOT_NAME])
    assert not set(by_collection) & set(EXCLUDED)
    assert all(len(by_collection[n]) == plan.tokens for n in names)
    assert len(samples) == report["corpus"]["samples"] == 140 and report["corpus"]["failed"] == 0
    for s in samples:
        assert s.collection in s.caption, s.caption
    # Each collection its own caption template, trait types and values.
    drawn = designs(plan)
    assert len({d.template for d in drawn}) == plan.collections
    assert len({tuple(t for t, _ in d.values) for d in drawn}) == plan.collections
    for d in drawn:
        types = [t for t, _ in d.values]
        assert types[0] == BACKDROP and len(types) >= 3
        assert types == [t for t in TRAIT_TYPES if t in types]  # back to front
        assert all(2 <= len(picked) <= MAX_VALUES for _, picked in d.values)
    assert any(list(picked) != list(range(len(picked))) for d in drawn for _, picked in d.values)
    # Visual-template captions carry their traits: unique combinations, as named.
    for name in names:
        traits = [s.traits for s in by_collection[name]]
        if traits[0]:
            assert len({frozenset(t) for t in traits}) == plan.tokens
            assert {t for t, _ in traits[0]} <= set(TRAIT_TYPES)


def test_loot_bags_are_real_and_rasterised_by_the_export(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    _, report = quick
    bags = {s.record["token_id"]: s for s in _samples(report) if s.collection == LOOT_NAME}
    assert sorted(bags, key=int) == [str(i) for i in range(1, QUICK.corpus.loot + 1)]
    assert report["corpus"]["loot_bags"] == QUICK.corpus.loot
    first = bags["1"]
    assert first.caption.startswith(f"A picture of {LOOT_NAME}, containing ")
    for item in ('"Grim Shout" Grave Wand of Skill +1', "Divine Hood", "Gold Ring"):
        assert item in first.caption
    assert first.record["source_mime"] == "image/svg+xml"
    with Image.open(io.BytesIO(first.image)) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (64, 64)
    assert pixels.mean() < 40 and pixels.max() > 120  # white text on black


def test_a_plan_naming_an_excluded_collection_is_refused() -> None:
    with pytest.raises(ValueError, match="Corpus 002"):
        corpus(CorpusPlan(collections=2, loot=0, excluded=("Corpus 002",)))
    with pytest.raises(ValueError, match="Loot"):
        corpus(CorpusPlan(collections=0, loot=1, excluded=(LOOT_NAME,)))


def test_the_checkpoint_is_trained_and_a_rerun_returns_it_from_the_cache(
    quick: tuple[Path, dict[str, Any]],
) -> None:
    cache, report = quick
    checkpoint = Path(report["checkpoint"])
    assert report["cached"] is False and checkpoint.name == MODEL
    assert report["training"]["mode"] == "plain" and report["training"]["steps"] >= 2
    assert len(report["epoch_loss"]) == QUICK.epochs
    trained = _weights(str(checkpoint))
    assert _largest_change(trained, _weights(None)) > 1e-3  # moved from the random init
    stamp = checkpoint.stat().st_mtime_ns
    folders = sorted(p.name for p in cache.iterdir())
    again = run(parser().parse_args(["--quick", "--cache", str(cache)]))
    assert again["cached"] is True and again["checkpoint"] == str(checkpoint)
    assert again["epoch_loss"] == report["epoch_loss"]
    assert checkpoint.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == folders
    json.dumps(again)  # what the bench prints


def test_an_uploaded_checkpoint_is_what_finetune_starts_from(
    quick: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    cache, report = quick
    pretrained = _weights(report["checkpoint"])
    shards = open_shards(f"{report['corpus']['root']}/train", LOCAL)
    with seaweedfs() as settings:
        uploaded = run(
            parser().parse_args(["--quick", "--cache", str(cache), "--upload", UPLOAD]), settings
        )
        assert uploaded["uploaded"] == UPLOAD
        # nft1000/finetune's call: one plain step at a tiny rate from the S3 checkpoint.
        config = TrainConfig(
            TINY_ARCHITECTURE,
            pretrained=UPLOAD,
            mode="plain",
            lr=1e-6,
            batch_size=256,
            precision="fp32",
            warmup_steps=0,
            workers=0,
        )
        result = train(config, shards, settings, open_folder(str(tmp_path), LOCAL), device="cpu")
    assert result.steps == 1 and result.samples == shards.samples
    tuned = _weights(str(tmp_path / MODEL))
    assert _largest_change(tuned, pretrained) < 1e-4  # one small step from the upload
    assert _largest_change(tuned, _weights(None)) > 1e-3
