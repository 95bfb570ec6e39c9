"""Top-K retrieval accuracy (tasks.evaluate.retrieval): hand-checked ranks, ties, blocked against
dense, within against pooled, float16 inputs, the DuckDB results table, bad inputs.

Exactness checks use random sign vectors of dimension 64: normalised, every entry is
+-1/8, so every score is an exact multiple of 1/64 in float32 whatever the order of
the sums. Blocked and dense then see the very same numbers, ties included (many).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from tasks.evaluate.retrieval import (
    ALL,
    KS,
    MAX_CANDIDATE_BLOCK,
    POOLED,
    TIE_TOL,
    WITHIN,
    PoolResult,
    ResultRow,
    evaluate,
    pooled_ranks,
    result_rows,
    summarise,
    within_collection_ranks,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
BLOCKS = [(1, 1), (1, 7), (16, 50), (64, 203), (203, 203), (500, 1000), (13, 2)]


def dense_reference(images: torch.Tensor, texts: torch.Tensor, tol: float) -> torch.Tensor:
    """The rule written plainly: 1 + other candidates scoring above positive + tol."""
    image_rows = torch.nn.functional.normalize(images.double(), dim=1)
    text_rows = torch.nn.functional.normalize(texts.double(), dim=1)
    scores = text_rows @ image_rows.T
    beats = scores > scores.diagonal().unsqueeze(1) + tol
    beats.fill_diagonal_(False)
    return beats.sum(dim=1) + 1


def dense_within_reference(
    images: torch.Tensor, texts: torch.Tensor, labels: list[str], tol: float
) -> torch.Tensor:
    ranks = torch.zeros(len(labels), dtype=torch.int64)
    for name in set(labels):
        rows = torch.tensor([i for i, label in enumerate(labels) if label == name])
        ranks[rows] = dense_reference(images[rows], texts[rows], tol)
    return ranks


def sign_pairs(pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts of random signs; images the same with 35% of the signs flipped.

    Positives then score 0.3 on average against others' 0 +- 0.125: ranks spread
    from 1 to dozens, and hundreds of candidates tie with a positive exactly.
    """
    g = torch.Generator().manual_seed(seed)
    texts = torch.randint(0, 2, (pairs, 64), generator=g).float() * 2 - 1
    flips = torch.where(torch.rand(pairs, 64, generator=g) < 0.35, -1.0, 1.0)
    return texts * flips, texts


def uneven_labels(pairs: int, seed: int) -> list[str]:
    """Shuffled labels of uneven collections, one of a single pair."""
    rng = np.random.default_rng(seed)
    labels = ["solo"] + [
        f"c{int(x)}" for x in rng.choice(5, pairs - 1, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    ]
    return [labels[i] for i in rng.permutation(pairs)]


def test_four_pairs_checked_by_hand() -> None:
    # Images at 0, 90, 180 and 45 degrees; cosines of each text with i0, i1, i2, i3:
    # t0 (1, 0):    1,     0,     -1,    .707  -> own i0 is first:           rank 1
    # t1 (1, 2):    .447,  .894,  -.447, .949  -> i3 beats own i1:           rank 2
    # t2 (1, .5):   .894,  .447,  -.894, .949  -> all three beat own i2:     rank 4
    # t3 (-1, 1):   -.707, .707,  .707,  0     -> i1 and i2 beat own i3:     rank 3
    images = np.array([[1, 0], [0, 1], [-1, 0], [1, 1]], dtype=np.float32)
    texts = np.array([[1, 0], [1, 2], [1, 0.5], [-1, 1]], dtype=np.float32)
    labels = ["hand"] * 4
    assert pooled_ranks(images, texts).tolist() == [1, 2, 4, 3]
    assert within_collection_ranks(images, texts, labels).tolist() == [1, 2, 4, 3]

    result = evaluate(images, texts, labels, ks=(1, 2, 3, 5))[WITHIN]
    assert {k: result.micro(k) for k in (1, 2, 3, 5)} == {1: 0.25, 2: 0.5, 3: 0.75, 5: 1.0}
    assert result.total.hits == {1: 1, 2: 2, 3: 3, 5: 4}
    assert [c.collection for c in result.collections] == ["hand"]
    assert result.macro(1) == 0.25


def test_ties_go_to_the_query() -> None:
    # i0 and i1 are the same picture: for t0 and t1 the duplicate ties with the own
    # image and does not count, so both rank 1 (optimistic). For t2 (0, 1), own i2
    # (1, 1) scores .707; i0 and i1 score exactly 0 and i3 (0, 1) scores 1: rank 2.
    images = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
    texts = np.array([[1, 0.1], [1, -0.1], [0, 1], [0, 1]], dtype=np.float32)
    assert pooled_ranks(images, texts).tolist() == [1, 1, 2, 1]


def test_candidates_within_tie_tol_of_the_positive_tie() -> None:
    # t0 at 0 rad; own i0 at 0.2 rad (cos .980); i1 at 0.1 rad (cos .995): i1 beats
    # the positive by .015, so it counts only when tie_tol is below that.
    images = np.array([[np.cos(0.2), np.sin(0.2)], [np.cos(0.1), np.sin(0.1)]])
    texts = np.array([[1.0, 0.0], [np.cos(0.1), np.sin(0.1)]])
    assert pooled_ranks(images, texts, tie_tol=0.01)[0] == 2
    assert pooled_ranks(images, texts, tie_tol=0.02)[0] == 1
    assert pooled_ranks(images, texts)[0] == 2  # default TIE_TOL is far below .015
    assert TIE_TOL < 0.015


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("query_block", "candidate_block"), BLOCKS)
def test_blocked_equals_dense_on_random_data(
    device: str, query_block: int, candidate_block: int
) -> None:
    images, texts = sign_pairs(203, seed=1)  # 203 = 7 * 29: most blocks do not divide it
    labels = uneven_labels(203, seed=2)
    pooled = pooled_ranks(
        images, texts, query_block=query_block, candidate_block=candidate_block, device=device
    )
    assert torch.equal(pooled, dense_reference(images, texts, TIE_TOL))
    within = within_collection_ranks(
        images,
        texts,
        labels,
        query_block=query_block,
        candidate_block=candidate_block,
        device=device,
    )
    assert torch.equal(within, dense_within_reference(images, texts, labels, TIE_TOL))
    assert within[labels.index("solo")] == 1  # a collection of one: nothing to confuse


@pytest.mark.parametrize(("query_block", "candidate_block"), BLOCKS)
def test_a_query_never_competes_with_its_own_image(query_block: int, candidate_block: int) -> None:
    # With tie_tol 0 the own image's score from the matrix product could exceed the
    # row-wise positive by a rounding bit; it must still not count.
    g = torch.Generator().manual_seed(12)
    texts = torch.randn(203, 32, generator=g)
    images = texts + 2.0 * torch.randn(203, 32, generator=g)
    scores = torch.nn.functional.normalize(texts.double(), dim=1) @ (
        torch.nn.functional.normalize(images.double(), dim=1).T
    )
    gaps = (scores - scores.diagonal().unsqueeze(1)).abs() + torch.eye(203)
    assert gaps.min() > 1e-5  # no near-ties: float32 and float64 ranks agree
    ranks = pooled_ranks(
        images, texts, query_block=query_block, candidate_block=candidate_block, tie_tol=0.0
    )
    assert torch.equal(ranks, dense_reference(images, texts, 0.0))


def test_random_data_has_ties_and_spread_ranks() -> None:
    """The data of the test above is a real test of ties and of every rank position."""
    images, texts = sign_pairs(203, seed=1)
    scores = (
        torch.nn.functional.normalize(texts, dim=1) @ torch.nn.functional.normalize(images, dim=1).T
    )
    ties = (scores == scores.diagonal().unsqueeze(1)).sum() - scores.shape[0]
    assert ties > 100
    ranks = pooled_ranks(images, texts)
    assert (ranks == 1).any() and (ranks > 50).any()
    assert not torch.equal(ranks, dense_reference(images, texts, -1e-9))  # pessimistic: >=


def test_pooled_ranks_never_beat_within_ranks() -> None:
    images, texts = sign_pairs(400, seed=3)
    labels = uneven_labels(400, seed=4)
    within = within_collection_ranks(images, texts, labels, query_block=64, candidate_block=100)
    pooled = pooled_ranks(images, texts, query_block=64, candidate_block=100)
    assert (pooled >= within).all()  # the pooled candidates include the collection's
    assert (pooled > within).sum() > 100
    results = evaluate(images, texts, labels, query_block=64, candidate_block=100)
    for k in KS:
        assert results[POOLED].micro(k) <= results[WITHIN].micro(k)
    assert results[WITHIN].total.hits[1] == int((within == 1).sum())
    assert results[POOLED].total.hits[10] == int((pooled <= 10).sum())


def test_a_lookalike_in_another_collection_only_hurts_pooled() -> None:
    # Collection "a": t0 -> own i0 (cos .98); collection "b": i1 is t0's exact
    # direction, its own text t1 points elsewhere. Within "a", t0 ranks 1; pooled, 2.
    images = np.array([[1, 0.2], [1, 0], [0, 1]], dtype=np.float32)
    texts = np.array([[1, 0], [0, 1], [-1, 1]], dtype=np.float32)
    labels = ["a", "b", "b"]
    results = evaluate(images, texts, labels, ks=(1,))
    within, pooled = results[WITHIN], results[POOLED]
    # t1 (0, 1): own i1 scores 0, i2 scores 1 -> rank 2 within "b" and pooled.
    # t2 (-1, 1): own i2 scores .707, the rest below -> rank 1 everywhere.
    assert [c.hits[1] for c in within.collections] == [1, 1]
    assert [c.hits[1] for c in pooled.collections] == [0, 1]
    # Macro weighs collections ("a" 1/1, "b" 1/2), micro weighs queries (2 of 3).
    assert within.macro(1) == pytest.approx(0.75)
    assert within.micro(1) == pytest.approx(2 / 3)
    assert pooled.macro(1) == pytest.approx(0.25)
    assert pooled.micro(1) == pytest.approx(1 / 3)


def test_float16_inputs_rank_like_their_float32_values() -> None:
    g = torch.Generator().manual_seed(5)
    texts = torch.randn(300, 32, generator=g).half()
    images = (texts.float() + 2.0 * torch.randn(300, 32, generator=g)).half()
    labels = uneven_labels(300, seed=6)
    as32 = within_collection_ranks(images.float(), texts.float(), labels, query_block=37)
    assert torch.equal(within_collection_ranks(images, texts, labels, query_block=37), as32)
    numpy16 = within_collection_ranks(images.numpy(), texts.numpy(), labels, query_block=37)
    assert torch.equal(numpy16, as32)
    assert torch.equal(
        pooled_ranks(images, texts, candidate_block=41), pooled_ranks(images.float(), texts.float())
    )
    assert 0 < int((as32 == 1).sum()) < 300  # neither trivial nor hopeless


def test_results_table_upsert_replaces_a_rerun(tmp_path: Path) -> None:
    database = tmp_path / "results.duckdb"
    images, texts = sign_pairs(120, seed=7)
    labels = uneven_labels(120, seed=8)
    first = evaluate(images, texts, labels)
    rows = [r for p in first.values() for r in result_rows(p, model="m1", data="test")]
    collections = len(first[WITHIN].collections)
    assert len(rows) == 2 * (collections + 1) * len(KS)
    assert write_results(database, rows) == len(rows)

    # Rerun with other embeddings: the same keys, new numbers, no extra rows.
    other, _ = sign_pairs(120, seed=9)
    second = evaluate(other, texts, labels)
    rerun = [r for p in second.values() for r in result_rows(p, model="m1", data="test")]
    write_results(database, rerun)
    write_results(database, result_rows(first[WITHIN], model="m2", data="test"))

    con = duckdb.connect(str(database), read_only=True)
    stored = con.sql(
        "SELECT pool, collection, k, accuracy, macro_accuracy, hits, queries "
        "FROM retrieval_results WHERE model = 'm1' ORDER BY ALL"
    ).fetchall()
    assert stored == sorted(
        (r.pool, r.collection, r.k, r.accuracy, r.macro_accuracy, r.hits, r.queries) for r in rerun
    )
    assert stored != sorted(
        (r.pool, r.collection, r.k, r.accuracy, r.macro_accuracy, r.hits, r.queries) for r in rows
    )
    counts = dict(
        con.sql("SELECT model, count(*) FROM retrieval_results GROUP BY model").fetchall()
    )
    assert counts == {"m1": len(rows), "m2": (collections + 1) * len(KS)}
    # The 'all' rows carry both averages; per-collection rows add up to them.
    total = con.sql(
        "SELECT accuracy, macro_accuracy, hits, queries FROM retrieval_results "
        f"WHERE model = 'm1' AND pool = 'within' AND collection = '{ALL}' AND k = 1"
    ).fetchone()
    assert total == (
        second[WITHIN].micro(1),
        second[WITHIN].macro(1),
        second[WITHIN].total.hits[1],
        120,
    )
    summed = con.sql(
        "SELECT sum(hits), avg(accuracy) FROM retrieval_results WHERE model = 'm1' "
        f"AND pool = 'within' AND collection <> '{ALL}' AND k = 1"
    ).fetchone()
    assert summed == (total[2], pytest.approx(total[1]))
    con.close()


def test_results_table_refuses_repeated_keys_and_bad_rows(tmp_path: Path) -> None:
    database = tmp_path / "results.duckdb"
    row = ResultRow("m", "d", WITHIN, "c", 1, 0.5, None, 1, 2)
    with pytest.raises(ValueError, match="repeat"):
        write_results(database, [row, row])
    with pytest.raises(duckdb.ConstraintException):
        write_results(database, [ResultRow("m", "d", "nearby", "c", 1, 0.5, None, 1, 2)])
    with pytest.raises(duckdb.ConstraintException):
        write_results(database, [ResultRow("m", "d", WITHIN, "c", 1, 1.5, None, 3, 2)])
    assert write_results(database, []) == 0
    con = duckdb.connect(str(database), read_only=True)
    assert con.sql("SELECT count(*) FROM retrieval_results").fetchone() == (0,)
    con.close()


GOOD = np.eye(3, dtype=np.float32) + 0.1


@pytest.mark.parametrize(
    ("images", "texts", "labels", "error", "match"),
    [
        (GOOD, GOOD[:2], ["a"] * 3, ValueError, "same shape"),
        (GOOD[0], GOOD[0], ["a"] * 3, ValueError, "matrix"),
        (GOOD[:0], GOOD[:0], [], ValueError, "non-empty"),
        (
            np.where(np.eye(3) > 0, np.nan, GOOD),
            GOOD,
            ["a"] * 3,
            ValueError,
            "NaN or infinity in 3 row",
        ),
        (
            GOOD,
            np.where(np.eye(3) > 0, np.inf, GOOD),
            ["a"] * 3,
            ValueError,
            "texts: NaN or infinity in 3 row",
        ),
        (
            GOOD * np.array([[1], [0], [1]]),
            GOOD,
            ["a"] * 3,
            ValueError,
            r"zero vectors .* 1 row\(s\) \(first: row 1\)",
        ),
        (np.eye(3, dtype=np.int64), GOOD, ["a"] * 3, TypeError, "floating point"),
        (GOOD.tolist(), GOOD, ["a"] * 3, TypeError, "tensor or numpy"),
        (GOOD, GOOD, ["a"] * 2, ValueError, "2 collection labels for 3 pairs"),
        (GOOD, GOOD, ["a", 1, "b"], TypeError, "must be str"),
        (GOOD, GOOD, ["a", ALL, "b"], ValueError, "rename"),
    ],
)
def test_bad_inputs_raise(
    images: object, texts: object, labels: list[str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        evaluate(images, texts, labels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"query_block": 0}, "block sizes"),
        ({"candidate_block": MAX_CANDIDATE_BLOCK}, "block sizes"),
        ({"tie_tol": -1e-9}, "tie_tol"),
        ({"tie_tol": float("nan")}, "tie_tol"),
        ({"ks": ()}, "ks"),
        ({"ks": (0, 5)}, "ks"),
        ({"pools": ("nearby",)}, "pools"),
    ],
)
def test_bad_options_raise(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(GOOD, GOOD, ["a"] * 3, **options)  # type: ignore[arg-type]


def test_summarise_checks_its_pool_and_matches_evaluate() -> None:
    images, texts = sign_pairs(90, seed=10)
    labels = uneven_labels(90, seed=11)
    ranks = within_collection_ranks(images, texts, labels)
    summary: PoolResult = summarise(ranks, labels, WITHIN, ks=(10, 1, 10))
    assert summary == evaluate(images, texts, labels, pools=(WITHIN,), ks=(1, 10))[WITHIN]
    with pytest.raises(ValueError, match="pool"):
        summarise(ranks, labels, "nearby")


def test_bench_prints_agreeing_ranks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.evaluate_topk", "--pairs", "3000", "--collections", "3",
         "--dim", "64", "--pooled-pairs", "2000", "--query-block", "300",
         "--candidate-block", "700", "--repeats", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    for pool in ("within", "pooled"):
        assert report[pool]["baseline"]["name"] == "dense_torch"
        # Ours and dense differ by float rounding at near-ties only: rarely, and by little.
        assert report[pool]["ranks_differing"] <= report[pool]["queries"] // 100
        assert report[pool]["max_rank_difference"] <= 2
        assert report[pool]["ours"]["queries_per_s"] > 0
    assert report["device"] == "cpu" or report["device"].startswith("cuda")
