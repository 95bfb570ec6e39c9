"""The Comprehensive Variance Index per collection and split (METHOD.md section 6).

The arithmetic is in ``sql/cvi.sql``: one scan of the embeddings sums each
group's vectors, and dispersions and the matching margin follow from the sums.
``spearman`` measures whether CVI ranks collections the way retrieval accuracy
does, the test of whether the index is worth shipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from tasks.duck import run_sql


@dataclass(frozen=True)
class CviRow:
    level: str  # "collection" or "split"
    collection: str
    contract: str
    split: str | None
    pairs: int
    image_dispersion: float
    text_dispersion: float
    matching_margin: float | None  # None for a single pair
    cvi: float | None


def compute_cvi(con: duckdb.DuckDBPyConnection, embeddings: str | Sequence[str]) -> list[CviRow]:
    """Build the ``cvi`` table from embedding parquet files (a glob or a list) and read it."""
    con.execute(
        "SET VARIABLE embeddings = ?",
        [embeddings if isinstance(embeddings, str) else list(embeddings)],
    )
    run_sql(con, "cvi")
    return [CviRow(*row) for row in con.execute("SELECT * FROM cvi").fetchall()]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation, ties given their mean rank."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of one length, at least 2")
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        raise ValueError("spearman is undefined when all values of one side tie")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
