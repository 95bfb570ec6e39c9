"""bench/cvi in quick mode: the printed JSON, DuckDB's CVI against numpy's on the
generated files, and embed_split's writes and resume on a few real Moonbirds (whose
shards a private SeaweedFS prepares, as in test_bench_train: hence this tier)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import cvi
from tasks.evaluate.cvi import CviRow
from tasks.evaluate.embedding_files import embeddings_from_parquet


def test_quick_bench_agrees_with_numpy_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cvi.main(["--quick", "--cache", str(tmp_path)])
    doc = json.loads(capsys.readouterr().out)  # the whole of stdout is the document

    data = doc["cvi"]["data"]
    assert (data["pairs"], data["dim"], data["collections"]) == (20_000, 64, 50)
    assert data["generated"] and data["files"] >= 4  # 5,000 pairs a file, per split
    assert data["single_pair_collections"] >= 1 and data["largest_collection"] >= 2_000
    assert data["groups"] > data["collections"]  # collection rows and split rows
    low, high = data["cvi_range"]
    assert high - low > 0.1  # the collections' centres make their CVIs differ
    for name in ("duckdb", "baseline"):
        part = doc["cvi"][name]
        assert part["seconds"] > 0 and part["pairs_per_s"] > 0
        assert part["peak_rss_mib"] >= part["start_rss_mib"] > 0
    assert doc["cvi"]["duckdb"]["threads"] >= 1 and doc["cvi"]["duckdb"]["memory_limit"]
    worst = doc["cvi"]["max_abs_difference"]
    assert set(worst) == {"image_dispersion", "text_dispersion", "matching_margin", "cvi"}
    assert max(worst.values()) < 1e-6

    embed = doc["embed"]
    assert embed["pairs"] == 40 and embed["groups"] == 2  # 10 test shards of 4
    assert len(embed["embed_split"]["seconds_per_run"]) == 2
    assert embed["embed_split"]["pairs_per_s"] > 0 and embed["baseline"]["pairs_per_s"] > 0
    assert embed["to_parquet_seconds"] > 0
    assert embed["resume"]["embedded"] == 0
    assert embed["resume"]["seconds_per_group"] < 0.5

    again = cvi.generate(cvi.VectorSet(20_000, 64, 50, 0, 5_000), tmp_path)
    assert again["generated"] is False  # the cached files are reused


def test_numpy_baseline_matches_a_pairwise_computation(tmp_path: Path) -> None:
    vectors = cvi.VectorSet(pairs=300, dim=16, collections=5, seed=3, per_file=70)
    files = cvi.generate(vectors, tmp_path)["files"]
    rows: list[CviRow] = cvi.numpy_cvi(files)["rows"]
    tokens, images, texts = [], [], []
    for path in files:
        file_tokens, file_images, file_texts = embeddings_from_parquet(Path(path).read_bytes())
        tokens += file_tokens
        images.append(file_images)
        texts.append(file_texts)
    v = np.concatenate(images).astype(np.float64)
    t = np.concatenate(texts).astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    sizes = cvi.collection_sizes(300, 5, np.random.default_rng([3, 0]))
    assert sizes.sum() == 300 and sizes[-1] == 1
    assert sorted(r.pairs for r in rows if r.level == "collection") == sorted(sizes)
    for row in rows:
        chosen = [
            i for i, k in enumerate(tokens) if k[0] == row.collection and row.split in (None, k[3])
        ]
        n = len(chosen)
        assert row.pairs == n
        assert row.image_dispersion == pytest.approx(1 - np.sum(v[chosen].mean(0) ** 2), abs=1e-9)
        assert row.text_dispersion == pytest.approx(1 - np.sum(t[chosen].mean(0) ** 2), abs=1e-9)
        if n == 1:
            assert row.matching_margin is None and row.cvi is None
            continue
        s = v[chosen] @ t[chosen].T
        margin = np.trace(s) / n - (s.sum() - np.trace(s)) / (n * (n - 1))
        assert row.matching_margin == pytest.approx(margin, abs=1e-9)


def test_a_disagreement_fails_the_bench() -> None:
    row = CviRow("collection", "A", "0xa", None, 3, 0.5, 0.5, 0.2, 0.1)
    worst = cvi.differences([row], [row])
    assert max(worst.values()) == 0
    off = CviRow("collection", "A", "0xa", None, 3, 0.5, 0.5 + 2e-6, 0.2, 0.1)
    doc = {"cvi": {"max_abs_difference": cvi.differences([row], [off])}}
    with pytest.raises(cvi.Disagreement):
        cvi.check(doc)
    with pytest.raises(cvi.Disagreement):  # a margin on one side only
        cvi.differences([row], [CviRow("collection", "A", "0xa", None, 3, 0.5, 0.5, None, None)])
