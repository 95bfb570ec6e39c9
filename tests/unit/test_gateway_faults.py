"""The demo gateway's fault modes: what bench/faults.py puts on against the pipeline."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.gateway import CAR_TYPE, Faults, RequestLog, make_app
from tasks.core.errors import ItemError
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.importer import add_directory
from tasks.ingest.ipfs.verify import file_from_car

FILES = {
    f"{i}.json": json.dumps({"name": f"token {i}", "pad": "x" * 300}).encode() for i in range(4)
}


def _folder() -> tuple[CID, dict[CID, bytes]]:
    return add_directory(FILES)


def _logged(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, "1"), (503, None), (429, None), (502, "2")]
)
async def test_storm_answers_status_with_or_without_retry_after(
    status: int, retry_after: str | None
) -> None:
    root, blocks = _folder()
    out = io.StringIO()
    faults = Faults(status=status, fraction=1.0, retry_after=retry_after)
    async with TestClient(TestServer(make_app(blocks, faults, RequestLog(out)))) as client:
        reply = await client.get(f"/ipfs/{root}/1.json?format=car")
        assert reply.status == status
        assert reply.headers.get("Retry-After") == retry_after
        assert (await client.get("/health")).status == 200  # only content requests
    (line,) = _logged(out)
    assert {k: line[k] for k in ("path", "status", "fault")} == {
        "path": f"/ipfs/{root}/1.json",
        "status": status,
        "fault": str(status),
    }


async def test_a_fraction_of_requests_is_hit() -> None:
    root, blocks = _folder()
    faults = Faults(status=503, fraction=0.5, seed=7)
    async with TestClient(TestServer(make_app(blocks, faults))) as client:
        statuses = [(await client.get(f"/ipfs/{root}/2.json")).status for _ in range(200)]
    assert set(statuses) == {200, 503}
    assert 60 < statuses.count(503) < 140


async def test_truncated_cars_fail_verification_and_files_are_whole() -> None:
    root, blocks = _folder()
    out = io.StringIO()
    faults = Faults(truncate_fraction=1.0)
    async with TestClient(TestServer(make_app(blocks, faults, RequestLog(out)))) as client:
        reply = await client.get(f"/ipfs/{root}/3.json?format=car")
        assert (reply.status, reply.headers["Content-Type"]) == (200, CAR_TYPE)
        car = await reply.read()
        whole = await (await client.get(f"/ipfs/{root}/3.json")).read()
    assert whole == FILES["3.json"]  # only CAR responses are cut
    with pytest.raises(ItemError) as failed:
        file_from_car(car, root, "3.json", 1 << 20)
    assert failed.value.kind == "bad_car"
    assert [(r["status"], r["fault"]) for r in _logged(out)] == [(200, "truncated"), (200, None)]


async def test_window_opens_after_the_first_request_and_closes() -> None:
    root, blocks = _folder()
    faults = Faults(status=429, fraction=1.0, start_s=0.2, duration_s=0.3)
    async with TestClient(TestServer(make_app(blocks, faults))) as client:
        url = f"/ipfs/{root}/0.json?format=car"
        before = (await client.get(url)).status
        await asyncio.sleep(0.25)
        during = (await client.get(url)).status
        await asyncio.sleep(0.35)
        after = (await client.get(url)).status
        assert (before, during, after) == (200, 429, 200)
        car = await (await client.get(url)).read()
    assert file_from_car(car, root, "0.json", 1 << 20)[1] == FILES["0.json"]


def test_faults_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="429 or 5xx"):
        Faults(status=404, fraction=1.0)
    with pytest.raises(ValueError, match="fraction"):
        Faults(truncate_fraction=1.5)


async def test_added_latency_holds_each_content_answer_in_parallel() -> None:
    root, blocks = _folder()
    latency = 0.2
    async with TestClient(TestServer(make_app(blocks, latency_s=latency))) as client:
        started = time.monotonic()
        assert (await client.get("/health")).status == 200
        health_s = time.monotonic() - started

        async def fetch(name: str) -> bytes:
            return await (await client.get(f"/ipfs/{root}/{name}")).read()

        started = time.monotonic()
        bodies = await asyncio.gather(*(fetch(name) for name in FILES for _ in range(5)))
        content_s = time.monotonic() - started
    assert bodies == [FILES[name] for name in FILES for _ in range(5)]
    assert health_s < latency  # only content answers wait
    assert latency <= content_s < 2 * latency  # 20 requests held side by side, not in turn


def test_latency_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        make_app({}, latency_s=-0.01)
