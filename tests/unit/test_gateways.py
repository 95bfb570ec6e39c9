"""The gateway pool: gateways that keep failing are asked last for a while, then again."""

from __future__ import annotations

from tasks.core.errors import ItemError
from tasks.ingest.gateways import BENCH_S, FAILS_TO_BENCH, GatewayPool

A, B, C = "https://a.example", "https://b.example", "https://c.example"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_configured_order_until_a_gateway_keeps_failing() -> None:
    clock = Clock()
    pool = GatewayPool([A, B, C], clock)
    assert pool.order() == [A, B, C]
    for _ in range(FAILS_TO_BENCH - 1):
        pool.failed(A, ItemError("timeout", "slow"))
    assert pool.order() == [A, B, C]  # a few failures are noise
    pool.failed(A, ItemError("cid_mismatch", "lied"))
    assert pool.order() == [B, C, A]
    assert pool.benched() == [A]
    clock.now += BENCH_S + 1
    assert pool.order() == [A, B, C]  # another chance after the bench
    pool.failed(A, ItemError("connection", "down"))
    assert pool.order() == [B, C, A]  # still failing: straight back to the bench
    pool.succeeded(A)
    assert pool.order() == [A, B, C]


def test_the_contents_own_faults_do_not_count_against_a_gateway() -> None:
    pool = GatewayPool([A, B], Clock())
    for _ in range(10):
        pool.failed(A, ItemError("http_status", "404"))
        pool.failed(A, ItemError("bad_car", "not a file", verified=True))
        pool.failed(A, ItemError("too_large", "big", verified=True))
    assert pool.order() == [A, B]


def test_a_success_resets_the_count() -> None:
    pool = GatewayPool([A, B], Clock())
    for _ in range(5):
        for _ in range(FAILS_TO_BENCH - 1):
            pool.failed(A, ItemError("timeout", "slow"))
        pool.succeeded(A)
    assert pool.order() == [A, B]
