"""The Comprehensive Variance Index per collection and split (docs/method.md section 6).

The arithmetic is in ``sql/evaluate/cvi.sql``: one scan of the embeddings sums each
group's vectors, and dispersions and the matching margin follow from the sums.
``spearman`` measures whether CVI ranks collections the way retrieval accuracy
does, the test of whether the index is worth shipping.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

import duckdb
import numpy as np
import pyarrow as pa
import torch

from tasks.core.duck import connect
from tasks.core.settings import Settings
from tasks.core.sql import quote, run_sql
from tasks.evaluate.embedding_files import Contents, read_files
from tasks.evaluate.retrieval import WITHIN, evaluate

TOP1_SCHEMA = pa.schema(
    [
        ("collection", pa.string()),
        ("contract", pa.string()),
        ("split", pa.string()),
        ("queries", pa.int64()),
        ("top1", pa.float64()),
    ]
)
MIN_CORRELATED = 3  # collections needed before a rank correlation means anything


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
    top1: float | None = None  # within-collection top-1 of the same pairs, once measured


def compute_cvi(con: duckdb.DuckDBPyConnection, embeddings: str | Sequence[str]) -> list[CviRow]:
    """Build the ``cvi`` table from embedding parquet files (a glob or a list) and read it."""
    con.execute(
        "SET VARIABLE embeddings = ?",
        [embeddings if isinstance(embeddings, str) else list(embeddings)],
    )
    run_sql(con, "evaluate/cvi")
    return [CviRow(*row) for row in con.execute("SELECT * FROM cvi").fetchall()]


@dataclass(frozen=True)
class Top1:
    """Within-collection text-to-image top-1 of one collection, or of one of its splits."""

    collection: str
    contract: str
    split: str | None  # None: all the collection's pairs in one pool
    queries: int
    top1: float


def correlations(rows: Sequence[CviRow]) -> dict[str, float | None]:
    """Spearman's rho of CVI against top-1 across collections: key ``collection`` (whole
    collections) and each split's name (see ``rank_correlations``)."""
    return rank_correlations((r.split or "collection", r.cvi, r.top1) for r in rows)


def rank_correlations(
    points: Iterable[tuple[str, float | None, float | None]],
) -> dict[str, float | None]:
    """Spearman's rho of x against y per group, from (group, x, y) points; points missing
    a value are left out. None where fewer than MIN_CORRELATED points remain or one side
    is constant."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for group, x, y in points:
        if x is not None and y is not None:
            groups[group].append((x, y))
    found: dict[str, float | None] = {}
    for group, pairs in sorted(groups.items()):
        try:
            ok = len(pairs) >= MIN_CORRELATED
            found[group] = spearman(*zip(*pairs, strict=True)) if ok else None
        except ValueError:  # all of x or all of y tie
            found[group] = None
    return found


def cvi_results(
    con: duckdb.DuckDBPyConnection,
    embeddings: str | Sequence[str],
    top1: Sequence[Top1],
    *,
    model: str,
    data: str,
) -> list[CviRow]:
    """The ``cvi_results`` table (sql/evaluate/cvi_results.sql): CVI of the embeddings beside the
    top-1 of the same pairs, for one model and data; returns its rows, top-1 joined."""
    compute_cvi(con, embeddings)
    con.register("cvi_top1", pa.Table.from_pylist([asdict(t) for t in top1], TOP1_SCHEMA))
    con.execute("SET VARIABLE model = ?", [model])
    con.execute("SET VARIABLE data = ?", [data])
    run_sql(con, "evaluate/cvi_results")
    columns = ", ".join(f.name for f in fields(CviRow))
    return [CviRow(*row) for row in con.execute(f"SELECT {columns} FROM cvi_results").fetchall()]


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


def within_top1(files: Iterable[Contents], device: str | torch.device = "cpu") -> list[Top1]:
    """Top-1 of every collection and (collection, split) from embedding files' contents,
    the difficulty CVI must rank. Pairs are held per collection in float16."""
    held: dict[tuple[str, str], list[tuple[list[str], np.ndarray, np.ndarray]]] = defaultdict(list)
    for tokens, images, texts in files:
        rows_of: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (collection, contract, _, _) in enumerate(tokens):
            rows_of[(collection, contract)].append(i)
        for key, rows in rows_of.items():
            splits = [tokens[i][3] for i in rows]
            held[key].append(
                (splits, images[rows].astype(np.float16), texts[rows].astype(np.float16))
            )
    found: list[Top1] = []
    for (collection, contract), parts in sorted(held.items()):
        splits = [s for part in parts for s in part[0]]
        images = np.concatenate([part[1] for part in parts]).astype(np.float32)
        texts = np.concatenate([part[2] for part in parts]).astype(np.float32)
        # One pool of every pair, then one per split (labels prefixed: never "all").
        for labels in (["whole"] * len(splits), [f"split {s}" for s in splits]):
            result = evaluate(images, texts, labels, pools=(WITHIN,), ks=(1,), device=device)
            for acc in result[WITHIN].collections:
                split = acc.collection.removeprefix("split ") if acc.collection != "whole" else None
                found.append(Top1(collection, contract, split, acc.queries, acc.accuracy(1)))
    return found


def cvi_run_id(label: str, data: str, listing: bytes) -> str:
    """One id per model, export root and shard listing: a new export under the same root
    (other shards or sizes) gets new embeddings and results."""
    return hashlib.sha256(f"{label}\n{data}\n".encode() + listing).hexdigest()[:16]


def measure_cvi(
    settings: Settings,
    files: Sequence[str],
    *,
    model: str,
    data: str,
    url: str,
    device: str | torch.device = "cpu",
) -> list[CviRow]:
    """CVI (DuckDB) beside within-collection top-1 (torch) of the embedding ``files``,
    written as parquet to ``url``; returns the rows."""
    top1 = within_top1(read_files(files, settings), device=device)
    con = connect(settings)
    try:
        rows = cvi_results(con, list(files), top1, model=model, data=data)
        con.execute(f"COPY cvi_results TO {quote(url)} (FORMAT parquet)")
    finally:
        con.close()
    return rows
