"""The demo gateway, run as the demo runs it, serving Moonbirds content built from the archive."""

from __future__ import annotations

import dataclasses
import functools
import json
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.demo_content import MoonbirdsContent, build_moonbirds
from infra.gateway import CAR_TYPE, RAW_TYPE, make_app
from infra.process import free_port, running
from infra.stack import MOONBIRDS_ARCHIVE as ARCHIVE
from infra.stack import StackConfig, gateway_spec
from tasks.core.errors import ItemError
from tasks.ingest.ipfs.car import read_car
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.importer import add_directory
from tasks.ingest.ipfs.verify import file_from_car

TOKENS = 50
LIMIT = 1 << 20


@dataclass(frozen=True)
class Gateway:
    url: str
    content: MoonbirdsContent


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(url: str, method: str = "GET", accept: str | None = None) -> Reply:
    request = urllib.request.Request(url, method=method)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


@functools.cache
def _archive() -> dict[str, bytes]:
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        return {m.name: f.read() for m in tar if (f := tar.extractfile(m)) is not None}


def archived(name: str) -> bytes:
    return _archive()[f"moonbirds/{name}"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cfg = StackConfig(home=tmp_path_factory.mktemp("home"), gateway_port=free_port())
    content = build_moonbirds(ARCHIVE, cfg.home / "ipfs", limit=TOKENS)
    with running(gateway_spec(cfg)):  # the demo's own command line; stopped by its PID
        yield Gateway(f"http://127.0.0.1:{cfg.gateway_port}", content)


def test_demo_content_is_reused_when_unchanged(gateway: Gateway) -> None:
    content = gateway.content
    assert content.count == TOKENS
    roots, _ = read_car(content.car_path.read_bytes())
    assert [str(r) for r in roots] == [content.metadata_cid, content.images_cid]
    mtime = content.car_path.stat().st_mtime_ns
    assert build_moonbirds(ARCHIVE, content.car_path.parent, limit=TOKENS) == content
    assert content.car_path.stat().st_mtime_ns == mtime


def test_image_is_served_as_the_archived_png(gateway: Gateway) -> None:
    reply = fetch(f"{gateway.url}/ipfs/{gateway.content.images_cid}/7.png")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "image/png"
    assert reply.body == archived("images/7.png")


def test_metadata_points_at_the_images_folder(gateway: Gateway) -> None:
    reply = fetch(f"{gateway.url}/ipfs/{gateway.content.metadata_cid}/7")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    served = json.loads(reply.body)
    original = json.loads(archived("metadata/7.json"))
    assert served["image"] == f"ipfs://{gateway.content.images_cid}/7.png"
    assert {**served, "image": original["image"]} == original
    assert list(served) == list(original)  # key order kept


@pytest.mark.parametrize("how", ["query", "accept"])
def test_car_responses_verify(gateway: Gateway, how: str) -> None:
    images = CID.parse(gateway.content.images_cid)
    url = f"{gateway.url}/ipfs/{images}/12.png"
    reply = (
        fetch(url + "?format=car")
        if how == "query"
        else fetch(url, accept="application/vnd.ipld.car")
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == CAR_TYPE
    assert read_car(reply.body)[0] == [images]
    file_cid, data = file_from_car(reply.body, images, "12.png", LIMIT)
    assert data == archived("images/12.png")

    metadata = CID.parse(gateway.content.metadata_cid)
    car = fetch(f"{gateway.url}/ipfs/{metadata}/12?format=car").body
    doc = json.loads(file_from_car(car, metadata, "12", LIMIT)[1])
    assert doc["image"] == f"ipfs://{images}/12.png"

    raw = fetch(f"{gateway.url}/ipfs/{file_cid}", accept=RAW_TYPE)
    assert raw.headers["Content-Type"] == RAW_TYPE
    assert file_cid.digest_matches(raw.body)


def test_head_and_errors(gateway: Gateway) -> None:
    images = gateway.content.images_cid
    head = fetch(f"{gateway.url}/ipfs/{images}/3.png", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == len(archived("images/3.png"))
    absent = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert fetch(f"{gateway.url}/ipfs/{absent}").status == 404
    assert fetch(f"{gateway.url}/ipfs/{images}/{TOKENS}.png").status == 404
    assert fetch(f"{gateway.url}/ipfs/{images}/3.png/x").status == 404
    assert fetch(f"{gateway.url}/ipfs/{images}").status == 404  # a directory: no listing
    assert fetch(f"{gateway.url}/ipfs/not-a-cid").status == 400
    assert fetch(f"{gateway.url}/ipfs/{images}/3.png?format=tar").status == 400
    assert fetch(f"{gateway.url}/health").status == 200


async def test_in_process_gateway_resolves_hamt_folders() -> None:
    tree = {f"{i}.png": f"bird {i}".encode() for i in range(10_000)}
    root, blocks = add_directory(tree)
    async with TestClient(TestServer(make_app(blocks))) as client:
        for i in (5, 9999, 5):
            reply = await client.get(f"/ipfs/{root}/{i}.png")
            assert reply.status == 200
            assert await reply.read() == f"bird {i}".encode()
        car = await (await client.get(f"/ipfs/{root}/77.png?format=car")).read()
        assert file_from_car(car, root, "77.png", 100)[1] == b"bird 77"
        assert len(read_car(car)[1]) < 10  # the shards on the path, not the whole folder
        assert (await client.get(f"/ipfs/{root}/10000.png")).status == 404


def test_fault_options_put_on_storms_and_cut_cars(gateway: Gateway, tmp_path: Path) -> None:
    """The command line bench/faults.py starts: half 429 with Retry-After, the rest cut short."""
    cfg = StackConfig(home=gateway.content.car_path.parent.parent, gateway_port=free_port())
    spec = gateway_spec(cfg)
    requests = tmp_path / "requests.jsonl"
    flags = ["--fault-status", "429", "--fault-fraction", "0.5", "--fault-retry-after", "3"]
    flags += ["--truncate-fraction", "1", "--request-log", str(requests)]
    faulty = dataclasses.replace(spec, name="gateway-faulty", argv=[*spec.argv, *flags])
    images = CID.parse(gateway.content.images_cid)
    with running(faulty):
        replies = [
            fetch(f"http://127.0.0.1:{cfg.gateway_port}/ipfs/{images}/{i}.png?format=car")
            for i in range(20)
        ]
    storm = [r for r in replies if r.status == 429]
    cut = [r for r in replies if r.status == 200]
    assert storm and cut and len(storm) + len(cut) == 20
    assert all(r.headers["Retry-After"] == "3" for r in storm)
    for r in cut:
        with pytest.raises(ItemError, match="bad_car"):
            file_from_car(r.body, images, "0.png", LIMIT)
    logged = [json.loads(line) for line in requests.read_text().splitlines()]
    assert [(e["status"], e["fault"]) for e in logged] == [
        (r.status, "429" if r.status == 429 else "truncated") for r in replies
    ]
