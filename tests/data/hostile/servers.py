"""A loopback HTTP server that can say anything, byte by byte, at any speed.

aiohttp's server only sends well-formed HTTP, and hostile origins do not: this one
is a plain asyncio stream server. A case registers a handler for a path; the
handler writes raw bytes and sleeps between them (drips, lies, bombs, garbage).
Every accepted connection is counted, so a sentinel instance proves that a URL
was refused before any packet reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.servers import LoopbackServer

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A handler writes the whole reply itself; the connection is closed after it.
Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]
# Bytes to write, or seconds to wait before the next part.
Part = bytes | float


class RawServer(LoopbackServer):
    """Serves registered handlers on 127.0.0.1 (and ::1 on the same port when free)."""

    def __init__(self) -> None:
        self.connections = 0
        self.hits: Counter[str] = Counter()
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._sockets = [_listen(socket.AF_INET, "127.0.0.1", 0)]
        self.port: int = self._sockets[0].getsockname()[1]
        with contextlib.suppress(OSError):
            self._sockets.append(_listen(socket.AF_INET6, "::1", self.port))
        self._thread = threading.Thread(
            target=self._serve, name=f"hostile-{self.port}", daemon=True
        )
        self._ready = threading.Event()

    def start(self) -> RawServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        for sock in self._sockets:
            sock.close()

    def route(self, path: str, handler: Handler) -> str:
        """Serve ``handler`` at ``path``; its URL."""
        self._handlers[path] = handler
        return self.url + path

    def serve(self, path: str, *parts: Part) -> str:
        """Serve these raw parts (bytes written, floats slept) at ``path``; its URL."""
        return self.route(path, send(*parts))

    def connection_count(self) -> int:
        with self._lock:
            return self.connections

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        for sock in self._sockets:
            self._loop.run_until_complete(asyncio.start_server(self._client, sock=sock))
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            request = await _read_request(reader)
            if request is None:
                return
            with self._lock:
                self.hits[request.path] += 1
            handler = self._handlers.get(request.path.split("?", 1)[0], _not_found)
            await handler(request, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.rpartition(" ")[0] or rest
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body)


async def _not_found(request: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(response(404, b"not found\n"))


def send(*parts: Part) -> Handler:
    """A handler writing these parts in order, sleeping for each float."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        await write_parts(writer, parts)

    return handler


async def write_parts(writer: asyncio.StreamWriter, parts: Sequence[Part]) -> None:
    for part in parts:
        if isinstance(part, float):
            await writer.drain()
            await asyncio.sleep(part)
        else:
            writer.write(part)
    await writer.drain()


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    *,
    length: int | None = None,
    reason: str = "X",
) -> bytes:
    """A raw HTTP/1.1 response; ``length`` overrides (lies about) Content-Length."""
    names = {name.lower() for name, _ in headers}
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def head(status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """Only the status line and headers, for handlers that stream a body themselves."""
    lines = [f"HTTP/1.1 {status} X", *(f"{n}: {v}" for n, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def redirect(location: str, status: int = 302) -> Handler:
    return send(response(status, b"", [("Location", location)]))


RpcReply = Callable[[list[dict[str, Any]]], Sequence[Part] | bytes]


def rpc(reply: RpcReply, headers: Sequence[tuple[str, str]] = ()) -> Handler:
    """A JSON-RPC endpoint: ``reply`` gets the batch sent and returns the raw body
    (bytes, sent as one 200 reply) or raw parts (written as they are)."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = []
        answer = reply(payload if isinstance(payload, list) else [payload])
        if isinstance(answer, bytes):
            hdrs = [("Content-Type", "application/json"), *headers]
            writer.write(response(200, answer, hdrs))
        else:
            await write_parts(writer, answer)

    return handler
