"""The training benches end to end on a few real Moonbirds: data preparation (a private
SeaweedFS, the export's shard writer, both kinds of masks), bench.train against
open_clip_train, bench.evaluate and bench.experiments.masking, asserted on their JSON."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from bench import evaluate, train
from bench.experiments import masking
from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.train.shards import read_shard
from tests.data.moonbird_shards import CONTRACT, Params, Prepared, prepare

TOKENS, PER_SHARD = 80, 16
DATA = ["--tokens", str(TOKENS), "--per-shard", str(PER_SHARD), "--test-share", "0.25"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def prepared(cache: Path) -> Prepared:
    return prepare(Params(tokens=TOKENS, per_shard=PER_SHARD, test_share=0.25), cache)


def _ids(data: Prepared, split: str) -> list[int]:
    shards = data.split(split)
    folder = open_folder(shards.url, Settings())
    return [int(s.record["token_id"]) for name in shards.sizes for s in read_shard(folder, name)]


def _json(result: dict[str, Any]) -> dict[str, Any]:
    """What the bench prints, read back."""
    doc: dict[str, Any] = json.loads(json.dumps(result))
    return doc


def test_moonbirds_are_split_by_token_and_a_rerun_reuses_the_folder(
    prepared: Prepared, cache: Path
) -> None:
    train_ids, test_ids = _ids(prepared, "train"), _ids(prepared, "test")
    assert sorted(train_ids + test_ids) == list(range(TOKENS))
    assert len(test_ids) == TOKENS // 4
    assert prepared.summary["splits"]["train"]["shards"] == 60 // PER_SHARD + 1
    sample = next(
        read_shard(open_folder(prepared.split("test").url, Settings()), "shard-000000.tar")
    )
    assert sample.record["caption_method"] == "visual_template"
    assert sample.caption.startswith("A picture of Moonbirds, containing ")
    assert sample.traits and all(f"{v} {t}" in sample.caption for t, v in sample.traits)

    official = prepared.masks("official")[CONTRACT]
    derived = prepared.masks("derived")[CONTRACT]
    assert len(official) == 116 and 0 < len(derived) <= len(official)
    assert next(iter(official.values())).shape == (42, 42)

    started = time.monotonic()
    again = prepare(Params(tokens=TOKENS, per_shard=PER_SHARD, test_share=0.25), cache)
    assert time.monotonic() - started < 2  # no S3 started, nothing written
    assert again == prepared
    assert Params(tokens=TOKENS, seed=1).digest() != Params(tokens=TOKENS).digest()


def test_bench_train_times_our_loop_and_open_clip_train(prepared: Prepared) -> None:
    args = train.parser().parse_args(
        # A relative folder: open_clip_train runs elsewhere and must still find it.
        ["--prepared", os.path.relpath(prepared.root), "--samples", "120", "--batch-size", "16",
         "--workers", "0", "--device", "cpu", "--skip-steps", "1",
         "--modes", "dynamic-mask"]
    )  # fmt: skip
    doc = _json(train.run(args))
    assert doc["config"]["epochs"] == 2  # 120 samples of a 60-sample split
    runs = {r["name"]: r for r in doc["runs"]}
    assert list(runs) == ["ours (dynamic-mask)", "open_clip_train"]
    for run in runs.values():
        assert run["epochs"] == 2 and run["samples"] >= 100
        assert 0 < run["steady_samples"] < run["samples"]
        assert run["steady_samples_per_s"] > 0 and run["wall_samples_per_s"] > 0
    assert runs["ours (dynamic-mask)"]["samples"] == 120  # every sample once an epoch
    assert runs["open_clip_train"]["samples"] == 2 * 64  # full batches: 4 per epoch
    assert 0 <= runs["open_clip_train"]["data_share"] <= 1
    assert runs["ours (dynamic-mask)"]["masked_per_sample"] > 0.5  # derived from 60 tokens
    assert set(doc["best_steady_samples_per_s"]) == set(runs)
    assert doc["steady_over_open_clip_train"]["ours (dynamic-mask)"] > 0


def test_bench_evaluate_reports_embedding_and_retrieval_speed(prepared: Prepared) -> None:
    args = evaluate.parser().parse_args(
        ["--prepared", str(prepared.root), "--batch-size", "8", "--workers", "0",
         "--device", "cpu", "--repeats", "1"]
    )  # fmt: skip
    doc = _json(evaluate.run(args))
    assert doc["pairs"] == TOKENS // 4 and doc["dim"] == 64
    assert len(doc["embed"]["seconds_per_run"]) == 2 and doc["embed"]["pairs_per_s"] > 0
    assert doc["towers"]["batch"] == 8
    assert doc["towers"]["images_per_s"] > 0 and doc["towers"]["texts_per_s"] > 0
    for pool in ("within", "pooled"):
        found = doc["retrieval"][pool]
        assert found["seconds"] > 0
        assert 0 <= found["top1"] <= found["top5"] <= found["top10"] <= 1
    # One collection: both pools rank the same candidates.
    assert doc["retrieval"]["within"]["top5"] == doc["retrieval"]["pooled"]["top5"]


def test_masking_experiment_quick_runs_every_arm_on_both_targets(
    prepared: Prepared, cache: Path
) -> None:
    doc = _json(masking.run(masking.parse(["--quick", "--cache", str(cache)])))
    start = doc["budget"]["pretrained"]
    assert start.endswith("model.pt") and Path(start).is_file()  # the corpus checkpoint
    assert set(doc["targets"]) == {"moonbirds", "composed"}
    assert doc["paper"]["rates"] == {"dynamic-mask": 3e-5, "plain": 5e-6}
    arms = ["plain", "dynamic-official", "dynamic-derived"]
    for name, target in doc["targets"].items():
        assert target["train"] + target["test"] == (TOKENS if name == "moonbirds" else 60)
        assert target["chance"]["top1"] == round(1 / target["test"], 4)
        for floor in ("zero_shot", "untrained"):
            assert 0 <= target[floor]["top1"] <= target[floor]["top10"] <= 1
        for source in ("official", "derived"):
            shares = target["draw"][source]
            # Painting only what shows never paints more than painting each mask whole.
            assert 0 < shares["visible"]["mean"] <= shares["whole"]["mean"] <= 1
            # Dropping phrases makes captions alike: more of them meet their twin in a batch.
            plain_twins = target["draw"]["none"]["caption_collisions"]
            assert plain_twins <= shares["caption_collisions"] <= 1
        runs = {r["arm"]: r for r in target["runs"]}
        assert list(runs) == arms and all(r["lr"] == 1e-4 and r["seed"] == 0 for r in runs.values())
        assert runs["plain"]["masked_per_sample"] == [0.0]
        assert runs["dynamic-official"]["masked_per_sample"][0] > 0.5
        for run in runs.values():
            assert 0 <= run["top1"] <= run["top5"] <= run["top10"] <= 1
        summary = target["summary"]
        assert summary["plain"]["best_rate"] == 1e-4
        lead = summary["dynamic-official"]["top1_points_over_plain"]
        best = summary["dynamic-official"]["best"]["top1_mean"]
        assert lead == round(100 * (best - summary["plain"]["best"]["top1_mean"]), 2)
    moonbirds = doc["targets"]["moonbirds"]["draw"]["official"]
    assert moonbirds["visible"]["mean"] < moonbirds["whole"]["mean"]  # hats lie on bodies
