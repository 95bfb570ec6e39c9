"""Planning collections from what their contracts are, on contracts that mimic real
interfaces (infra/chain/contracts), through nodes that cap or refuse eth_getLogs."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from infra.demo_chain import deploy_contract, rpc, send_transaction
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, ingest_block, manifest_key
from tasks.ingest.chain import ChainReader, encode_call
from tasks.ingest.logs import TRANSFER, ZERO_TOPIC, LogsUnavailable, scan_logs
from tasks.ingest.manifest import ManifestRow, from_parquet
from tasks.ingest.plan import CollectionPlan, plan_collection
from tasks.ingest.registry import CollectionTarget
from tasks.ingest.token_source import ERC721, ERC1155
from tests.support.servers import BackgroundServer, Origin
from tests.support.stack import Services, prefix_for

PROJECTS = {3: 40, 4: 5}  # Art Blocks project -> tokens minted
ART_IDS = [p * 1_000_000 + n for p, count in PROJECTS.items() for n in range(count)]
SVG = "<svg xmlns='http://www.w3.org/2000/svg'><rect width='1' height='1'/></svg>"


class CappedNode(BackgroundServer):
    """A JSON-RPC proxy to anvil that refuses eth_getLogs over `max_span` blocks (as real
    nodes refuse wide spans), or every eth_getLogs when `max_span` is 0; counts them."""

    def __init__(self, upstream: str, max_span: int) -> None:
        self.upstream, self.max_span = upstream, max_span
        self.queries: Counter[str] = Counter()  # "answered" / "refused"
        self._lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/", self._handle)
        super().__init__(app)

    def _refusal(self, item: dict[str, Any]) -> dict[str, Any] | None:
        if item.get("method") != "eth_getLogs":
            return None
        if self.max_span == 0:
            error = {"code": -32601, "message": "the method eth_getLogs does not exist"}
        else:
            query = item["params"][0]
            span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            if span <= self.max_span:
                with self._lock:
                    self.queries["answered"] += 1
                return None
            error = {"code": -32005, "message": f"block range too large, max {self.max_span}"}
        with self._lock:
            self.queries["refused"] += 1
        return {"jsonrpc": "2.0", "id": item.get("id"), "error": error}

    async def _handle(self, request: web.Request) -> web.Response:
        batch = json.loads(await request.read())
        refused = [r for r in map(self._refusal, batch) if r is not None]
        passed = [item for item in batch if item["id"] not in {r["id"] for r in refused}]
        replies = []
        if passed:
            async with (
                aiohttp.ClientSession() as session,
                session.post(self.upstream, json=passed) as resp,
            ):
                replies = await resp.json()
        return web.json_response([*replies, *refused])


@dataclass(frozen=True)
class Chain:
    url: str
    sender: str
    art_blocks: str  # DemoArtBlocks with ART_IDS, URIs served by the origin
    art_base: str  # the origin path its tokenURIs start with


def _deploy(chain_url: str, sender: str, artifact: Any, types: list[str], args: list[Any]) -> str:
    return deploy_contract(chain_url, sender, artifact, types, args).lower()


def _send(
    url: str, sender: str, to: str, signature: str, types: list[str], args: list[Any]
) -> None:
    send_transaction(url, sender, encode_call(signature, types, args), to=to)


def _serve_token(origin: Origin, path: str, name: str) -> None:
    image = "data:image/svg+xml;base64," + base64.b64encode(SVG.encode()).decode()
    origin.serve(path, json.dumps({"name": name, "image": image}), "application/json")


@pytest.fixture(scope="module")
def chain(services: Services, origin: Origin) -> Chain:
    url = services.rpc_url
    sender = str(rpc(url, "eth_accounts", [])[0])
    base = "/planning-art-blocks/"
    art = _deploy(
        url,
        sender,
        services.artifacts["DemoArtBlocks"],
        ["string"] * 3,
        ["Squiggles", "SQ", origin.url + base],
    )
    for project, count in PROJECTS.items():
        signature = "mintProject(address,uint256,uint256)"
        _send(
            url, sender, art, signature, ["address", "uint256", "uint256"], [sender, project, count]
        )
    for token_id in ART_IDS:
        _serve_token(origin, f"{base}{token_id}", f"Squiggle #{token_id}")
    return Chain(url, sender, art, base)


@pytest.fixture
def capped(chain: Chain, request: pytest.FixtureRequest) -> Iterator[CappedNode]:
    """A node refusing eth_getLogs over `request.param` blocks (0: every one)."""
    node = CappedNode(chain.url, request.param).start()
    try:
        yield node
    finally:
        node.stop()


def _plan(settings: Settings, address: str, ids: tuple[int, int] | None = None) -> CollectionPlan:
    return plan_collection(CollectionTarget(address, address, ids), settings)


def _rows(settings: Settings, spec: BlockSpec) -> dict[int, ManifestRow]:
    store = ObjectStore(settings)
    data = store.get(manifest_key(store, spec))
    assert data is not None
    return {int(r.token_id): r for r in from_parquet(data)}


def test_art_blocks_ids_from_3_000_000_plan_exactly_and_ingest(
    chain: Chain, settings: Settings, origin: Origin
) -> None:
    """Neither 0 nor 1 is a token and totalSupply (45) says nothing of where ids start: the
    mint logs list them, and the blocks read exactly them."""
    plan = _plan(settings, chain.art_blocks)
    assert (plan.name, plan.error) == ("Squiggles", None)
    assert plan.blocks == [
        BlockSpec("Squiggles", chain.art_blocks, 3_000_000, 3_000_040, 1000, ERC721),
        BlockSpec("Squiggles", chain.art_blocks, 4_000_000, 4_000_005, 1000, ERC721),
    ]
    results = [ingest_block(spec, settings) for spec in plan.blocks]
    assert [(r.tokens, r.ok, r.failed) for r in results] == [(40, 40, Counter()), (5, 5, Counter())]
    rows = {i: r for spec in plan.blocks for i, r in _rows(settings, spec).items()}
    assert sorted(rows) == ART_IDS
    assert rows[4_000_004].token_uri == origin.url + chain.art_base + "4000004"


@pytest.mark.parametrize("capped", [8], indirect=True)
def test_offset_ids_from_logs_through_a_node_that_caps_spans(
    chain: Chain, services: Services, settings: Settings, capped: CappedNode
) -> None:
    """A PFP minted from id 5000 in two rounds 40 blocks apart; the node refuses spans over
    8 blocks, so the log scan halves its span until the node answers."""
    url, sender = chain.url, chain.sender
    pfp = _deploy(
        url,
        sender,
        services.artifacts["DemoPFP"],
        ["string", "string", "string", "uint256"],
        ["Offset", "OFF", "https://offset.test/", 5000],
    )
    mint = ("mintBatch(address,uint256)", ["address", "uint256"], [sender, 10])
    _send(url, sender, pfp, *mint)
    rpc(url, "anvil_mine", [hex(40)])  # ~25 ms a block on this chain
    _send(url, sender, pfp, *mint)
    latest = int(rpc(url, "eth_blockNumber", []), 16)

    plan = _plan(settings.replace(rpc_url=capped.url), pfp)
    assert plan.error is None
    assert plan.blocks == [BlockSpec("Offset", pfp, 5000, 5020, 1000, ERC721)]
    assert capped.queries["refused"] >= 1
    # The whole chain in spans of 4..8 blocks, plus a refusal each time the scan widens.
    assert capped.queries["answered"] <= latest // 4 + 1
    assert capped.queries["refused"] <= capped.queries["answered"] // 8 + 12


@pytest.mark.parametrize("capped", [1], indirect=True)
async def test_the_log_scan_has_a_budget(chain: Chain, capped: CappedNode) -> None:
    seen: list[Mapping[str, Any]] = []
    async with ChainReader(capped.url) as reader:
        with pytest.raises(LogsUnavailable, match="more than 5 eth_getLogs queries"):
            await scan_logs(
                reader, chain.art_blocks, [TRANSFER, ZERO_TOPIC], seen.append, max_queries=5
            )
    assert capped.queries["answered"] + capped.queries["refused"] == 5


@pytest.mark.parametrize("capped", [0], indirect=True)
def test_a_bounded_search_finds_ids_when_the_node_gives_no_logs(
    chain: Chain, settings: Settings, capped: CappedNode
) -> None:
    plan = _plan(settings.replace(rpc_url=capped.url), chain.art_blocks)
    assert plan.error is None
    assert capped.queries == Counter(refused=1)  # no span is tried after "no such method"
    assert [(s.first, s.end, s.only) for s in plan.blocks] == [
        (3_000_000, 3_000_040, None),
        (4_000_000, 4_000_005, None),
    ]


def _minted(chain: Chain, services: Services, contract: str, count: int) -> str:
    """A contract of ``contract`` (no constructor arguments) with tokens 0..count-1 (or
    1..count, as its mint numbers them) minted to the sender."""
    address = _deploy(chain.url, chain.sender, services.artifacts[contract], [], [])
    _send(
        chain.url,
        chain.sender,
        address,
        "mint(address,uint256)",
        ["address", "uint256"],
        [chain.sender, count],
    )
    return address


def test_a_contract_without_token_uri_is_a_plan_error(
    chain: Chain, services: Services, settings: Settings
) -> None:
    address = _minted(chain, services, "DemoNoMetadata", 100)
    plan = _plan(settings, address)
    assert plan.blocks == []
    assert plan.error is not None
    assert plan.error.startswith(f"{address} has no tokenURI(uint256): token 0 exists")
    assert "not an ERC-721 metadata contract" in plan.error


def test_ids_that_mostly_revert_are_a_plan_error_with_printable_reasons(
    chain: Chain, services: Services, settings: Settings
) -> None:
    """Tokens 1..30 exist, but tokenURI answers for token 1 only: the others revert with
    raw bytes (not UTF-8, control characters), which stay printable wherever stored."""
    address = _minted(chain, services, "DemoRevertingURI", 30)
    plan = _plan(settings, address)
    assert plan.blocks == []
    assert plan.error is not None and plan.error.isprintable()
    assert re.match(r"19 of 20 sampled ids \(2, \d+, \d+, \d+, \d+, \.\.\.\) revert \(", plan.error)
    assert "the id range is probably wrong; give the right one explicitly" in plan.error
    assert "\\x00\\x07\\x1b[2J\\u202ebad" in plan.error

    spec = BlockSpec("Reverting", address, 1, 4)
    ingest_block(spec, settings)
    rows = _rows(settings, spec)
    assert rows[1].error_kind == "no_image"  # its URI answers, with metadata of no image
    for row in (rows[2], rows[3]):
        assert row.error_kind == "not_minted"
        assert row.error is not None and row.error.isprintable()
        assert "execution reverted: \ufffd\ufffd\\x00\\x07\\x1b[2J\\u202ebad" in row.error


def test_erc1155_plans_from_mint_logs_and_ingests_with_id_substitution(
    chain: Chain,
    services: Services,
    settings: Settings,
    origin: Origin,
    request: pytest.FixtureRequest,
) -> None:
    base = "/" + prefix_for(request)
    url, sender = chain.url, chain.sender
    address = _deploy(
        url, sender, services.artifacts["Demo1155"], ["string"], [origin.url + base + "{id}.json"]
    )
    _send(
        url,
        sender,
        address,
        "mint(address,uint256,uint256)",
        ["address", "uint256", "uint256"],
        [sender, 7, 10],
    )
    batch = ("mintBatch(address,uint256[],uint256[])", ["address", "uint256[]", "uint256[]"])
    _send(url, sender, address, *batch, [sender, [1, 2, 3, 500], [1, 1, 1, 1]])
    _send(url, sender, address, *batch, [sender, [2, 2_000_001], [5, 1]])  # 2 again
    other = "0x" + "42" * 20  # a transfer, not a mint: its id (7) is already known
    transfer = "safeTransferFrom(address,address,uint256,uint256,bytes)"
    types = ["address", "address", "uint256", "uint256", "bytes"]
    _send(url, sender, address, transfer, types, [sender, other, 7, 1, b""])
    ids = [1, 2, 3, 7, 500, 2_000_001]
    for token_id in ids:
        _serve_token(origin, f"{base}{token_id:064x}.json", f"Item {token_id}")

    plan = _plan(settings, address)
    assert plan.error is None
    assert plan.blocks == [
        BlockSpec(address, address, 1, 501, 1000, ERC1155, (1, 2, 3, 7, 500)),
        BlockSpec(address, address, 2_000_001, 2_000_002, 1000, ERC1155),
    ]
    results = [ingest_block(spec, settings) for spec in plan.blocks]
    assert [(r.tokens, r.ok, r.failed) for r in results] == [(5, 5, Counter()), (1, 1, Counter())]
    rows = _rows(settings, plan.blocks[0])
    assert sorted(rows) == [1, 2, 3, 7, 500]  # ids 4..499 were never asked for
    assert rows[500].token_uri == f"{origin.url}{base}{500:064x}.json"
    assert origin.hits_for(f"{base}{7:064x}.json") == 1

    small = _plan(settings.replace(max_tokens_per_collection=4), address)
    assert small.blocks == [] and small.error is not None
    assert "more than max_tokens_per_collection=4" in small.error
