"""bench/evaluate_topk: blocked top-K retrieval ranks against a dense baseline; print JSON.

Random embeddings (texts, and images = texts plus noise, cosine about 0.16, so
ranks are spread) in equal collections. Timed from float32 arrays to per-query
ranks, inputs checked and normalised included, on one device, the best of
``--repeats`` runs (CPU machines here are shared and noisy):

- within collections: ours (tasks.evaluate.retrieval.within_collection_ranks) on every
  pair, against the named baseline "dense_torch": each collection's full
  n x n similarity matrix in torch, rank = 1 + the scores above the diagonal's
  (the same tie rule);
- pooled: ours (tasks.evaluate.retrieval.pooled_ranks) and dense_torch on the first
  ``--pooled-pairs`` pairs; dense_torch only as far as its matrix fits under
  ``--dense-gib`` (so ``--pooled-pairs 1000000`` on a GPU times ours alone).

The JSON counts the queries whose ranks differ between ours and the baseline
(float rounding at near-ties, see ``compare``) and gives the size of the largest
score matrix each holds at once.

    python -m bench.evaluate_topk [--pairs N] [--collections C] [--pooled-pairs P]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.measure import Meter
from tasks.evaluate.retrieval import (
    CANDIDATE_BLOCK,
    QUERY_BLOCK,
    TIE_TOL,
    pooled_ranks,
    within_collection_ranks,
)

NOISE = 6.0  # image = text + NOISE * gaussian: cosine 1/sqrt(1 + NOISE**2) ~ 0.16


def embeddings(
    pairs: int, collections: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, texts and shuffled labels of equal collections."""
    rng = np.random.default_rng(seed)
    texts = rng.standard_normal((pairs, dim), dtype=np.float32)
    images = texts + NOISE * rng.standard_normal((pairs, dim), dtype=np.float32)
    labels = [f"collection-{i % collections:04d}" for i in rng.permutation(pairs)]
    return images, texts, labels


def dense_ranks(images: np.ndarray, texts: np.ndarray, device: torch.device) -> torch.Tensor:
    """The baseline: the whole similarity matrix at once."""
    image_rows = torch.nn.functional.normalize(torch.from_numpy(images).to(device), dim=1)
    text_rows = torch.nn.functional.normalize(torch.from_numpy(texts).to(device), dim=1)
    scores = text_rows @ image_rows.T
    positive = scores.diagonal().unsqueeze(1)
    return ((scores > positive + TIE_TOL).sum(dim=1) + 1).cpu()


def dense_within(
    images: np.ndarray, texts: np.ndarray, labels: list[str], device: torch.device
) -> torch.Tensor:
    """The baseline per collection: one dense matrix each."""
    ranks = torch.empty(len(labels), dtype=torch.int64)
    names = np.asarray(labels, dtype=object)
    for name in sorted(set(labels)):
        rows = np.flatnonzero(names == name)
        ranks[torch.from_numpy(rows)] = dense_ranks(images[rows], texts[rows], device)
    return ranks


def _seconds(run: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    meter = Meter()
    ranks = run()  # ranks come back on the CPU, so the device has finished
    return ranks, meter.seconds()


def _side(queries: int, seconds: float, ranks: torch.Tensor, mib: float) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "queries_per_s": round(queries / seconds),
        "top1": round(float((ranks <= 1).double().mean()), 4),
        "top10": round(float((ranks <= 10).double().mean()), 4),
        "largest_score_matrix_mib": round(mib, 1),
    }


def compare(
    ours: Callable[[], torch.Tensor],
    baseline: Callable[[], torch.Tensor] | None,
    mib: tuple[float, float],
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """Best of ``repeats`` for each, run in turns so both see the same machine load.

    Ranks may differ by float rounding at near-ties only: ours takes the positive's
    score from a row-wise product, the baseline from the matrix's diagonal, and the
    two can differ in the last bit (~1e-7), which moves candidates within that of it.
    No baseline (None): its dense matrix would not fit.
    """
    runs = {"ours": ours} if baseline is None else {"ours": ours, "baseline": baseline}
    times = dict.fromkeys(runs, float("inf"))
    ranks: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            ranks[name], seconds = _seconds(run, device)
            times[name] = min(times[name], seconds)
    queries = ranks["ours"].shape[0]
    result = {"queries": queries, "ours": _side(queries, times["ours"], ranks["ours"], mib[0])}
    if baseline is None:
        result["baseline"] = {
            "name": "dense_torch",
            "skipped": f"its {mib[1] / 1024:.1f} GiB score matrix is over --dense-gib",
        }
        return result
    return {
        **result,
        "baseline": {
            "name": "dense_torch",
            **_side(queries, times["baseline"], ranks["baseline"], mib[1]),
        },
        "ranks_differing": int((ranks["ours"] != ranks["baseline"]).sum()),
        "max_rank_difference": int((ranks["ours"] - ranks["baseline"]).abs().max()),
        "speedup_vs_dense": round(times["baseline"] / times["ours"], 2),
    }


def _mib(rows: int, columns: int) -> float:
    return rows * columns * 4 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--collections", type=int, default=100)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pooled-pairs", type=int, default=20_000)
    parser.add_argument("--query-block", type=int, default=QUERY_BLOCK)
    parser.add_argument("--candidate-block", type=int, default=CANDIDATE_BLOCK)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dense-gib", type=float, default=8.0, help="baseline memory cap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    blocks = {"query_block": args.query_block, "candidate_block": args.candidate_block}
    images, texts, labels = embeddings(args.pairs, args.collections, args.dim, args.seed)

    pooled_ranks(texts[:256], texts[:256], query_block=64, candidate_block=64, device=device)

    size = -(-args.pairs // args.collections)  # the largest collection
    dense_cap = args.dense_gib * 1024
    ours_mib = _mib(min(args.query_block, size), min(args.candidate_block, size))
    within = compare(
        lambda: within_collection_ranks(images, texts, labels, device=device, **blocks),
        (lambda: dense_within(images, texts, labels, device))
        if _mib(size, size) <= dense_cap
        else None,
        (ours_mib, _mib(size, size)),
        device,
        args.repeats,
    )
    pooled_n = min(args.pooled_pairs, args.pairs)
    some_images, some_texts = images[:pooled_n], texts[:pooled_n]
    ours_mib = _mib(min(args.query_block, pooled_n), min(args.candidate_block, pooled_n))
    pooled = compare(
        lambda: pooled_ranks(some_images, some_texts, device=device, **blocks),
        (lambda: dense_ranks(some_images, some_texts, device))
        if _mib(pooled_n, pooled_n) <= dense_cap
        else None,
        (ours_mib, _mib(pooled_n, pooled_n)),
        device,
        args.repeats,
    )
    pooled["ours"]["gflops"] = round(
        2 * pooled_n * pooled_n * args.dim / pooled["ours"]["seconds"] / 1e9
    )
    print(
        json.dumps(
            {
                "benchmark": "evaluate_topk",
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else f"cpu ({torch.get_num_threads()} threads)",
                "pairs": args.pairs,
                "collections": args.collections,
                "dim": args.dim,
                **blocks,
                "within": within,
                "pooled": pooled,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
