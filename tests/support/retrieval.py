"""Reference ranks and exact random data for the retrieval tests.

Exactness checks use random sign vectors of dimension 64: normalised, every entry is
+-1/8, so every score is an exact multiple of 1/64 in float32 whatever the order of
the sums. Blocked and dense then see the very same numbers, ties included (many).
"""

from __future__ import annotations

import numpy as np
import torch


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
