"""HTTP behaviour of a hostile origin: drips, stalls, lies, bombs, redirects, garbage.

The origin is allowed (its host:port in allow_hosts) and answers with raw bytes.
Waits are short (``ingesting.settings``), and one URL gets ``REQUEST_S`` seconds
over all its attempts and redirects: a case that stalls must end in ``timeout``
within ``DEADLINE``. Bodies are capped after decompression, so bombs end in
``too_large`` with little memory; malformed responses in ``connection`` or an
HTTP status kind, never an exception.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from tasks.ingest.fetch import FetchResult
from tests.data.hostile.case import Case, Env, refused
from tests.data.hostile.ingesting import (
    MAX_METADATA,
    REQUEST_S,
    RowsCheck,
    fetch,
    ingest_tokens,
    settings,
    untouched,
)
from tests.data.hostile.servers import Part, head, redirect, response

DEADLINE = REQUEST_S + 0.7  # the deadline, plus slack for a loaded machine
TIMEOUT = refused("timeout")
BROKEN = refused("connection", "http_status", "http_status_retryable")


def _path(name: str) -> str:
    return "/http/" + "".join(c if c.isalnum() else "-" for c in name)


def _get(name: str, parts: Callable[[Env, Any], Sequence[Part]]) -> Callable[[Env, Any], Any]:
    """Serve the parts at the case's own path and fetch it with the origin allowed."""

    def run(env: Env, data: Any) -> FetchResult:
        url = env.origin.serve(_path(name), *parts(env, data))
        with untouched(env):
            return fetch(url, allow=[env.origin.host_port])

    return run


def _body(expected: bytes) -> Callable[[FetchResult], str | None]:
    def check(result: FetchResult) -> str | None:
        if result.body != expected:
            return f"body of {len(result.body)} bytes is not the {len(expected)} expected"
        return None

    return check


def _bounded(result: FetchResult) -> str | None:
    return None if len(result.body) <= MAX_METADATA else "body over the cap"


def _bomb(compress: Callable[[], Any], inflated: int = 64 << 20) -> bytes:
    """Zeros that inflate to ``inflated`` bytes, compressed in 1 MiB steps."""
    packer = compress()
    chunk = bytes(1 << 20)
    out = bytearray()
    for _ in range(inflated >> 20):
        out += packer.compress(chunk)
    return bytes(out + packer.flush())


def _bomb_of(compress: Callable[[], Any]) -> Callable[[], bytes]:
    return lambda: _bomb(compress)


def _gzip() -> Any:
    return zlib.compressobj(9, zlib.DEFLATED, 31)


def _zlib() -> Any:
    return zlib.compressobj(9, zlib.DEFLATED, 15)


def _raw_deflate() -> Any:
    return zlib.compressobj(9, zlib.DEFLATED, -15)


def drip(data: bytes, every: float) -> list[Part]:
    parts: list[Part] = []
    for byte in data:
        parts += [bytes([byte]), every]
    return parts


def _chunked(pieces: Sequence[bytes], every: float = 0.0) -> list[Part]:
    parts: list[Part] = []
    for piece in pieces:
        parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if every:
            parts.append(every)
    return [*parts, b"0\r\n\r\n"]


def _hops(env: Env, name: str, hops: int, delay: float, final: bytes) -> str:
    """A redirect chain on the origin, each hop answering after ``delay`` seconds."""
    base = _path(name)
    env.origin.serve(f"{base}/{hops}", delay, response(200, final))
    for hop in range(hops):
        env.origin.serve(
            f"{base}/{hop}", delay, response(302, b"", [("Location", f"{base}/{hop + 1}")])
        )
    return f"{env.origin.url}{base}/0"


def _chain(name: str, hops: int, delay: float) -> Callable[[Env, Any], Any]:
    def run(env: Env, data: Any) -> FetchResult:
        url = _hops(env, name, hops, delay, b"end")
        return fetch(url, allow=[env.origin.host_port])

    return run


def _loop(env: Env, data: Any) -> FetchResult:
    path = "/http/loop"
    env.origin.route(path, redirect(path))
    return fetch(env.origin.url + path, allow=[env.origin.host_port])


def _batch(env: Env, data: Any) -> Any:
    """Three good tokens and one whose image drips forever, ingested together."""
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8  # refused as an image: only its timing matters
    uris = {}
    for i in range(3):
        url = env.origin.serve(f"/http/batch/{i}", response(200, png))
        uris[i] = 'data:application/json,{"image":"' + url + '"}'
    slow = env.origin.serve("/http/batch/slow", head(200, [("Content-Length", "9999")]),
                            *drip(b"x" * 9999, 0.05))  # fmt: skip
    uris[3] = 'data:application/json,{"image":"' + slow + '"}'
    return ingest_tokens(uris, settings([env.origin.host_port]))


def cases() -> list[Case]:
    ok_head = head(200, [("Content-Length", "100")])
    big = MAX_METADATA + 1
    plain: list[tuple[str, Callable[[Env, Any], Sequence[Part]], frozenset[str]]] = [
        ("drip body 1 byte per 50 ms", lambda e, d: [ok_head, *drip(b"x" * 100, 0.05)], TIMEOUT),
        (
            "drip chunked body",
            lambda e, d: [
                head(200, [("Transfer-Encoding", "chunked")]),
                *_chunked([b"x"] * 100, 0.05),
            ],
            TIMEOUT,
        ),
        (
            "drip headers",
            lambda e, d: drip(b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 30, 0.03),
            TIMEOUT,
        ),
        ("drip status line", lambda e, d: drip(b"HTTP/1.1 200 OK\r\n\r\n", 0.1), TIMEOUT),
        ("never answers", lambda e, d: [3600.0], TIMEOUT),
        ("head then stall", lambda e, d: [ok_head, 3600.0], TIMEOUT),
        (
            "body bytes just under the read timeout",
            lambda e, d: [ok_head, *drip(b"x" * 20, 0.25)],
            TIMEOUT,
        ),
        (
            "503 after stalling 0.7 s",
            lambda e, d: [0.7, response(503)],
            refused("timeout", "http_status_retryable"),
        ),
        (
            "slow 503s",
            lambda e, d: [0.2, response(503)],
            refused("timeout", "http_status_retryable"),
        ),
        (
            "429 retry-after 100000",
            lambda e, d: [response(429, b"", [("Retry-After", "100000")])],
            refused("http_status_retryable"),
        ),
        (
            "429 retry-after far date",
            lambda e, d: [response(429, b"", [("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")])],
            refused("http_status_retryable"),
        ),
        (
            "429 retry-after negative",
            lambda e, d: [response(429, b"", [("Retry-After", "-5")])],
            refused("http_status_retryable"),
        ),
        (
            "429 retry-after 30 digits",
            lambda e, d: [response(429, b"", [("Retry-After", "9" * 30)])],
            refused("http_status_retryable"),
        ),
        (
            "429 retry-after garbage",
            lambda e, d: [response(429, b"", [("Retry-After", "soon\x01")])],
            refused("http_status_retryable"),
        ),
        ("404", lambda e, d: [response(404)], refused("http_status")),
        ("410", lambda e, d: [response(410)], refused("http_status")),
        ("451", lambda e, d: [response(451)], refused("http_status")),
        (
            "401 with auth challenge",
            lambda e, d: [response(401, b"", [("WWW-Authenticate", 'Basic realm="x"')])],
            refused("http_status"),
        ),
        ("status 600", lambda e, d: [response(600)], BROKEN),
        ("status 999", lambda e, d: [response(999)], BROKEN),
        ("status 000", lambda e, d: [b"HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n"], BROKEN),
        ("status 1000", lambda e, d: [b"HTTP/1.1 1000 X\r\nContent-Length: 0\r\n\r\n"], BROKEN),
        ("status letters", lambda e, d: [b"HTTP/1.1 abc X\r\nContent-Length: 0\r\n\r\n"], BROKEN),
        (
            "101 switching protocols",
            lambda e, d: [b"HTTP/1.1 101 X\r\nUpgrade: ws\r\n\r\n"],
            BROKEN,
        ),
        ("304 with a body", lambda e, d: [response(304, b"x" * 100)], BROKEN),
        ("302 without location", lambda e, d: [response(302)], refused("http_status")),
        (
            "location of 20,000 chars",
            lambda e, d: [response(302, b"", [("Location", "/" + "a" * 20000)])],
            BROKEN | {"bad_uri"},
        ),
        (
            "location with a NUL",
            lambda e, d: [response(302, b"", [("Location", "/a\x00b")])],
            BROKEN | {"bad_uri"},
        ),
        (
            "content-length over the cap",
            lambda e, d: [head(200, [("Content-Length", str(big))])],
            refused("too_large"),
        ),
        (
            "content-length 2**70",
            lambda e, d: [head(200, [("Content-Length", str(2**70))])],
            refused("too_large", "connection"),
        ),
        (
            "content-length says more than sent",
            lambda e, d: [head(200, [("Content-Length", "1000")]), b"x" * 10],
            BROKEN,
        ),
        (
            "content-length negative",
            lambda e, d: [head(200, [("Content-Length", "-1")]), b"x"],
            BROKEN,
        ),
        (
            "content-length in hex",
            lambda e, d: [head(200, [("Content-Length", "0x10")]), b"x"],
            BROKEN,
        ),
        (
            "two content-lengths",
            lambda e, d: [head(200, [("Content-Length", "3"), ("Content-Length", "5")]), b"xxxxx"],
            BROKEN,
        ),
        (
            "chunk size of 16 hex digits",
            lambda e, d: [head(200, [("Transfer-Encoding", "chunked")]), b"ffffffffffffffff\r\nx"],
            BROKEN | {"too_large"},
        ),
        (
            "chunk extension flood",
            lambda e, d: [
                head(200, [("Transfer-Encoding", "chunked")]),
                b"1;" + b"e=x;" * 30000 + b"\r\nx\r\n0\r\n\r\n",
            ],
            BROKEN | {"timeout"},
        ),
        (
            "chunked body over the cap",
            lambda e, d: [
                head(200, [("Transfer-Encoding", "chunked")]),
                *_chunked([b"x" * 65536] * 20),
            ],
            refused("too_large"),
        ),
        (
            "close-delimited body over the cap",
            lambda e, d: [b"HTTP/1.0 200 OK\r\n\r\n", b"x" * (2 * MAX_METADATA)],
            refused("too_large"),
        ),
        (
            "gzip bomb",
            lambda e, d: [
                head(200, [("Content-Encoding", "gzip"), ("Content-Length", str(len(d)))]),
                d,
            ],
            refused("too_large"),
        ),
        (
            "deflate bomb",
            lambda e, d: [
                head(200, [("Content-Encoding", "deflate"), ("Content-Length", str(len(d)))]),
                d,
            ],
            refused("too_large"),
        ),
        (
            "raw deflate bomb",
            lambda e, d: [
                head(200, [("Content-Encoding", "deflate"), ("Content-Length", str(len(d)))]),
                d,
            ],
            refused("too_large", "connection"),
        ),
        (
            "chunked gzip bomb",
            lambda e, d: [
                head(200, [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]),
                *_chunked([d[i : i + 8192] for i in range(0, len(d), 8192)]),
            ],
            refused("too_large"),
        ),
        (
            "gzip garbage",
            lambda e, d: [
                response(200, b"\x1f\x8b" + b"garbage" * 100, [("Content-Encoding", "gzip")])
            ],
            BROKEN,
        ),
        (
            "brotli label on plain bytes",
            lambda e, d: [response(200, b"plain", [("Content-Encoding", "br")])],
            BROKEN,
        ),
        (
            "header flood",
            lambda e, d: [
                head(200, [(f"X-{i}", "v") for i in range(20000)]) + b"Content-Length: 0\r\n\r\n"
            ],
            BROKEN,
        ),
        (
            "one header of 100 kB",
            lambda e, d: [response(200, b"", [("X-Big", "v" * 100_000)])],
            BROKEN,
        ),
        ("status line garbage", lambda e, d: [b"HTTX/9 200\r\n\r\nbody"], BROKEN),
        ("binary garbage", lambda e, d: [bytes(range(256)) * 64], BROKEN),
        ("closes at once", lambda e, d: [], BROKEN),
        ("http/0.9 body", lambda e, d: [b'{"name": "x"}'], BROKEN),
    ]
    found = [Case(name, _get(name, parts), kinds, time_s=DEADLINE) for name, parts, kinds in plain]
    bombs = {"gzip bomb": _gzip, "deflate bomb": _zlib, "raw deflate bomb": _raw_deflate,
             "chunked gzip bomb": _gzip}  # fmt: skip
    found = [
        Case(c.name, c.run, c.kinds, make=_bomb_of(bombs[c.name]), time_s=DEADLINE, memory_mb=64)
        if c.name in bombs else c
        for c in found
    ]  # fmt: skip
    served: list[
        tuple[str, Callable[[Env, Any], Sequence[Part]], Callable[[FetchResult], str | None]]
    ] = [
        (
            "content-length says less than sent",
            lambda e, d: [head(200, [("Content-Length", "10")]), b"x" * 100_000],
            _body(b"x" * 10),
        ),
        ("204 no content", lambda e, d: [response(204)], _body(b"")),
        ("206 partial", lambda e, d: [response(206, b"part")], _body(b"part")),
        (
            "100 continue first",
            lambda e, d: [b"HTTP/1.1 100 Continue\r\n\r\n", response(200, b"ok")],
            _body(b"ok"),
        ),
        ("http/1.0 close-delimited", lambda e, d: [b"HTTP/1.0 200 OK\r\n\r\nfine"], _body(b"fine")),
        (
            "set-cookie flood",
            lambda e, d: [response(200, b"ok", [("Set-Cookie", f"c{i}=v") for i in range(100)])],
            _body(b"ok"),
        ),
        (
            "content-type with 8 kB of parameters",
            lambda e, d: [response(200, b"ok", [("Content-Type", "text/plain;" + "a=b;" * 1500)])],
            _bounded,
        ),
        (
            "unknown content-encoding",
            lambda e, d: [response(200, b"raw", [("Content-Encoding", "x-evil")])],
            _bounded,
        ),
        (
            "double gzip",
            lambda e, d: [
                response(
                    200,
                    gzip.compress(gzip.compress(bytes(1 << 24))),
                    [("Content-Encoding", "gzip, gzip")],
                )
            ],
            _bounded,
        ),
        (
            "a second response smuggled after the body",
            lambda e, d: [
                response(200, b"ok") + response(302, b"", [("Location", "http://127.0.0.1:1/")])
            ],
            _body(b"ok"),
        ),
        (
            "bare LF line endings",
            lambda e, d: [b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"],
            _body(b"ok"),
        ),
        (
            "body in five chunks 0.05 s apart",
            lambda e, d: [
                head(200, [("Transfer-Encoding", "chunked")]),
                *_chunked([b"ab"] * 5, 0.05),
            ],
            _body(b"ab" * 5),
        ),
    ]
    controls = ("204 no content", "206 partial", "http/1.0 close-delimited",
                "body in five chunks 0.05 s apart")  # fmt: skip
    for name, parts, check in served:
        # A lie may also be refused as a broken response; a control must come through.
        kinds = frozenset() if name in controls else BROKEN
        found.append(Case(name, _get(name, parts), kinds, check=check, time_s=DEADLINE))
    found += [
        Case("redirect hops each just under the read timeout", _chain("slow hops", 5, 0.25),
             TIMEOUT, time_s=DEADLINE),
        Case("three hops each 0.35 s", _chain("slower hops", 3, 0.35), TIMEOUT, time_s=DEADLINE),
        Case("five quick hops", _chain("quick hops", 5, 0.0), check=_body(b"end"), time_s=DEADLINE),
        Case("six hops", _chain("six hops", 6, 0.0), refused("http_status"), time_s=DEADLINE),
        Case("redirect loop", _loop, refused("http_status"), time_s=DEADLINE),
        Case("batch: one dripping image among three", _batch,
             check=RowsCheck({0: "bad_image", 1: "bad_image", 2: "bad_image", 3: "timeout"}),
             time_s=DEADLINE + 0.5),
    ]  # fmt: skip
    return found
