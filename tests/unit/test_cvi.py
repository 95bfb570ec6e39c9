"""CVI from sql/evaluate/cvi.sql against a direct numpy computation, and the rank correlation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from tasks.evaluate.cvi import (
    CviRow,
    Top1,
    compute_cvi,
    correlations,
    cvi_results,
    spearman,
    within_top1,
)
from tasks.evaluate.embedding_files import embeddings_to_parquet

SIZES = {"Apes": 300, "Birds": 41, "Cats": 2, "Dots": 1}


def _numpy_cvi(v: np.ndarray, t: np.ndarray) -> tuple[float, float, float | None]:
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    n = len(v)
    d_img = 1 - float(np.sum(v.mean(0) ** 2))
    d_txt = 1 - float(np.sum(t.mean(0) ** 2))
    if n < 2:
        return d_img, d_txt, None
    s = v @ t.T
    margin = float(np.trace(s) / n - (s.sum() - np.trace(s)) / (n * (n - 1)))
    return d_img, d_txt, margin


@pytest.mark.parametrize("dim", [32, 512])  # 512: ViT-B/32, where FLOAT sums drifted 1e-6
def test_cvi_sql_equals_numpy_on_random_vectors(tmp_path: Path, dim: int) -> None:
    rng = np.random.default_rng(5)
    rows = []
    for name, n in SIZES.items():
        centre = rng.normal(size=dim)  # collections of different spreads and matches
        spread = rng.uniform(0.2, 3)
        v = centre + spread * rng.normal(size=(n, dim))
        t = v + rng.uniform(0.1, 4) * rng.normal(size=(n, dim))
        rows += [
            (name, f"0x{name}", ("train", "test")[i % 2], v[i].astype(np.float32).tolist(),
             t[i].astype(np.float32).tolist())
            for i in range(n)
        ]  # fmt: skip
    # Written as nft1000/cvi writes them: float16 parquet, in more than one file.
    paths = [str(tmp_path / f"part-{i}.parquet") for i in range(2)]
    for i, path in enumerate(paths):
        part = rows[i::2]
        Path(path).write_bytes(
            embeddings_to_parquet(
                [(r[0], r[1], str(n), r[2]) for n, r in enumerate(part)],
                np.array([r[3] for r in part]),
                np.array([r[4] for r in part]),
            )
        )
    rows = [(r[0], r[1], r[2], np.float16(r[3]), np.float16(r[4])) for r in rows]

    result = compute_cvi(duckdb.connect(), paths)
    assert {(r.level, r.collection) for r in result if r.level == "collection"} == {
        ("collection", name) for name in SIZES
    }
    assert len(result) == len(SIZES) + sum(min(n, 2) for n in SIZES.values())
    for row in result:
        chosen = [r for r in rows if r[0] == row.collection and row.split in (None, r[2])]
        v = np.array([r[3] for r in chosen], np.float64)
        t = np.array([r[4] for r in chosen], np.float64)
        d_img, d_txt, margin = _numpy_cvi(v, t)
        assert row.pairs == len(chosen)
        assert row.image_dispersion == pytest.approx(d_img, abs=1e-6)
        assert row.text_dispersion == pytest.approx(d_txt, abs=1e-6)
        if margin is None:
            assert row.matching_margin is None and row.cvi is None
        else:
            assert row.matching_margin == pytest.approx(margin, abs=1e-6)
            assert row.cvi == pytest.approx(np.sqrt(d_img * d_txt) * margin, abs=1e-6)
    # Different collections really differ: the check is not comparing constants.
    cvis = [r.cvi for r in result if r.level == "collection" and r.cvi is not None]
    assert max(cvis) - min(cvis) > 0.05


def test_spearman_ranks_with_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    with pytest.raises(ValueError):
        spearman([1, 1, 1], [1, 2, 3])


def test_within_top1_counts_each_collection_and_split_on_its_own() -> None:
    # Collection A: captions point at their own image; B: every caption at image 0.
    eye = np.eye(6, dtype=np.float32)
    tokens = [("A", "0xa", str(i), ("train", "test")[i % 2]) for i in range(6)]
    tokens += [("B", "0xb", str(i), "train") for i in range(4)]
    images = np.concatenate([eye, eye[:4]])
    texts = np.concatenate([eye, np.tile(eye[0], (4, 1))])
    half = 5  # two files, one collection across both
    parts = [
        (tokens[:half], images[:half], texts[:half]),
        (tokens[half:], images[half:], texts[half:]),
    ]
    found = {(t.contract, t.split): (t.queries, t.top1) for t in within_top1(parts)}
    assert found == {
        ("0xa", None): (6, 1.0),
        ("0xa", "train"): (3, 1.0),
        ("0xa", "test"): (3, 1.0),
        ("0xb", None): (4, 0.25),  # only the caption of image 0 finds it
        ("0xb", "train"): (4, 0.25),
    }


def _row(name: str, split: str | None, cvi: float | None, top1: float) -> CviRow:
    level = "collection" if split is None else "split"
    return CviRow(level, name, f"0x{name}", split, 10, 0.5, 0.5, cvi, cvi, top1)


def test_correlations_per_group_need_three_collections() -> None:
    names = ["A", "B", "C", "D"]
    cvis, accuracy = [0.1, 0.2, 0.3, None], [0.9, 0.5, 0.7, 0.1]
    rows = [_row(n, None, c, a) for n, c, a in zip(names, cvis, accuracy, strict=True)]
    rows += [_row(n, "test", c, 0.5) for n, c in zip(names[:2], [0.1, 0.2], strict=True)]
    rho = correlations(rows)
    assert rho["collection"] == pytest.approx(-0.5)  # D (no CVI) left out
    assert rho["test"] is None  # two collections rank nothing


def test_cvi_results_set_each_row_beside_its_own_top1(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tokens = [
        (name, f"0x{name}", str(i), ("train", "test")[i % 2]) for name in "AB" for i in range(4)
    ]
    path = tmp_path / "e.parquet"
    path.write_bytes(
        embeddings_to_parquet(tokens, rng.normal(size=(8, 16)), rng.normal(size=(8, 16)))
    )
    top1 = [Top1("A", "0xA", None, 4, 0.25), Top1("A", "0xA", "test", 2, 0.5)]
    top1 += [Top1("B", "0xB", "train", 2, 1.0)]
    rows = cvi_results(duckdb.connect(), str(path), top1, model="m", data="d")
    found = {(r.collection, r.split): r.top1 for r in rows}
    assert found == {
        ("A", None): 0.25,
        ("A", "test"): 0.5,
        ("A", "train"): None,  # not measured: left empty, not borrowed from another level
        ("B", None): None,
        ("B", "test"): None,
        ("B", "train"): 1.0,
    }
