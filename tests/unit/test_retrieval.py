"""Top-K retrieval accuracy (tasks.evaluate.retrieval): hand-checked ranks, ties, within
against pooled, float16 inputs, the DuckDB results table, bad inputs.

Exactness checks use tests.support.retrieval's random sign vectors, whose scores are exact
in float32. Blocked against dense at every block shape is slow/test_retrieval_blocks.py.
"""

from __future__ import annotations

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
from tests.support.retrieval import dense_reference, sign_pairs, uneven_labels


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


def test_random_data_has_ties_and_spread_ranks() -> None:
    """The data of slow/test_retrieval_blocks.py is a real test of ties and of every rank."""
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
