"""IPFS downloads across several gateways: which failure wins, and when to stop trying."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from infra.gateway import make_app
from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.download import download
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.ipfs.importer import add_directory
from tasks.ingest.uris import IpfsLocation

FILE = b"\x89PNG pretend image" * 100


def answering(status: int, body: bytes = b"") -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, str]]:
    root, blocks = add_directory({"1.png": FILE})
    apps = {
        "good": make_app(blocks),
        "busy": answering(503),
        "missing": answering(404),
        "huge": answering(200, b"x" * 200_000),
    }
    started = {name: TestServer(app, host="127.0.0.1") for name, app in apps.items()}
    for server in started.values():
        await server.start_server()
    urls = {name: f"http://127.0.0.1:{s.port}" for name, s in started.items()}
    yield {"cid": str(root), **urls}
    for server in started.values():
        await server.close()


async def fetch(servers: dict[str, str], *names: str, cap: int = 100_000) -> bytes:
    gateways = tuple(servers[n] for n in names)
    allow = tuple(u.removeprefix("http://") for u in gateways)
    settings = Settings(allow_hosts=allow, max_retries=0, ipfs_gateways=gateways)
    async with SafeFetcher(settings) as fetcher:
        got = await download(IpfsLocation(servers["cid"], "1.png"), fetcher, gateways, cap)
    assert got.cid is not None
    return got.data


async def test_later_gateway_serves_when_earlier_ones_fail(servers: dict[str, str]) -> None:
    assert await fetch(servers, "busy", "missing", "huge", "good", cap=10_000) == FILE


async def test_a_passing_failure_keeps_the_token_retryable(servers: dict[str, str]) -> None:
    with pytest.raises(ItemError) as e:
        await fetch(servers, "busy", "missing")
    assert (e.value.kind, e.value.retryable) == ("http_status_retryable", True)
    with pytest.raises(ItemError) as e:
        await fetch(servers, "missing")
    assert (e.value.kind, e.value.retryable) == ("http_status", False)


async def test_verified_oversize_content_stops_at_the_first_gateway(
    servers: dict[str, str],
) -> None:
    with pytest.raises(ItemError) as e:
        await fetch(servers, "good", "busy", cap=100)
    assert e.value.kind == "too_large" and e.value.verified
