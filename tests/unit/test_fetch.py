"""SafeFetcher against real aiohttp.web servers on 127.0.0.1.

Blocked-address cases never reach the network: a spy on the event loop's
``sock_connect`` records every connection attempt, and those tests assert it saw
none (the only addresses ever targeted are the loopback test servers).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from ipaddress import ip_address
from typing import Any

import pytest
from aiohttp import web

from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.fetch import SafeFetcher, is_public_address
from tasks.ingest.politeness import LocalHostLimiter, _Gate


@dataclass
class Server:
    """A loopback test server and what it saw."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def build_app(state: list[Server], other_port: int) -> web.Application:
    """Routes for each behaviour under test; ``state[0]`` is filled in once bound."""

    def srv() -> Server:
        return state[0]

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b"hello", content_type="text/plain")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"ua": request.headers.get("User-Agent"), "accept": request.headers.get("Accept")}
        )

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=b"landed")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    async def to_other(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{other_port}/")

    async def to_scheme(request: web.Request) -> web.Response:
        raise web.HTTPFound("file:///etc/passwd")

    async def flaky(request: web.Request) -> web.Response:
        if srv().hits[request.path] == 1:
            retry_after = request.query["retry_after"]
            if retry_after == "date":
                retry_after = formatdate(time.time() + 10, usegmt=True)
            return web.Response(status=429, headers={"Retry-After": retry_after})
        return web.Response(body=b"finally")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def big_declared(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 2000)

    async def big_streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):  # bounded: 4 MiB at most
            await resp.write(b"y" * 65536)
        return resp

    async def gzip_bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (8 * 1024 * 1024))
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def stall(request: web.Request) -> web.Response:
        await asyncio.wait_for(srv().stop.wait(), 5)
        return web.Response(body=b"late")

    async def stall_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "10"})
        await resp.prepare(request)
        await resp.write(b"12345")
        await asyncio.wait_for(srv().stop.wait(), 5)
        return resp

    async def drip(request: web.Request) -> web.StreamResponse:
        # One byte per 0.1 s: never idle long enough for the socket read timeout.
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        for _ in range(1000):
            if srv().stop.is_set():
                break
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    async def slow_hop(request: web.Request) -> web.Response:
        # Each hop answers just under the per-attempt timeouts, then redirects on.
        n = int(request.match_info["n"])
        await asyncio.sleep(0.4)
        raise web.HTTPFound(f"/slow-hop/{n + 1}")

    async def slow(request: web.Request) -> web.Response:
        s = srv()
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        await asyncio.sleep(0.05)
        s.in_flight -= 1
        return web.Response(body=b"done")

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        srv().hits[request.path] += 1
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[count])
    app.router.add_get("/ok", ok)
    app.router.add_get("/echo", echo)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/to-other", to_other)
    app.router.add_get("/to-scheme", to_scheme)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/big-declared", big_declared)
    app.router.add_get("/big-streamed", big_streamed)
    app.router.add_get("/gzip-bomb", gzip_bomb)
    app.router.add_get("/stall", stall)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drip", drip)
    app.router.add_get("/slow-hop/{n}", slow_hop)
    return app


@pytest.fixture
async def other() -> AsyncIterator[Server]:
    """A second loopback server that no test may ever reach."""
    state: list[Server] = []

    async def anything(request: web.Request) -> web.Response:
        state[0].hits[request.path] += 1
        return web.Response(body=b"secret")

    app = web.Application()
    app.router.add_get("/{tail:.*}", anything)
    runner, port = await serve(app)
    state.append(Server(port))
    yield state[0]
    await runner.cleanup()


@pytest.fixture
async def server(other: Server) -> AsyncIterator[Server]:
    state: list[Server] = []
    runner, port = await serve(build_app(state, other.port))
    state.append(Server(port))
    yield state[0]
    state[0].stop.set()
    await runner.cleanup()


@pytest.fixture
async def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address the client tries to connect to, recorded before the connect."""
    loop = asyncio.get_running_loop()
    original = loop.sock_connect
    seen: list[tuple[str, int]] = []

    async def spy(sock: socket.socket, address: Any) -> None:
        seen.append((address[0], address[1]))
        await original(sock, address)

    monkeypatch.setattr(loop, "sock_connect", spy)
    return seen


class Sleeps(list[float]):
    """Records backoff delays instead of waiting them out."""

    async def __call__(self, delay: float) -> None:
        self.append(delay)


def settings_for(server: Server, **changes: Any) -> Settings:
    base = Settings(
        allow_hosts=(f"127.0.0.1:{server.port}",),
        backoff_base_s=0.01,
        backoff_max_s=30.0,
        connect_timeout_s=2.0,
        read_timeout_s=2.0,
    )
    return base.replace(**changes)


async def fetch_error(fetcher: SafeFetcher, url: str, max_bytes: int = 1 << 20) -> ItemError:
    with pytest.raises(ItemError) as info:
        await fetcher.get(url, max_bytes=max_bytes)
    return info.value


async def test_plain_get_sends_user_agent_and_accept(
    server: Server, connects: list[tuple[str, int]]
) -> None:
    settings = settings_for(server)
    async with SafeFetcher(settings) as fetcher:
        result = await fetcher.get(server.url("/echo"), max_bytes=1000, accept="application/json")
    assert result.status == 200
    assert result.content_type == "application/json"
    assert result.final_url == server.url("/echo")
    assert result.body == (
        b'{"ua": "' + settings.user_agent.encode() + b'", "accept": "application/json"}'
    )
    assert fetcher.requests == 1
    assert fetcher.bytes_received == len(result.body)
    assert set(connects) == {("127.0.0.1", server.port)}


async def test_allowlist_is_needed_for_the_test_server(
    server: Server, connects: list[tuple[str, int]]
) -> None:
    async with SafeFetcher(Settings()) as fetcher:
        error = await fetch_error(fetcher, server.url("/ok"))
        assert error.kind == "blocked_address"
        # Exact host:port match only: another port on the same host stays blocked.
        settings = Settings(allow_hosts=(f"127.0.0.1:{server.port + 1}",))
    async with SafeFetcher(settings) as fetcher:
        assert (await fetch_error(fetcher, server.url("/ok"))).kind == "blocked_address"
    assert server.hits["/ok"] == 0
    assert fetcher.requests == 0
    assert connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::ffff:127.1]/",  # yarl takes this form; ipaddress does not
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits
        "https://[fe80::1%25eth0]/",
        "http://localhost/",
        "http://LOCALHOST:8080/",
    ],
)
async def test_blocked_before_any_connection(url: str, connects: list[tuple[str, int]]) -> None:
    async with SafeFetcher(Settings(max_retries=0)) as fetcher:
        error = await fetch_error(fetcher, url)
    assert error.kind in ("blocked_address", "bad_uri")
    assert error.kind == "blocked_address" or "zone" in error.message
    assert fetcher.requests == 0
    assert connects == []


async def test_allowlisted_name_skips_the_resolver_check(server: Server) -> None:
    settings = settings_for(server, allow_hosts=(f"localhost:{server.port}",))
    async with SafeFetcher(settings) as fetcher:
        result = await fetcher.get(f"http://localhost:{server.port}/ok", max_bytes=100)
    assert result.body == b"hello"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("ftp://example.com/x", "unsupported_uri"),
        ("http://user:pw@example.com/", "bad_uri"),
        ("http://exa mple.com/", "bad_uri"),
        ("http://example.com:99999/", "bad_uri"),
        ("http:///nohost", "bad_uri"),
    ],
)
async def test_malformed_urls(url: str, kind: str, connects: list[tuple[str, int]]) -> None:
    async with SafeFetcher(Settings()) as fetcher:
        error = await fetch_error(fetcher, url)
    assert error.kind == kind
    assert "pw" not in error.message
    assert connects == []


async def test_redirect_to_blocked_address_is_refused_at_the_hop(
    server: Server, other: Server, connects: list[tuple[str, int]]
) -> None:
    async with SafeFetcher(settings_for(server)) as fetcher:
        error = await fetch_error(fetcher, server.url("/to-other"))
    assert error.kind == "blocked_address"
    assert fetcher.requests == 1
    assert other.hits.total() == 0
    assert set(connects) == {("127.0.0.1", server.port)}


async def test_redirect_to_other_scheme_is_refused(server: Server) -> None:
    async with SafeFetcher(settings_for(server)) as fetcher:
        assert (await fetch_error(fetcher, server.url("/to-scheme"))).kind == "unsupported_uri"


async def test_redirects_within_limit_are_followed(server: Server) -> None:
    async with SafeFetcher(settings_for(server, max_redirects=3)) as fetcher:
        result = await fetcher.get(server.url("/redirect/3"), max_bytes=100)
    assert result.body == b"landed"
    assert result.final_url == server.url("/redirect/0")
    assert fetcher.requests == 4


async def test_too_many_redirects(server: Server) -> None:
    async with SafeFetcher(settings_for(server, max_redirects=3)) as fetcher:
        error = await fetch_error(fetcher, server.url("/redirect/4"))
    assert error.kind == "http_status"
    assert "redirects" in error.message
    assert fetcher.requests == 4
    assert server.hits["/redirect/0"] == 0


@pytest.mark.parametrize(("retry_after", "wait"), [("2", 2.0), ("3600", 30.0), ("date", 10.0)])
async def test_429_honours_retry_after(server: Server, retry_after: str, wait: float) -> None:
    sleeps = Sleeps()
    async with SafeFetcher(settings_for(server), sleep=sleeps) as fetcher:
        result = await fetcher.get(server.url(f"/flaky?retry_after={retry_after}"), max_bytes=100)
    assert result.body == b"finally"
    assert fetcher.requests == 2
    assert len(sleeps) == 1
    assert sleeps[0] == pytest.approx(wait, abs=1.5)


async def test_503_exhausts_retries_with_jittered_backoff(server: Server) -> None:
    sleeps = Sleeps()
    settings = settings_for(server, max_retries=3, backoff_base_s=0.5, backoff_max_s=1.5)
    async with SafeFetcher(settings, sleep=sleeps) as fetcher:
        error = await fetch_error(fetcher, server.url("/status/503"))
    assert error.kind == "http_status_retryable"
    assert error.retryable
    assert "503" in error.message
    assert fetcher.requests == 4
    assert server.hits["/status/503"] == 4
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        assert 0 <= delay <= min(1.5, 0.5 * 2**attempt)


async def test_404_is_not_retried(server: Server) -> None:
    sleeps = Sleeps()
    async with SafeFetcher(settings_for(server), sleep=sleeps) as fetcher:
        error = await fetch_error(fetcher, server.url("/status/404"))
    assert error.kind == "http_status"
    assert not error.retryable
    assert "404" in error.message
    assert fetcher.requests == 1
    assert sleeps == []


async def test_connection_refused_is_retried_then_reported(server: Server) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    settings = settings_for(server, allow_hosts=(f"127.0.0.1:{port}",), max_retries=2)
    async with SafeFetcher(settings, sleep=sleeps) as fetcher:
        error = await fetch_error(fetcher, f"http://127.0.0.1:{port}/")
    assert error.kind == "connection"
    assert len(sleeps) == 2
    assert fetcher.requests == 0  # nothing was ever sent


async def test_content_length_over_cap_is_refused_unread(server: Server) -> None:
    async with SafeFetcher(settings_for(server)) as fetcher:
        error = await fetch_error(fetcher, server.url("/big-declared"), max_bytes=1000)
    assert error.kind == "too_large"
    assert fetcher.bytes_received == 0


async def test_streamed_body_stops_at_cap(server: Server) -> None:
    async with SafeFetcher(settings_for(server)) as fetcher:
        error = await fetch_error(fetcher, server.url("/big-streamed"), max_bytes=100_000)
    assert error.kind == "too_large"
    assert 100_000 < fetcher.bytes_received <= 100_000 + 65536


async def test_cap_applies_to_decompressed_bytes(server: Server) -> None:
    async with SafeFetcher(settings_for(server)) as fetcher:
        error = await fetch_error(fetcher, server.url("/gzip-bomb"), max_bytes=100_000)
    assert error.kind == "too_large"
    assert fetcher.bytes_received <= 100_000 + 65536


@pytest.mark.parametrize("path", ["/stall", "/stall-body"])
async def test_read_timeout_is_retried_then_reported(server: Server, path: str) -> None:
    sleeps = Sleeps()
    settings = settings_for(server, read_timeout_s=0.2, max_retries=1)
    started = time.monotonic()
    async with SafeFetcher(settings, sleep=sleeps) as fetcher:
        error = await fetch_error(fetcher, server.url(path))
    assert error.kind == "timeout"
    assert fetcher.requests == 2
    assert len(sleeps) == 1
    assert time.monotonic() - started < 2


async def test_an_allowed_host_is_bounded_by_concurrency_not_politeness(server: Server) -> None:
    """allow_hosts are the operator's own services: the per-host limit (politeness owed to
    public hosts, tests/unit/test_politeness.py) does not slow them, concurrency bounds them."""
    settings = settings_for(server, concurrency=3, per_host_concurrency=1)
    async with SafeFetcher(settings) as fetcher:
        results = await asyncio.gather(
            *(fetcher.get(server.url("/slow"), max_bytes=100) for _ in range(6))
        )
    assert [r.body for r in results] == [b"done"] * 6
    assert server.max_in_flight == 3


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("192.0.2.1", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("198.18.0.1", False),
        ("::", False),
        ("::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("2001:db8::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", False),  # mapped forms are refused outright
        ("::127.0.0.1", False),  # IPv4-compatible
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::808:808", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo of 127.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ip_address(address)) is public


# One URL's deadline covers every attempt, backoff sleep and redirect hop. Bounds
# are generous for a loaded 2-core machine; without the deadline each case below
# takes 5 to 9 times as long.
DEADLINE_S = 1.5
MARGIN_S = 1.5


async def timed_error(fetcher: SafeFetcher, url: str) -> tuple[ItemError, float]:
    started = time.monotonic()
    error = await fetch_error(fetcher, url)
    return error, time.monotonic() - started


async def test_a_dripping_body_is_cut_at_the_url_deadline(server: Server) -> None:
    # Per attempt, 1.0 s total; five attempts would hold the slot for 5 s.
    settings = settings_for(server, request_timeout_s=1.0, url_deadline_s=DEADLINE_S)
    async with SafeFetcher(settings) as fetcher:
        error, elapsed = await timed_error(fetcher, server.url("/drip"))
    assert error.kind == "timeout"
    assert error.retryable
    assert "deadline" in error.message
    assert DEADLINE_S - 0.1 <= elapsed < DEADLINE_S + MARGIN_S


async def test_a_slow_redirect_chain_is_cut_at_the_url_deadline(server: Server) -> None:
    # Every hop answers in 0.4 s, under the 1 s per-attempt limit; 9 hops take 3.6 s.
    settings = settings_for(
        server, request_timeout_s=1.0, max_redirects=9, url_deadline_s=DEADLINE_S
    )
    async with SafeFetcher(settings) as fetcher:
        error, elapsed = await timed_error(fetcher, server.url("/slow-hop/0"))
    assert error.kind == "timeout"
    assert elapsed < DEADLINE_S + MARGIN_S
    assert 1 <= fetcher.requests <= 5  # hops of 0.4 s: cut after at most four


async def test_a_backoff_past_the_deadline_is_not_waited_for(server: Server) -> None:
    # Retry-After asks for 30 s (the backoff cap); the URL has 1.5 s in all.
    settings = settings_for(server, url_deadline_s=DEADLINE_S)
    async with SafeFetcher(settings) as fetcher:
        error, elapsed = await timed_error(fetcher, server.url("/flaky?retry_after=3600"))
    assert error.kind == "http_status_retryable"
    assert fetcher.requests == 1
    assert elapsed < MARGIN_S


@pytest.fixture
async def raw_http() -> AsyncIterator[int]:
    """A TCP server answering every request with a status line and then headers forever:
    a flood as fast as it can write, or (path /slow) one header every 50 ms."""

    answering: set[asyncio.Task[Any]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            answering.add(task)
        request = await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for n in range(100_000):
                writer.write(b"X-Flood-%d: %s\r\n" % (n, b"v" * 100))
                await writer.drain()
                if b"/slow" in request:
                    await asyncio.sleep(0.05)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for task in answering:
        task.cancel()
    await server.wait_closed()


def raw_settings(port: int, **changes: Any) -> Settings:
    return Settings(allow_hosts=(f"127.0.0.1:{port}",), backoff_base_s=0.01).replace(**changes)


async def test_a_header_flood_is_refused_by_its_line_cap(raw_http: int) -> None:
    # aiohttp stops reading after 128 header lines.
    settings = raw_settings(raw_http, max_retries=0, url_deadline_s=30.0)
    async with SafeFetcher(settings) as fetcher:
        error, elapsed = await timed_error(fetcher, f"http://127.0.0.1:{raw_http}/flood")
    assert error.kind == "connection"
    assert elapsed < 10.0


async def test_endless_slow_headers_are_cut_at_the_url_deadline(raw_http: int) -> None:
    # One header per 50 ms: never idle for the read timeout; 128 lines take 6.4 s.
    settings = raw_settings(raw_http, max_retries=4, url_deadline_s=DEADLINE_S)
    async with SafeFetcher(settings) as fetcher:
        error, elapsed = await timed_error(fetcher, f"http://127.0.0.1:{raw_http}/slow")
    assert error.kind == "timeout"
    assert elapsed < DEADLINE_S + MARGIN_S


async def test_other_hosts_take_a_slot_of_the_host_limiter() -> None:
    """A public host's requests go through the per-host limiter (cluster-wide on Dask)."""
    taken: list[str] = []

    class Recording(LocalHostLimiter):
        async def _take(self, host: str) -> _Gate:
            taken.append(host)
            return await super()._take(host)

    settings = Settings(max_retries=0)
    async with Recording(settings) as limiter, SafeFetcher(settings, limiter=limiter) as fetcher:
        error = await fetch_error(fetcher, "http://no-such-host.invalid:8080/x")
    assert error.kind == "connection"  # the name does not resolve: after the slot was taken
    assert taken == ["no-such-host.invalid:8080"]
