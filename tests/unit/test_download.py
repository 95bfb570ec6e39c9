"""IPFS downloads across several gateways: which failure wins, and when to stop trying."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from infra.gateway import BlockStore, make_app
from tasks.core.errors import ItemError
from tasks.core.settings import Settings
from tasks.ingest.download import download
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.importer import add_bytes, add_directory
from tasks.ingest.uris import IpfsLocation

FILE = b"\x89PNG pretend image" * 100


def answering(status: int, body: bytes = b"") -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def hanging(release: asyncio.Event) -> web.Application:
    """A gateway that accepts the request and never answers (until the test ends)."""

    async def handler(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def cutting_first_answers(blocks: dict[CID, bytes], root: CID, cut: int) -> web.Application:
    """A gateway whose first ``cut`` answers are its CAR cut in half, then whole ones."""
    store = BlockStore(blocks)
    answers = 0

    async def handler(_: web.Request) -> web.Response:
        nonlocal answers
        answers += 1
        car = store.car(root, ("1.png",))
        return web.Response(body=car[: len(car) // 2] if answers <= cut else car)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, str]]:
    root, blocks = add_directory({"1.png": FILE})
    release = asyncio.Event()
    apps = {
        "good": make_app(blocks),
        "busy": answering(503),
        "missing": answering(404),
        "huge": answering(200, b"x" * 200_000),
        "hangs": hanging(release),
        "hangs-too": hanging(release),
        "cuts-once": cutting_first_answers(blocks, root, 1),
        "cuts-always": cutting_first_answers(blocks, root, 1_000),
    }
    started = {name: TestServer(app, host="127.0.0.1") for name, app in apps.items()}
    for server in started.values():
        await server.start_server()
    urls = {name: f"http://127.0.0.1:{s.port}" for name, s in started.items()}
    yield {"cid": str(root), **urls}
    release.set()
    for server in started.values():
        await server.close()


async def fetch(
    servers: dict[str, str],
    *names: str,
    cap: int = 100_000,
    deadline_s: float = 300.0,
    retries: int = 0,
) -> bytes:
    gateways = tuple(servers[n] for n in names)
    allow = tuple(u.removeprefix("http://") for u in gateways)
    settings = Settings(
        allow_hosts=allow,
        max_retries=retries,
        backoff_base_s=0.01,
        ipfs_gateways=gateways,
        url_deadline_s=deadline_s,
    )
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


async def test_a_car_cut_short_is_asked_for_again(servers: dict[str, str]) -> None:
    # A gateway's bad answer is not the content's fault: the same gateway is asked
    # again within the retries, and past them the token stays retryable.
    assert await fetch(servers, "cuts-once", retries=1) == FILE
    with pytest.raises(ItemError) as e:
        await fetch(servers, "cuts-always", retries=2)
    assert (e.value.kind, e.value.retryable) == ("bad_car", True)


async def test_verified_oversize_content_stops_at_the_first_gateway(
    servers: dict[str, str],
) -> None:
    with pytest.raises(ItemError) as e:
        await fetch(servers, "good", "busy", cap=100)
    assert e.value.kind == "too_large" and e.value.verified


async def test_a_hanging_gateway_gets_its_share_of_the_deadline_only(
    servers: dict[str, str],
) -> None:
    # Two gateways, 2 s in all: the first hangs for its 1 s share, the second serves.
    started = time.monotonic()
    assert await fetch(servers, "hangs", "good", deadline_s=2.0) == FILE
    assert 0.9 <= time.monotonic() - started < 2.0 + 1.5


async def test_one_deadline_bounds_the_download_across_gateways(servers: dict[str, str]) -> None:
    started = time.monotonic()
    with pytest.raises(ItemError) as e:
        await fetch(servers, "hangs", "hangs-too", deadline_s=1.5)
    assert (e.value.kind, e.value.retryable) == ("timeout", True)
    assert time.monotonic() - started < 1.5 + 1.5


async def test_files_of_a_verified_directory_are_asked_for_by_their_own_cid() -> None:
    """After one token's CAR verified the directory, the others' CARs hold their file only."""
    files = {f"{i}.png": FILE + bytes([i]) for i in range(3)}
    root, blocks = add_directory({"sub": files})
    asked: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        asked.append(request.path)
        return cast(web.StreamResponse, await handler(request))

    app = make_app(blocks)
    app.middlewares.append(record)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        gateway = f"http://127.0.0.1:{server.port}"
        settings = Settings(allow_hosts=(gateway.removeprefix("http://"),))
        async with SafeFetcher(settings) as fetcher:
            got = [
                await download(IpfsLocation(str(root), f"sub/{name}"), fetcher, [gateway], 10**6)
                for name in files
            ]
    finally:
        await server.close()
    assert [g.data for g in got] == list(files.values())
    assert asked == [f"/ipfs/{root}/sub/0.png", f"/ipfs/{got[1].cid}", f"/ipfs/{got[2].cid}"]


@pytest.mark.parametrize("version", [0, 1])
async def test_a_raw_answer_is_believed_only_where_re_chunking_proves_the_cid(
    version: int,
) -> None:
    big = bytes(range(256)) * 2_000  # two kubo chunks: a file node above two leaves
    cid, _ = add_bytes(big, version)
    started = {
        name: TestServer(answering(200, body), host="127.0.0.1")
        for name, body in (("raw", big), ("other", big[:-1] + b"!"))
    }
    for server in started.values():
        await server.start_server()
    try:
        urls = {name: f"http://127.0.0.1:{s.port}" for name, s in started.items()}
        settings = Settings(allow_hosts=tuple(u.removeprefix("http://") for u in urls.values()))
        async with SafeFetcher(settings) as fetcher:
            got = await download(IpfsLocation(str(cid), ""), fetcher, [urls["raw"]], 10**6)
            assert (got.data, got.cid) == (big, str(cid))
            with pytest.raises(ItemError) as other:
                await download(IpfsLocation(str(cid), ""), fetcher, [urls["other"]], 10**6)
            assert other.value.kind == "bad_car"
            # Under a path, the raw bytes cannot be tied to the directory's CID.
            root, _ = add_directory({"f.bin": big})
            with pytest.raises(ItemError) as pathed:
                await download(IpfsLocation(str(root), "f.bin"), fetcher, [urls["raw"]], 10**6)
            assert pathed.value.kind == "bad_car"
    finally:
        for server in started.values():
            await server.close()
