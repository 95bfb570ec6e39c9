"""The one backoff policy: full jitter under a doubling, capped step; Retry-After wins."""

from __future__ import annotations

import random

from tasks.core.retry import backoff_delay


def test_delays_spread_under_a_doubling_capped_step() -> None:
    rng = random.Random(0)
    for retry, step in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        delays = [backoff_delay(retry, 0.5, 8.0, rng) for _ in range(2000)]
        assert 0 <= min(delays) < step * 0.05 and step * 0.95 < max(delays) <= step
        assert abs(sum(delays) / len(delays) - step / 2) < step * 0.05  # uniform: mean step/2


def test_retry_after_wins_but_is_capped() -> None:
    rng = random.Random(0)
    assert backoff_delay(0, 0.5, 30.0, rng, retry_after=12.0) == 12.0
    assert backoff_delay(3, 0.5, 30.0, rng, retry_after=3600.0) == 30.0


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [backoff_delay(n, 0.25, 30.0, random.Random(7)) for n in range(5)]
    assert first == [backoff_delay(n, 0.25, 30.0, random.Random(7)) for n in range(5)]
