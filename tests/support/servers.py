"""Small HTTP servers the ingest tests run in a background thread on 127.0.0.1.

``Origin`` serves crafted responses by path and counts every request it receives;
``GatewayProxy`` forwards to the real demo gateway, counting requests, optionally
slowing them down or tampering with the CAR blocks it relays (a lying gateway).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

import aiohttp
from aiohttp import web

from tasks.ingest.ipfs.car import read_car, write_car


class LoopbackServer:
    """A test server's address: ``port`` on 127.0.0.1, as allow_hosts and URLs write it."""

    port: int

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"


class BackgroundServer(LoopbackServer):
    """An aiohttp application served from its own event loop in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"http-{self.port}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("test HTTP server did not start")
        if self._error is not None:
            raise RuntimeError("test HTTP server failed to start") from self._error
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, self._sock)
            self._loop.run_until_complete(site.start())
        except BaseException as e:
            self._error = e
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._sock.close()


@dataclass(frozen=True)
class Reply:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


class Origin(BackgroundServer):
    """Serves registered replies by exact path (404 otherwise); counts hits per path."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        super().__init__(app)

    def serve(
        self,
        path: str,
        body: bytes | str = b"",
        content_type: str = "application/octet-stream",
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Register a reply for `path`; its full URL."""
        data = body.encode() if isinstance(body, str) else body
        self.replies[path] = Reply(data, content_type, status, dict(headers or {}))
        return self.url + path

    def hits_for(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.hits[request.path] += 1
        reply = self.replies.get(request.path)
        if reply is None:
            return web.Response(status=404, text="not found\n")
        return web.Response(
            status=reply.status,
            body=reply.body,
            headers={"Content-Type": reply.content_type, **reply.headers},
        )


class GatewayProxy(BackgroundServer):
    """Relays /ipfs/ requests to `upstream`, counting them; may delay or corrupt CARs."""

    def __init__(self, upstream: str, *, delay_s: float = 0.0, tamper: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.tamper = tamper
        self.requests = 0
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close)
        super().__init__(app)

    def count(self) -> int:
        with self._lock:
            return self.requests

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower() == "accept"}
        async with self._session.get(
            self.upstream + request.path_qs, headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.read()
            status = resp.status
            content_type = resp.headers.get("Content-Type", "application/octet-stream")
        if self.tamper and status == 200 and "ipld.car" in content_type:
            body = corrupt_car(body)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})


def corrupt_car(car: bytes) -> bytes:
    """The same CAR (roots, CIDs, block sizes) with one byte of every block flipped."""
    roots, blocks = read_car(car)
    bad = [(cid, block[:-1] + bytes([block[-1] ^ 0x01])) for cid, block in blocks.items() if block]
    return bytes(write_car(roots, bad))
