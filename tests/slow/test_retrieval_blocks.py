"""Blocked top-K ranks equal dense ones at every block shape, down to 1 x 1 blocks.

The small blocks make these the slow part of the retrieval tests (unit/test_retrieval.py
has the rest); the data is tests.support.retrieval's exact sign vectors.
"""

from __future__ import annotations

import pytest
import torch

from tasks.evaluate.retrieval import TIE_TOL, pooled_ranks, within_collection_ranks
from tests.support.retrieval import (
    dense_reference,
    dense_within_reference,
    sign_pairs,
    uneven_labels,
)

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
BLOCKS = [(1, 1), (1, 7), (16, 50), (64, 203), (203, 203), (500, 1000), (13, 2)]


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
