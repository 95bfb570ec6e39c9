"""The per-host limiter in one process: slots, pace and bounded waits.

Timings are real and short; bounds are loose on the slow side (a shared 2-core
machine) and strict on the side the limiter promises (never faster, never more).
"""

from __future__ import annotations

import asyncio

import pytest

from tasks.core.errors import ItemError
from tasks.core.settings import Settings, load_settings
from tasks.ingest.politeness import LocalHostLimiter, host_limiter


class InFlight:
    """Counts requests inside their slot, per host, and the most at once."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.starts: list[float] = []

    async def request(self, limiter: LocalHostLimiter, host: str, hold_s: float) -> None:
        async with limiter.slot(host):
            self.starts.append(asyncio.get_running_loop().time())
            self.now[host] = self.now.get(host, 0) + 1
            self.most[host] = max(self.most.get(host, 0), self.now[host])
            await asyncio.sleep(hold_s)
            self.now[host] -= 1


async def test_concurrency_is_per_host_and_reached() -> None:
    limiter = LocalHostLimiter(Settings(per_host_concurrency=3))
    seen = InFlight()
    await asyncio.gather(
        *(seen.request(limiter, host, 0.02) for host in ("a:443", "b:443") for _ in range(12))
    )
    assert seen.most == {"a:443": 3, "b:443": 3}


async def test_rate_spaces_request_starts() -> None:
    limiter = LocalHostLimiter(Settings(per_host_concurrency=8, per_host_rps=50))
    seen = InFlight()
    await asyncio.gather(*(seen.request(limiter, "a:443", 0.0) for _ in range(20)))
    fifth = [b - a for a, b in zip(seen.starts, seen.starts[5:], strict=False)]
    assert min(fifth) >= 5 / 50 - 0.005  # never faster than the pace
    assert 19 / 50 - 0.005 <= seen.starts[-1] - seen.starts[0] < 2.0


async def test_unpaced_by_default() -> None:
    limiter = LocalHostLimiter(Settings(per_host_concurrency=50))
    seen = InFlight()
    await asyncio.gather(*(seen.request(limiter, "a:443", 0.0) for _ in range(50)))
    assert seen.starts[-1] - seen.starts[0] < 0.5


async def test_wait_is_bounded_with_a_clear_error() -> None:
    limiter = LocalHostLimiter(Settings(per_host_concurrency=1), max_wait_s=0.1)
    async with limiter.slot("slow.example:443"):
        with pytest.raises(ItemError) as caught:
            async with limiter.slot("slow.example:443"):
                pass
    assert caught.value.kind == "timeout"
    assert "slow.example:443" in str(caught.value) and "1 at a time" in str(caught.value)
    async with limiter.slot("slow.example:443"):  # the timed-out wait left nothing behind
        pass


async def test_cancelled_waiters_give_back_nothing_they_did_not_take() -> None:
    limiter = LocalHostLimiter(Settings(per_host_concurrency=2))
    seen = InFlight()
    holders = [asyncio.create_task(seen.request(limiter, "a:443", 0.2)) for _ in range(2)]
    waiters = [asyncio.create_task(seen.request(limiter, "a:443", 0.0)) for _ in range(5)]
    await asyncio.sleep(0.05)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*holders, *waiters, return_exceptions=True)
    assert seen.most == {"a:443": 2}
    late = InFlight()
    await asyncio.gather(*(late.request(limiter, "a:443", 0.02) for _ in range(6)))
    assert late.most == {"a:443": 2}


async def test_outside_dask_the_limits_are_per_process() -> None:
    assert isinstance(host_limiter(Settings()), LocalHostLimiter)


def test_rate_setting_from_the_environment() -> None:
    assert load_settings({"NFT1000_PER_HOST_RPS": "2.5"}).per_host_rps == 2.5
    assert Settings().per_host_rps == 0
    with pytest.raises(ValueError, match="per_host_rps"):
        LocalHostLimiter(Settings(per_host_rps=-1))
