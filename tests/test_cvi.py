"""CVI from sql/cvi.sql against a direct numpy computation, and the rank correlation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from tasks.cvi import compute_cvi, spearman

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


def test_cvi_sql_equals_numpy_on_random_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = []
    for name, n in SIZES.items():
        centre = rng.normal(size=32)  # collections of different spreads and matches
        spread = rng.uniform(0.2, 3)
        v = centre + spread * rng.normal(size=(n, 32))
        t = v + rng.uniform(0.1, 4) * rng.normal(size=(n, 32))
        rows += [
            (name, f"0x{name}", ("train", "test")[i % 2], v[i].astype(np.float32).tolist(),
             t[i].astype(np.float32).tolist())
            for i in range(n)
        ]  # fmt: skip
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE e (collection VARCHAR, contract VARCHAR, split VARCHAR, "
        "image FLOAT[], text FLOAT[])"
    )
    con.executemany("INSERT INTO e VALUES (?, ?, ?, ?, ?)", rows)
    path = tmp_path / "embeddings.parquet"
    con.execute(f"COPY e TO '{path}' (FORMAT parquet)")

    result = compute_cvi(duckdb.connect(), str(path))
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
