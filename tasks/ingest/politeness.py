"""Per-host politeness: how many requests may be in flight to one host, and how fast.

``async with limiter.slot(host):`` waits for a concurrency slot and then for that
host's pace (``settings.per_host_concurrency`` slots, ``settings.per_host_rps``
requests per second, 0 meaning unpaced). ``host_limiter`` picks the limiter:

- ``DaskHostLimiter`` when the shard runs on a Dask worker: the limits hold for the
  whole cluster. Each host is one ``distributed.Semaphore`` on the scheduler with
  ``per_host_concurrency`` leases. A shard leases slots one at a time as its own
  demand for the host grows (one scheduler round trip per slot, not per request),
  keeps them while they are in use, gives back any left unused for a whole tick, and
  returns each after ``hold_s`` so that waiting shards get their turn. Each lease
  carries an equal share of the rate: a shard holding k of C slots paces its
  requests to ``per_host_rps * k / C``, so the shares add up to at most
  ``per_host_rps`` with no round trip for rate at all. Over any T seconds the
  cluster sends at most ``per_host_rps * T`` plus one request per slot holder.
  Leases are refreshed by the worker's event loop; a killed worker stops refreshing
  and the scheduler frees its slots after ``distributed.scheduler.locks.lease-timeout``
  (30 s by default, checked every ``lease-validation-interval``, 10 s). The flip
  side: a worker whose event loop stalls longer than that loses its leases while
  still using them (Dask logs it), and the host sees more than the limit meanwhile.
- ``LocalHostLimiter`` anywhere else (code run outside a Dask task: tests, the CLI):
  the same limits, per process.

A cluster limiter whose scheduler fails, or does not answer within
``acquire_poll_s + rpc_grace_s`` (15 s), logs a warning and falls back to the local
limits for the rest of its life (one shard), so a lost scheduler never hangs a
shard. A slot waited for longer than ``max_wait_s`` (by default the URL deadline)
raises ItemError "timeout" naming the host and the limit.

Prefect's global concurrency limits were the other candidate: their leases also
come back from a killed process, but the API accepts leases of 60 s at the least and
frees expired ones on a 15 s loop (measured: 63 s after SIGKILL), every acquisition
is a database write, and waiters poll with Retry-After instead of being woken.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from tasks.core.errors import ItemError
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from distributed import Semaphore

log = logging.getLogger(__name__)

SEMAPHORE_PREFIX = "nft1000-host:"


class _Gate:
    """One host's slots and pace in this process, handed out first come, first served.

    Pacing lets requests through one at a time, in order, at least ``1 / rate``
    seconds apart as they actually pass (a late wake-up shifts the ones after it
    instead of letting them bunch up). It comes after the slot, so a free slot never
    lets a queue of paced requests out in a burst.
    """

    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pace = asyncio.Lock()
        self._next_start = 0.0

    @property
    def free(self) -> int:
        return self.capacity - self.in_use

    @property
    def idle(self) -> bool:
        """Nothing in use or waiting, and no pace still to keep."""
        if self.in_use or self._waiters:
            return False
        return self._next_start <= asyncio.get_running_loop().time()

    def try_enter(self) -> bool:
        """Take a slot at once if one is free and no pace applies (the common case)."""
        if self._waiters or self.in_use >= self.capacity or self.rate > 0:
            return False
        self.in_use += 1
        return True

    def set_limits(self, capacity: int, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self._wake()

    async def enter(self) -> None:
        """Take a slot, then wait for this request's start time."""
        loop = asyncio.get_running_loop()
        if self._waiters or self.in_use >= self.capacity:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.leave()  # handed a slot just as the wait ended
                else:  # unless a wake-up already dropped it as cancelled
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        else:
            self.in_use += 1
        if self.rate > 0:
            try:
                async with self._pace:
                    wait = self._next_start - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self._next_start = loop.time() + 1.0 / self.rate
            except BaseException:
                self.leave()
                raise

    def leave(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


class HostLimiter(ABC):
    """Per-host concurrency and rate limits; close it to give back what it holds."""

    def __init__(self, settings: Settings, *, max_wait_s: float | None = None) -> None:
        if settings.per_host_concurrency < 1:
            raise ValueError("per_host_concurrency must be at least 1")
        if settings.per_host_rps < 0:
            raise ValueError("per_host_rps must be 0 (unpaced) or more")
        self.concurrency = settings.per_host_concurrency
        self.rps = settings.per_host_rps
        self.max_wait_s = settings.url_deadline_s if max_wait_s is None else max_wait_s

    def slot(self, host: str) -> _Slot:
        """Wait (at most ``max_wait_s``) for a slot and a start time for ``host``."""
        return _Slot(self, host)

    @abstractmethod
    async def _take(self, host: str) -> _Gate:
        """Enter ``host``'s gate; the gate entered, for ``_give``."""

    @abstractmethod
    def _give(self, host: str, gate: _Gate) -> None:
        """Leave the gate ``_take`` entered."""

    @abstractmethod
    async def aclose(self) -> None:
        """Give back every slot this limiter holds."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _enter(self, gate: _Gate, host: str, scope: str) -> None:
        """Enter a gate within the bounded wait, or say which limit kept the request."""
        try:
            async with asyncio.timeout(self.max_wait_s):
                await gate.enter()
        except TimeoutError:
            raise ItemError(
                "timeout",
                f"no request slot for {host} within {self.max_wait_s:g} s "
                f"({self.concurrency} at a time {scope}, {self._pace()})",
            ) from None

    def _pace(self) -> str:
        return f"{self.rps:g} requests/s" if self.rps else "unpaced"


class _Slot:
    """``async with limiter.slot(host):`` (a class: a generator-based one costs more)."""

    __slots__ = ("_gate", "_host", "_limiter")

    def __init__(self, limiter: HostLimiter, host: str) -> None:
        self._limiter = limiter
        self._host = host
        self._gate: _Gate | None = None

    async def __aenter__(self) -> None:
        self._gate = await self._limiter._take(self._host)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._gate is not None:
            self._limiter._give(self._host, self._gate)
            self._gate = None


class LocalHostLimiter(HostLimiter):
    """The limits for this process alone (no cluster to share them with)."""

    def __init__(self, settings: Settings, *, max_wait_s: float | None = None) -> None:
        super().__init__(settings, max_wait_s=max_wait_s)
        self._gates: dict[str, _Gate] = {}

    async def _take(self, host: str) -> _Gate:
        gate = self._gates.get(host)
        if gate is None:
            gate = self._gates[host] = _Gate(self.concurrency, self.rps)
        if not gate.try_enter():
            try:
                await self._enter(gate, host, "per process")
            except BaseException:
                self._forget_if_idle(host, gate)
                raise
        return gate

    def _give(self, host: str, gate: _Gate) -> None:
        gate.leave()
        self._forget_if_idle(host, gate)

    def _forget_if_idle(self, host: str, gate: _Gate) -> None:
        """Hosts are token-named: keep no state for idle ones."""
        if gate.idle and self._gates.get(host) is gate:
            del self._gates[host]

    async def aclose(self) -> None:
        """Nothing to give back: these slots live in this process only."""


class _Share:
    """The slots one cluster limiter holds for one host, and the demand for them."""

    def __init__(self, semaphore: Semaphore) -> None:
        self.semaphore = semaphore
        self.gate = _Gate(0, 0.0)
        self.leased_at: deque[float] = deque()  # oldest first, as Dask releases them
        self.retiring = 0  # held slots to give back as soon as they are free
        self.demand = 0  # requests in flight or waiting
        self.peak = 0  # the most demand since the last tick
        self.grower: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self.leased_at)

    @property
    def capacity(self) -> int:
        """The slots requests may use: those held, less the ones on their way back."""
        return self.held - self.retiring


class _FallBack(Exception):
    """The cluster backend failed; the message says how."""


class DaskHostLimiter(HostLimiter):
    """Cluster-wide limits through the Dask scheduler's semaphores, leased in batches.

    ``scheduler`` and ``loop`` are a Dask worker's (or client's) scheduler RPC and
    IO loop; every call to the scheduler runs on that loop, the shard's own event
    loop only awaits the answers. At most ``max_cluster_hosts`` hosts get cluster
    slots per limiter (hosts are token-named); further hosts get per-process limits.
    """

    def __init__(
        self,
        settings: Settings,
        scheduler: Any,
        loop: Any,
        *,
        max_wait_s: float | None = None,
        hold_s: float = 10.0,
        tick_s: float = 1.0,
        acquire_poll_s: float = 5.0,
        rpc_grace_s: float = 10.0,
        max_cluster_hosts: int = 32,
    ) -> None:
        super().__init__(settings, max_wait_s=max_wait_s)
        self._scheduler = scheduler
        self._io_loop = loop
        self._hold_s = hold_s
        self._tick_s = tick_s
        self._poll_s = acquire_poll_s
        self._rpc_grace_s = rpc_grace_s
        self._max_hosts = max_cluster_hosts
        self._shares: dict[str, _Share] = {}
        self._local = LocalHostLimiter(settings, max_wait_s=self.max_wait_s)
        self._keeper: asyncio.Task[None] | None = None
        self._releases: set[concurrent.futures.Future[Any]] = set()
        self.fallback_reason: str | None = None

    @property
    def held(self) -> dict[str, int]:
        """Cluster slots held now, by host."""
        return {host: share.held for host, share in self._shares.items() if share.held}

    async def _take(self, host: str) -> _Gate:
        share = self._share(host)
        if share is None:
            return await self._local._take(host)
        share.demand += 1
        share.peak = max(share.peak, share.demand)
        self._start(share)
        if not share.gate.try_enter():
            try:
                await self._enter(share.gate, host, "cluster-wide")
            except BaseException:
                share.demand -= 1
                raise
        return share.gate

    def _give(self, host: str, gate: _Gate) -> None:
        share = self._shares.get(host)
        if share is None or share.gate is not gate:
            self._local._give(host, gate)
            return
        gate.leave()
        share.demand -= 1
        self._trim(share)

    async def aclose(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        for share in self._shares.values():
            if share.grower is not None:
                share.grower.cancel()  # an acquisition under way is given back on arrival
            self._give_back(share, share.held)
        await self._settle_releases()
        for share in self._shares.values():
            refresh = getattr(share.semaphore, "refresh_callback", None)
            if refresh is not None:  # else it refreshes (and is kept alive) for ever
                self._io_loop.add_callback(refresh.stop)
        self._shares.clear()

    def _share(self, host: str) -> _Share | None:
        share = self._shares.get(host)
        if share is None and self.fallback_reason is None and len(self._shares) < self._max_hosts:
            from distributed import Semaphore

            name = f"{SEMAPHORE_PREFIX}{host}/{self.concurrency}"  # a new limit, a new name
            semaphore = Semaphore(  # type: ignore[no-untyped-call]
                max_leases=self.concurrency,
                name=name,
                scheduler_rpc=self._scheduler,
                loop=self._io_loop,
            )
            share = self._shares[host] = _Share(semaphore)
        return share

    def _start(self, share: _Share) -> None:
        """Lease more slots while demand exceeds them; keep the tick running."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())
        if self.fallback_reason is None and share.grower is None and self._wants_more(share):
            share.grower = asyncio.create_task(self._grow(share))

    def _wants_more(self, share: _Share) -> bool:
        return share.capacity < min(share.demand, self.concurrency)

    async def _grow(self, share: _Share) -> None:
        """Lease one slot at a time until the demand is covered (or the cluster is full)."""
        loop = asyncio.get_running_loop()
        try:
            while self.fallback_reason is None and self._wants_more(share):
                if await self._lease(share):
                    share.leased_at.append(loop.time())
                    self._apply(share)
        except _FallBack as e:
            self._fall_back(str(e))
        finally:
            share.grower = None

    async def _lease(self, share: _Share) -> bool:
        """One slot from the scheduler, waiting there at most ``acquire_poll_s``."""
        semaphore, poll_s = share.semaphore, self._poll_s
        try:
            future = self._on_scheduler_loop(partial(semaphore.acquire, timeout=poll_s))
        except RuntimeError as e:  # the worker's IO loop is closed
            raise _FallBack(f"Dask IO loop unusable: {e}") from e
        try:
            async with asyncio.timeout(poll_s + self._rpc_grace_s):
                return bool(await asyncio.shield(asyncio.wrap_future(future)))
        except TimeoutError:
            self._abandon(semaphore, future)
            raise _FallBack(
                f"no answer from the Dask scheduler in {poll_s + self._rpc_grace_s:g} s"
            ) from None
        except asyncio.CancelledError:
            self._abandon(semaphore, future)
            raise
        except Exception as e:
            raise _FallBack(f"Dask semaphore failed: {type(e).__name__}: {e}") from e

    def _abandon(self, semaphore: Semaphore, future: concurrent.futures.Future[Any]) -> None:
        """Give back a slot whose grant arrives after nobody waits for it any more."""

        def give_back(done: concurrent.futures.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None and done.result():
                self._on_scheduler_loop(semaphore.release)

        future.add_done_callback(give_back)

    async def _keep(self) -> None:
        """Each tick, retire slots unused all tick long and slots held past ``hold_s``."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            for share in self._shares.values():
                unused = share.held - share.peak
                expired = sum(1 for t in share.leased_at if now - t >= self._hold_s)
                share.retiring = min(share.held, max(unused, expired))
                self._apply(share)
                self._trim(share)
                share.peak = share.demand
                self._start(share)  # a slot retired while wanted is asked for again, queued

    def _trim(self, share: _Share) -> None:
        """Give back retiring slots that no request holds."""
        self._give_back(share, min(share.retiring, share.held - share.gate.in_use))

    def _give_back(self, share: _Share, count: int) -> None:
        """Release the ``count`` oldest leases (the order Dask releases them in)."""
        for _ in range(max(count, 0)):
            share.leased_at.popleft()
            share.retiring = max(share.retiring - 1, 0)
            if self.fallback_reason is None:
                try:
                    release = self._on_scheduler_loop(share.semaphore.release)
                except RuntimeError as e:  # the worker's IO loop is closed
                    self._fall_back(f"Dask IO loop unusable: {e}")
                    break
                self._releases.add(release)
                release.add_done_callback(self._releases.discard)
        self._apply(share)

    async def _settle_releases(self) -> None:
        """Wait (bounded) for the scheduler to have the slots back, so the next shard finds them."""
        pending = [asyncio.wrap_future(f) for f in self._releases]
        if pending:
            done, _ = await asyncio.wait(pending, timeout=self._rpc_grace_s)
            if len(done) < len(pending):
                log.warning(
                    "the Dask scheduler took back %d of %d host slots in %g s; "
                    "its lease timeout frees the rest",
                    len(done),
                    len(pending),
                    self._rpc_grace_s,
                )

    def _apply(self, share: _Share) -> None:
        """Set the gate to the usable slots, each with its share of the rate."""
        if self.fallback_reason is not None:
            share.gate.set_limits(self.concurrency, self.rps)
        else:
            capacity = share.capacity
            share.gate.set_limits(capacity, self.rps * capacity / self.concurrency)

    def _fall_back(self, reason: str) -> None:
        """Per-process limits from now on; leases still held lapse on the scheduler."""
        if self.fallback_reason is not None:
            return
        self.fallback_reason = reason
        log.warning(
            "cluster-wide host limits unavailable (%s): limits hold per process for the rest "
            "of this shard",
            reason,
        )
        for share in self._shares.values():
            if share.grower is not None and share.grower is not asyncio.current_task():
                share.grower.cancel()
            with contextlib.suppress(RuntimeError):  # best effort: they lapse anyway
                for _ in range(share.held):
                    self._on_scheduler_loop(share.semaphore.release)
            share.leased_at.clear()
            share.retiring = 0
            self._apply(share)

    def _on_scheduler_loop(
        self, call: Callable[[], Awaitable[Any]]
    ) -> concurrent.futures.Future[Any]:
        """Run a Dask semaphore call on the IO loop it belongs to."""

        async def run() -> Any:
            return await call()

        return asyncio.run_coroutine_threadsafe(run(), self._io_loop.asyncio_loop)


def host_limiter(settings: Settings) -> HostLimiter:
    """Cluster-wide limits on a Dask worker, per-process limits anywhere else."""
    distributed = sys.modules.get("distributed")  # a worker has it imported; others
    if distributed is None:  # need not pay for importing it
        return LocalHostLimiter(settings)
    try:
        worker = distributed.get_worker()
    except ValueError:
        return LocalHostLimiter(settings)
    return DaskHostLimiter(settings, worker.scheduler, worker.loop)
