"""Text-to-image retrieval: top-K accuracy by exact, blocked counting (docs/method.md section 5).

Row i of ``texts`` is a query (a caption) whose one correct answer is row i of
``images`` (its own token's image). Both are L2-normalised in float32 and
candidates are ranked by cosine similarity. Two candidate pools:

- ``within``: the images of the query's own collection (the hard case:
  near-identical images), reported per collection, with the macro average
  (mean over collections) and the micro average (over all queries);
- ``pooled``: the images of every collection together (reported the same way:
  per collection, that collection's queries ranked among all the images).

Rank and ties: the rank of query i is 1 + the number of *other* candidates j
whose similarity beats the positive's by more than ``tie_tol``,
``s_ij > s_ii + tie_tol``. Candidates within ``tie_tol`` of the positive tie with
it and ties go to the query (optimistic): an exact duplicate of the correct image
is the same picture, so retrieving it counts as a hit. The tolerance (default
1e-6, ten times the ~1e-7 float32 rounding that different block shapes give for
unit vectors) makes such ties independent of how the scores were blocked.
Scores assume IEEE float32 matmul, torch's default; with TF32 enabled on a GPU
(errors near 1e-3) ranks can move at near-ties.

Cost: exact counting scores every (query, candidate) pair of a pool once:
2*N*N*d flops for a pool of N pairs in d dimensions (within collections, the sum
of 2*n_c*n_c*d), in blocks of ``query_block`` x ``candidate_block`` scores, so
memory holds one float32 block and never N x N. Pooled over 1M pairs at d=512
that is 1e15 flops, about half a minute at the ~50 TFLOP/s of an H100 in float32
(estimated, not measured), so the exact count is the reference and no
approximate index is used. Top-K accuracy is the share of queries with rank <= K;
a pool smaller than K gives every query a hit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import torch

from tasks.core.duck import connect
from tasks.core.settings import Settings
from tasks.core.sql import quote, run_sql

KS: tuple[int, ...] = (1, 5, 10, 20, 50)
WITHIN = "within"
POOLED = "pooled"
POOLS: tuple[str, ...] = (WITHIN, POOLED)
ALL = "all"  # the collection name of rows that cover every query
TIE_TOL = 1e-6
QUERY_BLOCK = 1024
CANDIDATE_BLOCK = 16384
MAX_CANDIDATE_BLOCK = 2**24  # counts per block are summed exactly in float32 below this

Embeddings = torch.Tensor | np.ndarray
Labels = Sequence[str] | np.ndarray


@dataclass(frozen=True)
class Accuracy:
    """Hits per K for the queries of one collection (or ``ALL``)."""

    collection: str
    queries: int
    hits: Mapping[int, int]  # K -> queries whose correct image has rank <= K

    def accuracy(self, k: int) -> float:
        return self.hits[k] / self.queries


@dataclass(frozen=True)
class PoolResult:
    """Top-K accuracy of one candidate pool, per collection and over all queries."""

    pool: str
    ks: tuple[int, ...]
    collections: tuple[Accuracy, ...]  # sorted by collection name
    total: Accuracy  # collection ALL: the micro average

    def macro(self, k: int) -> float:
        """Mean of the collections' accuracies: each collection weighs the same."""
        return sum(c.accuracy(k) for c in self.collections) / len(self.collections)

    def micro(self, k: int) -> float:
        """Accuracy over all queries: each query weighs the same."""
        return self.total.accuracy(k)


@dataclass(frozen=True)
class ResultRow:
    """One row of the ``retrieval_results`` table (sql/evaluate/retrieval_results.sql)."""

    model: str
    data: str
    pool: str
    collection: str
    k: int
    accuracy: float
    macro_accuracy: float | None  # on ALL rows only
    hits: int
    queries: int


def _tensor(name: str, value: Embeddings) -> torch.Tensor:
    """The embeddings as a non-empty floating point (pairs, dim) tensor, as given."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise TypeError(f"{name}: expected floating point embeddings, got {value.dtype}")
        tensor = torch.from_numpy(value)
    elif isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name}: expected floating point embeddings, got {value.dtype}")
        tensor = value.detach()
    else:
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(value)}")
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a non-empty (pairs, dim) matrix, got {tuple(tensor.shape)}"
        )
    return tensor


def _unit_rows(name: str, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Float32 unit rows on ``device``; ValueError for NaN, infinity or zero rows."""
    rows = tensor.to(device=device, dtype=torch.float32)
    # The largest entry per row finds NaN and infinity (max propagates both) and zero
    # rows in one pass, and scaling by it first keeps the norm from overflowing.
    scale = rows.abs().amax(dim=1, keepdim=True)
    _reject_rows(name, ~torch.isfinite(scale[:, 0]), "NaN or infinity")
    _reject_rows(name, scale[:, 0] == 0, "zero vectors (no direction to compare)")
    rows = rows / scale
    norms: torch.Tensor = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows.div_(norms)


def _reject_rows(name: str, bad: torch.Tensor, what: str) -> None:
    count = int(bad.sum())
    if count:
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}: {what} in {count} row(s) (first: row {first})")


def _pair(
    images: Embeddings, texts: Embeddings, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides checked and normalised; row i of each is one pair."""
    image_rows, text_rows = _tensor("images", images), _tensor("texts", texts)
    if image_rows.shape != text_rows.shape:
        raise ValueError(
            f"images {tuple(image_rows.shape)} and texts {tuple(text_rows.shape)} must have "
            "the same shape: row i of both is one pair"
        )
    target = torch.device(device)
    return _unit_rows("images", image_rows, target), _unit_rows("texts", text_rows, target)


def _groups(collections: Labels, pairs: int) -> tuple[list[str], np.ndarray]:
    """Sorted collection names and each pair's index into them."""
    labels = list(collections)
    if len(labels) != pairs:
        raise ValueError(f"{len(labels)} collection labels for {pairs} pairs")
    wrong = next((x for x in labels if not isinstance(x, str)), None)
    if wrong is not None:
        raise TypeError(f"collection labels must be str, got {type(wrong)}: {wrong!r}")
    if ALL in labels:
        raise ValueError(f"{ALL!r} names the rows over every collection; rename that collection")
    names, codes = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    return [str(n) for n in names], codes.reshape(-1)


def _check_blocks(query_block: int, candidate_block: int, tie_tol: float) -> None:
    if query_block < 1 or not 1 <= candidate_block < MAX_CANDIDATE_BLOCK:
        raise ValueError(
            f"block sizes must be >= 1 (candidates < {MAX_CANDIDATE_BLOCK}), "
            f"got {query_block} x {candidate_block}"
        )
    if not (math.isfinite(tie_tol) and tie_tol >= 0):
        raise ValueError(f"tie_tol must be a finite number >= 0, got {tie_tol}")


def _blocked_ranks(
    images: torch.Tensor,
    texts: torch.Tensor,
    *,
    query_block: int,
    candidate_block: int,
    tie_tol: float,
) -> torch.Tensor:
    """Rank of image i for text i among all rows of ``images`` (unit float32, one device).

    For each block of queries, the positive score once, then the candidates that
    beat it counted block by block into one reused buffer, so memory is one block
    of scores. The comparison overwrites the scores with 0.0/1.0 and is summed in
    float32, several times faster than summing a bool mask on a CPU, and exact
    because a block row holds fewer than 2**24 candidates.
    """
    pairs = texts.shape[0]
    device = texts.device
    ranks = torch.empty(pairs, dtype=torch.int64, device=device)
    scores = torch.empty(min(query_block, pairs) * min(candidate_block, pairs), device=device)
    for first in range(0, pairs, query_block):
        end = min(first + query_block, pairs)
        queries = texts[first:end]
        threshold = (queries * images[first:end]).sum(dim=1, keepdim=True) + tie_tol
        greater = torch.zeros(end - first, dtype=torch.int64, device=device)
        for start in range(0, pairs, candidate_block):
            stop = min(start + candidate_block, pairs)
            shape = (end - first, stop - start)
            block = scores[: shape[0] * shape[1]].view(shape)
            torch.matmul(queries, images[start:stop].T, out=block)
            torch.gt(block, threshold, out=block)
            low, high = max(first, start), min(end, stop)
            if low < high:  # a query is never its own competitor
                own = torch.arange(low, high, device=device)
                block[own - first, own - start] = 0.0
            greater += block.sum(dim=1).to(torch.int64)
        ranks[first:end] = greater + 1
    return ranks.cpu()


def within_collection_ranks(
    images: Embeddings,
    texts: Embeddings,
    collections: Labels,
    *,
    query_block: int = QUERY_BLOCK,
    candidate_block: int = CANDIDATE_BLOCK,
    device: str | torch.device = "cpu",
    tie_tol: float = TIE_TOL,
) -> torch.Tensor:
    """Each query's rank among the images of its own collection (int64, input order)."""
    _check_blocks(query_block, candidate_block, tie_tol)
    image_rows, text_rows = _pair(images, texts, device)
    _, codes = _groups(collections, text_rows.shape[0])
    return _within(image_rows, text_rows, codes, query_block, candidate_block, tie_tol)


def _within(
    images: torch.Tensor,
    texts: torch.Tensor,
    codes: np.ndarray,
    query_block: int,
    candidate_block: int,
    tie_tol: float,
) -> torch.Tensor:
    ranks = torch.empty(texts.shape[0], dtype=torch.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))
    for start, stop in zip([0, *bounds[:-1]], bounds, strict=True):
        rows = torch.from_numpy(order[start:stop])
        on_device = rows.to(images.device)
        ranks[rows] = _blocked_ranks(
            images[on_device],
            texts[on_device],
            query_block=query_block,
            candidate_block=candidate_block,
            tie_tol=tie_tol,
        )
    return ranks


def pooled_ranks(
    images: Embeddings,
    texts: Embeddings,
    *,
    query_block: int = QUERY_BLOCK,
    candidate_block: int = CANDIDATE_BLOCK,
    device: str | torch.device = "cpu",
    tie_tol: float = TIE_TOL,
) -> torch.Tensor:
    """Each query's rank among all images together (int64, input order)."""
    _check_blocks(query_block, candidate_block, tie_tol)
    image_rows, text_rows = _pair(images, texts, device)
    return _blocked_ranks(
        image_rows,
        text_rows,
        query_block=query_block,
        candidate_block=candidate_block,
        tie_tol=tie_tol,
    )


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be integers >= 1, got {ks!r}")
    return tuple(sorted(set(ks)))


def summarise(
    ranks: torch.Tensor, collections: Labels, pool: str, ks: Sequence[int] = KS
) -> PoolResult:
    """Hits per collection and over all queries for each K, from per-query ranks.

    For ranks kept from ``within_collection_ranks`` or ``pooled_ranks``.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    kept = _check_ks(ks)
    names, codes = _groups(collections, ranks.shape[0])
    return _summary(ranks, names, codes, pool, kept)


def _summary(
    ranks: torch.Tensor, names: list[str], codes: np.ndarray, pool: str, ks: tuple[int, ...]
) -> PoolResult:
    values = ranks.cpu().numpy()
    sizes = np.bincount(codes, minlength=len(names))
    hits = {k: np.bincount(codes, weights=values <= k, minlength=len(names)) for k in ks}
    per = tuple(
        Accuracy(name, int(sizes[i]), {k: int(hits[k][i]) for k in ks})
        for i, name in enumerate(names)
    )
    total = Accuracy(ALL, int(values.shape[0]), {k: int((values <= k).sum()) for k in ks})
    return PoolResult(pool, ks, per, total)


def evaluate(
    images: Embeddings,
    texts: Embeddings,
    collections: Labels,
    *,
    pools: Sequence[str] = POOLS,
    ks: Sequence[int] = KS,
    query_block: int = QUERY_BLOCK,
    candidate_block: int = CANDIDATE_BLOCK,
    device: str | torch.device = "cpu",
    tie_tol: float = TIE_TOL,
) -> dict[str, PoolResult]:
    """Top-K accuracy of each pool, inputs checked and normalised once."""
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"pools must be among {POOLS}, got {list(pools)!r}")
    kept = _check_ks(ks)
    _check_blocks(query_block, candidate_block, tie_tol)
    image_rows, text_rows = _pair(images, texts, device)
    names, codes = _groups(collections, text_rows.shape[0])
    results: dict[str, PoolResult] = {}
    for pool in dict.fromkeys(pools):
        if pool == WITHIN:
            ranks = _within(image_rows, text_rows, codes, query_block, candidate_block, tie_tol)
        else:
            ranks = _blocked_ranks(
                image_rows,
                text_rows,
                query_block=query_block,
                candidate_block=candidate_block,
                tie_tol=tie_tol,
            )
        results[pool] = _summary(ranks, names, codes, pool, kept)
    return results


def result_rows(result: PoolResult, *, model: str, data: str) -> list[ResultRow]:
    """Table rows: one per collection and K, then the ``ALL`` rows with the macro average."""
    rows = [
        ResultRow(
            model, data, result.pool, c.collection, k, c.accuracy(k), None, c.hits[k], c.queries
        )
        for c in result.collections
        for k in result.ks
    ]
    total = result.total
    rows += [
        ResultRow(
            model,
            data,
            result.pool,
            ALL,
            k,
            total.accuracy(k),
            result.macro(k),
            total.hits[k],
            total.queries,
        )
        for k in result.ks
    ]
    return rows


def write_results(database: str | Path, rows: Iterable[ResultRow]) -> int:
    """Upsert rows into a DuckDB file's ``retrieval_results`` (see ``upsert_results``)."""
    con = connect(database=str(database))
    try:
        return upsert_results(con, rows)
    finally:
        con.close()


def upsert_results(con: duckdb.DuckDBPyConnection, rows: Iterable[ResultRow]) -> int:
    """Upsert rows into ``retrieval_results``: a rerun replaces its rows.

    Rows are keyed by (model, data, pool, collection, k); the table is created when
    missing. Returns the number of rows written.
    """
    batch = list(rows)
    keys = {(r.model, r.data, r.pool, r.collection, r.k) for r in batch}
    if len(keys) != len(batch):
        raise ValueError(
            f"{len(batch) - len(keys)} rows repeat a (model, data, pool, collection, k)"
        )
    run_sql(con, "evaluate/retrieval_results")
    if batch:
        run_sql(
            con,
            "evaluate/retrieval_upsert",
            {
                "model": [r.model for r in batch],
                "data": [r.data for r in batch],
                "pool": [r.pool for r in batch],
                "collection": [r.collection for r in batch],
                "k": [r.k for r in batch],
                "accuracy": [r.accuracy for r in batch],
                "macro": [r.macro_accuracy for r in batch],
                "hits": [r.hits for r in batch],
                "queries": [r.queries for r in batch],
            },
        )
    return len(batch)


def retrieval_result_id(model: str, data: str) -> str:
    """The id of a (model, data) evaluation: its results file is named by it, so a rerun
    finds what an earlier run measured."""
    return hashlib.sha256(f"{model}\n{data}".encode()).hexdigest()[:16]


def save_results(settings: Settings, rows: Iterable[ResultRow], url: str) -> None:
    """The rows as a ``retrieval_results`` parquet file at ``url`` (S3 or local)."""
    con = connect(settings)
    try:
        upsert_results(con, rows)
        con.execute(f"COPY retrieval_results TO {quote(url)} (FORMAT parquet)")
    finally:
        con.close()
