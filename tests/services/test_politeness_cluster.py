"""Cluster-wide host limits across real Dask worker processes.

A Dask scheduler and two worker processes (one thread each, no nanny, as the stack
runs them) on 127.0.0.1 share one per-host limit while each runs a shard's worth of
requests against a loopback server that records every request's start and end. The
lease timings are short (a lease lapses 4 s after its last refresh) so that a killed
worker's slots come back within seconds; production keeps Dask's defaults (30 s).
The killing test comes last: it takes a worker away from the module's cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import dask
import pytest
from aiohttp import web
from distributed import Client, Event, get_worker
from distributed.core import rpc
from tornado.ioloop import IOLoop

from infra.process import ServiceSpec, alive, free_port, start, stop
from tasks.core.settings import Settings
from tasks.ingest.politeness import DaskHostLimiter, host_limiter
from tests.support.servers import BackgroundServer

LIMIT = 4
LEASE_TIMEOUT_S = 4.0
DASK_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": f"{LEASE_TIMEOUT_S}s",
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL": "0.2s",
}
WORKERS = ("worker-a", "worker-b")
DASK = str(Path(sys.executable).parent / "dask")
# Not infra.stack's: workers import this module to run its tasks, and that one imports torch.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Recorder:
    """What the loopback server saw: each finished request, and those hanging now."""

    done: list[tuple[str, float, float]] = field(default_factory=list)  # shard, start, end
    hanging: int = 0

    def app(self) -> web.Application:
        async def quick(request: web.Request) -> web.Response:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            self.done.append((request.headers.get("X-Shard", ""), started, time.monotonic()))
            return web.Response(body=b"ok")

        async def hang(request: web.Request) -> web.Response:
            """Answers only once its client is gone (a killed worker's sockets close)."""
            self.hanging += 1
            try:
                while request.transport is not None and not request.transport.is_closing():
                    await asyncio.sleep(0.05)
            finally:
                self.hanging -= 1
            return web.Response(body=b"late")

        app = web.Application()
        app.router.add_get("/quick", quick)
        app.router.add_get("/hang", hang)
        return app


@dataclass
class Cluster:
    client: Client
    worker_pids: dict[str, int]
    server: BackgroundServer
    seen: Recorder

    @property
    def host(self) -> str:
        return self.server.host_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("dask")
    port = free_port()
    env = DASK_ENV | {"PYTHONPATH": str(PROJECT_ROOT)}
    scheduler = ServiceSpec(
        name="dask-scheduler",
        argv=[DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        state_dir=state,
        env=env,
        cwd=PROJECT_ROOT,
        ready_port=port,
    )
    workers = [
        ServiceSpec(
            name=name,
            argv=[
                *(DASK, "worker", f"tcp://127.0.0.1:{port}", "--name", name),
                *("--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"),
                *("--local-directory", str(state / name)),
                *("--preload", __name__),  # imported before the tasks come, not while they run
            ],
            state_dir=state,
            env=env,
            cwd=PROJECT_ROOT,  # tasks are unpickled here: `tests` and `tasks` must import
        )
        for name in WORKERS
    ]
    seen = Recorder()
    server = BackgroundServer(seen.app()).start()
    try:
        start(scheduler)
        pids = {spec.name: start(spec) for spec in workers}
        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(len(WORKERS), timeout=60)
            yield Cluster(client, pids, server, seen)
    finally:
        for spec in (*workers, scheduler):
            stop(spec)
        server.stop()


def run_shard(
    url: str,
    shard: str,
    requests: int,
    settings: Settings,
    hold_s: float | None = None,
    together: tuple[str, ...] = (),
) -> tuple[str, str | None]:
    """On a worker: ``requests`` GETs through the worker's limiter, all wanting to go at once
    (``hold_s``: a cluster limiter that hands its slots back that often). With
    ``together`` (one event name per shard, this one's among them) it starts only once
    every shard's worker is ready, so a slow start on a loaded machine cannot make
    them take turns."""
    if together:
        Event(next(name for name in together if name.endswith(f"/{shard}"))).set()
        for name in together:
            if not Event(name).wait(timeout=30):
                raise TimeoutError(f"{name} never got ready")
    return asyncio.run(_run_shard(url, shard, requests, settings, hold_s))


async def _run_shard(
    url: str, shard: str, requests: int, settings: Settings, hold_s: float | None = None
) -> tuple[str, str | None]:
    if hold_s is None:
        limiter = host_limiter(settings)
    else:
        worker = get_worker()
        limiter = DaskHostLimiter(
            settings, worker.scheduler, worker.loop, hold_s=hold_s, tick_s=hold_s / 2
        )
    host = url.split("/")[2]
    async with limiter, aiohttp.ClientSession(headers={"X-Shard": shard}) as session:

        async def one() -> None:
            async with limiter.slot(host), session.get(url) as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(requests)))
    return type(limiter).__name__, getattr(limiter, "fallback_reason", None)


def hold_every_slot(url: str, settings: Settings) -> None:
    """On a worker: fill every slot with a request that never ends."""
    asyncio.run(_run_shard(url, "holder", settings.per_host_concurrency, settings))


def first_request_after(url: str, settings: Settings) -> float:
    """On a worker: seconds until one request got its slot and finished."""
    began = time.monotonic()
    asyncio.run(_run_shard(url, "late", 1, settings))
    return time.monotonic() - began


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def run_both(
    cluster: Cluster, settings: Settings, requests: int, hold_s: float | None = None
) -> list[tuple[str, float, float]]:
    """Both workers run a shard at the same time; the requests the server saw from them."""
    cluster.seen.done.clear()
    nonce = uuid.uuid4().hex
    together = tuple(f"{nonce}/{name}" for name in WORKERS)
    url = f"{cluster.server.url}/quick"
    futures = [
        cluster.client.submit(
            run_shard, url, name, requests, settings, hold_s, together, workers=[name]
        )
        for name in WORKERS
    ]
    results = [f.result(timeout=60) for f in futures]
    assert results == [("DaskHostLimiter", None)] * len(WORKERS)  # cluster limits, no fallback
    return list(cluster.seen.done)


def test_two_workers_never_exceed_the_limit_together(cluster: Cluster) -> None:
    # Slots held at most 0.2 s: the shard that got them first hands them back in turn.
    done = run_both(cluster, Settings(per_host_concurrency=LIMIT), requests=40, hold_s=0.2)
    assert len(done) == 80
    assert most_at_once([(s, e) for _, s, e in done]) == LIMIT  # per process, 2 x LIMIT
    a = [(s, e) for shard, s, e in done if shard == WORKERS[0]]
    b = [(s, e) for shard, s, e in done if shard == WORKERS[1]]
    assert any(sa < eb and sb < ea for sa, ea in a for sb, eb in b)  # shared, not in turns


def test_two_workers_keep_one_pace_together(cluster: Cluster) -> None:
    rps = 40.0
    done = run_both(cluster, Settings(per_host_concurrency=LIMIT, per_host_rps=rps), requests=30)
    starts = sorted(s for _, s, _ in done)
    assert len(starts) == 60
    # Each slot holder may be one request ahead of its share of the pace.
    busiest_second = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    assert busiest_second <= rps + LIMIT
    assert starts[-1] - starts[0] >= (len(starts) - LIMIT) / rps - 0.05


def test_a_busy_shard_hands_its_slots_round(cluster: Cluster) -> None:
    """A shard that could keep every slot busy for seconds gives each back after
    ``hold_s``, so a shard that starts later gets its turn long before the first ends."""
    cluster.seen.done.clear()
    settings = Settings(per_host_concurrency=LIMIT)
    url = f"{cluster.server.url}/quick"
    first, second = WORKERS
    busy = cluster.client.submit(run_shard, url, first, 200, settings, 0.5, workers=[first])
    while not cluster.seen.done:
        time.sleep(0.02)
    late = cluster.client.submit(run_shard, url, second, 10, settings, 0.5, workers=[second])
    assert [busy.result(timeout=60), late.result(timeout=60)] == [("DaskHostLimiter", None)] * 2
    done = list(cluster.seen.done)
    assert most_at_once([(s, e) for _, s, e in done]) == LIMIT
    busy_end = max(e for shard, _, e in done if shard == first)
    late_end = max(e for shard, _, e in done if shard == second)
    assert late_end < busy_end - 0.5  # 200 x 50 ms over 4 slots: the busy one takes 2.5 s


def test_killed_workers_slots_come_back_within_the_lease_timeout(cluster: Cluster) -> None:
    settings = Settings(per_host_concurrency=LIMIT)
    holder = cluster.client.submit(
        hold_every_slot, f"{cluster.server.url}/hang", settings, workers=[WORKERS[0]]
    )
    deadline = time.monotonic() + 30
    while cluster.seen.hanging < LIMIT:
        assert time.monotonic() < deadline, "the holder never filled its slots"
        time.sleep(0.05)
    pid = cluster.worker_pids[WORKERS[0]]
    os.killpg(pid, signal.SIGKILL)  # no release, no goodbye: only the lease can end
    while alive(pid):
        time.sleep(0.05)
    late = cluster.client.submit(
        first_request_after, f"{cluster.server.url}/quick", settings, workers=[WORKERS[1]]
    )
    waited = late.result(timeout=30)
    cluster.client.cancel(holder)  # type: ignore[no-untyped-call]
    assert 1.0 <= waited <= LEASE_TIMEOUT_S + 2.5  # held until the lease lapsed, not longer


@pytest.mark.parametrize("scheduler_is", ["refusing", "silent"])
async def test_unreachable_scheduler_falls_back_to_local_limits(
    scheduler_is: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler that refuses connections, or accepts and never answers: the shard goes
    on with per-process limits, after a bounded wait, and says so."""
    seen = {"now": 0, "most": 0}

    async def request(limiter: DaskHostLimiter) -> None:
        async with limiter.slot("a:443"):
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            await asyncio.sleep(0.02)
            seen["now"] -= 1

    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        if scheduler_is == "silent":
            listener.listen()  # the kernel completes the handshake; nobody ever replies
        stack.enter_context(dask.config.set({"distributed.comm.timeouts.connect": "3s"}))
        scheduler = rpc(f"tcp://127.0.0.1:{listener.getsockname()[1]}")  # type: ignore[no-untyped-call]
        limiter = DaskHostLimiter(
            Settings(per_host_concurrency=2),
            scheduler,
            IOLoop.current(),
            max_wait_s=20,
            acquire_poll_s=0.5,
            rpc_grace_s=0.5,
        )
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, "tasks.ingest.politeness"):
            async with limiter:
                await asyncio.gather(*(request(limiter) for _ in range(6)))
        took = time.monotonic() - began
        await scheduler.close_rpc()  # type: ignore[no-untyped-call]
    assert limiter.fallback_reason is not None
    assert took < 5
    assert seen["most"] == 2
    assert "limits hold per process" in caplog.text
