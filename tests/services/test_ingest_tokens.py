"""ingest_block end to end against real services: anvil, the demo IPFS gateway, SeaweedFS S3.

A "Quirks" DemoOnChain collection holds one crafted tokenURI per URI form and per
failure the pipeline knows; its shard runs once (module fixture) and each case is
checked against its manifest row and the bytes read back from S3. The demo
Moonbirds and Loot collections are ingested for real, then rerun to check that an
ingested collection costs no request and no write.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.blocks import BlockSpec, IngestResult, ingest_block, manifest_key, plan_blocks
from tasks.ingest.gateways import FAILS_TO_BENCH
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.importer import add_bytes
from tasks.ingest.manifest import ManifestRow, from_parquet
from tests.support.servers import GatewayProxy, Origin
from tests.support.stack import (
    MOONBIRDS,
    MOONBIRDS_ARCHIVE,
    QUIRKS_IMAGE_CAP,
    Services,
    object_of,
    prefix_for,
    stored_objects,
)

MAX_IMAGE_BYTES = QUIRKS_IMAGE_CAP
AR_TXID = "bNbA3TEQVL60xlgCcqdz4ZPHFZ711cZ3hmkpGttDt_U"
UNREVEALED = 4  # tokens sharing one image


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def jbytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def raster(fmt: str, size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A 12 KB PNG of 10,000 x 10,000 pixels: over Pillow's MAX_IMAGE_PIXELS."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")
    return buf.getvalue()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        data: bytes = r.read()
    return data


def file_cid(data: bytes) -> str:
    """The CID `ipfs add` gives a file (as the demo's folders were built)."""
    return str(add_bytes(data)[0])


def read_manifest(store: ObjectStore, spec: BlockSpec) -> dict[int, ManifestRow]:
    data = store.get(manifest_key(store, spec))
    assert data is not None, f"no manifest for {spec.name}"
    rows = from_parquet(data)
    by_id = {int(r.token_id): r for r in rows}
    assert len(by_id) == len(rows), "a token appears twice in the manifest"
    return by_id


def read_blobs(store: ObjectStore, keys: set[str]) -> dict[str, bytes]:
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(store.read_blob, sorted(keys)))
    assert all(v is not None for v in values), "a manifest names a blob that is not in S3"
    return {k: v for k, v in zip(sorted(keys), values, strict=True) if v is not None}


# --------------------------------------------------------------------------- quirks


@dataclass(frozen=True)
class Case:
    name: str
    uri: str
    kind: str | None = None  # error_kind; None: the row must be ok
    image: bytes | None = None  # the image bytes that must be stored
    mime: str | None = None
    size: tuple[int, int] | None = None  # (width, height) of raster images
    metadata: bytes | None = None  # the metadata bytes that must be stored
    cid: str | None = None  # the image's CID when it came from IPFS
    metadata_cid: str | None = None
    ipfs_requests: int = 0  # requests this token makes to the IPFS gateway

    @property
    def keeps_metadata(self) -> bool:
        return self.metadata is not None


@dataclass
class Quirks:
    services: Services
    settings: Settings
    store: ObjectStore
    origin: Origin
    outsider: Origin
    gateway: GatewayProxy
    address: str
    cases: dict[int, Case]
    spec: BlockSpec
    result: IngestResult
    rows: dict[int, ManifestRow]
    origin_hits: Counter[str]  # hits on /q/ paths during the shard run

    def row(self, name: str) -> tuple[Case, ManifestRow]:
        for token_id, case in self.cases.items():
            if case.name == name:
                return case, self.rows[token_id]
        raise KeyError(name)


SVG_LOOT = (
    '<svg xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMinYMin meet" '
    'viewBox="0 0 350 350"><rect width="100%" height="100%" fill="black" />'
    '<text x="10" y="20" class="base">"Grave Wand"</text></svg>'
)
SVG_INLINE = (
    "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'>"
    '<text>50% off, a#b &amp; "c" é</text></svg>'
)
# Malformed XML with a script: fine to store (as text), never parsed or rendered.
SVG_HOSTILE = (
    b'<?xml version="1.0"?>\n<!-- art -->\n<svg xmlns="http://www.w3.org/2000/svg">'
    b"<script>alert(document.cookie)</script><g><unclosed attr='1'"
)
HTML = b"<!doctype html><html><body>404 but with status 200</body></html>"


def _cases(services: Services, origin: Origin, outsider: Origin) -> list[Case]:
    meta_cid = services.moonbirds.metadata_cid
    meta_v1 = str(CID(1, 0x70, CID.parse(meta_cid).multihash))  # base32 CIDv1, dag-pb
    gw = services.gateway

    def ipfs(name: str, uri: str, token: int, requests: int = 2) -> Case:
        metadata = fetch(f"{gw}/ipfs/{meta_cid}/{token}")
        image = fetch(f"{gw}/ipfs/{services.moonbirds.images_cid}/{token}.png")
        return Case(
            name,
            uri,
            image=image,
            mime="image/png",
            size=(42, 42),
            metadata=metadata,
            cid=file_cid(image),
            metadata_cid=file_cid(metadata),
            ipfs_requests=requests,
        )

    png = raster("PNG", (7, 5), (200, 10, 10))
    gif = raster("GIF", (3, 4), (0, 0, 255))
    jpeg = raster("JPEG", (16, 8), (0, 128, 0))
    unrevealed = raster("PNG", (2, 2), (128, 128, 128))

    def http_meta(path: str, image_url: str) -> bytes:
        meta = jbytes({"name": path, "image": image_url})
        origin.serve(path, meta, "application/json")
        return meta

    loot_meta = jbytes({"name": "Bag #1", "image": "data:image/svg+xml;base64," + b64(SVG_LOOT)})
    inline_meta = json.dumps({"name": "inline", "image_data": SVG_INLINE}).encode()
    utf8_meta = jbytes({"name": "utf8", "image": "data:image/svg+xml;utf8," + SVG_LOOT})
    no_image = jbytes({"name": "no image here", "image": "  "})

    origin.serve("/q/img/a.png", png, "image/png")
    origin.serve("/q/ar/" + AR_TXID + "/img.jpg", jpeg, "image/jpeg")
    origin.serve("/q/img/unrevealed.png", unrevealed, "image/png")
    origin.serve("/q/img/huge.png", png + bytes(MAX_IMAGE_BYTES), "image/png")
    origin.serve(
        "/q/img/gzipped.png",
        gzip.compress(png + bytes(4 * MAX_IMAGE_BYTES)),
        "image/png",
        headers={"Content-Encoding": "gzip"},
    )
    origin.serve("/q/img/page.png", HTML, "image/png")
    origin.serve("/q/img/bomb.png", bomb_png(), "image/png")
    origin.serve("/q/img/art.svg", SVG_HOSTILE, "image/svg+xml")
    origin.serve("/q/notjson", b"<html>metadata service is down</html>", "application/json")
    origin.serve(
        "/q/redirect",
        status=302,
        headers={"Location": f"http://[::ffff:127.0.0.1]:{outsider.port}/"},
    )
    outsider.serve("/", png, "image/png")
    outsider.serve("/q/x.png", png, "image/png")

    cases = [
        Case(
            "loot_base64",
            "data:application/json;base64," + b64(loot_meta),
            image=SVG_LOOT.encode(),
            mime="image/svg+xml",
            metadata=loot_meta,
        ),
        Case(
            "percent_encoded_image_data",
            "data:application/json," + quote(inline_meta.decode(), safe=""),
            image=SVG_INLINE.encode(),
            mime="image/svg+xml",
            metadata=inline_meta,
        ),
        Case(
            "utf8_raw_json",
            "data:application/json;utf8," + utf8_meta.decode(),
            image=SVG_LOOT.encode(),
            mime="image/svg+xml",
            metadata=utf8_meta,
        ),
        # IPFS forms, consecutive ids (the lying-gateway test reuses them): ids 4..9.
        ipfs("ipfs_cid_path", f"ipfs://{meta_cid}/4", 4),
        ipfs("ipfs_ipfs_prefix", f"ipfs://ipfs/{meta_cid}/5", 5),
        ipfs("gateway_url_rerouted", f"http://gateway.invalid/ipfs/{meta_cid}/6", 6),
        ipfs("subdomain_gateway", f"https://{meta_v1}.ipfs.dweb.example/7", 7),
        ipfs("bare_cid_path", f"{meta_cid}/8", 8),
        # The same metadata (and so the same image) as ipfs_cid_path: the image is
        # downloaded once per shard, so this token asks the gateway only for metadata.
        ipfs("ipfs_same_image", f"/ipfs/{meta_cid}/4?again=1#x", 4, requests=1),
        Case(
            "http_origin",
            origin.url + "/q/meta/http.json",
            image=png,
            mime="image/png",
            size=(7, 5),
            metadata=http_meta("/q/meta/http.json", origin.url + "/q/img/a.png"),
        ),
        # ERC-1155: {id} becomes 64 hex digits in the token URI and in the image URL.
        Case("erc1155_id", origin.url + "/q/1155/{id}.json", mime="image/gif", size=(3, 4)),
        Case(
            "arweave",
            f"ar://{AR_TXID}/meta.json",
            image=jpeg,
            mime="image/jpeg",
            size=(16, 8),
            metadata=http_meta(f"/q/ar/{AR_TXID}/meta.json", f"ar://{AR_TXID}/img.jpg"),
        ),
        Case(
            "blocked_port",
            origin.url + "/q/meta/blocked.json",
            "blocked_address",
            metadata=http_meta("/q/meta/blocked.json", f"http://127.0.0.1:{outsider.port}/q/x.png"),
        ),
        Case(
            "blocked_localhost",
            origin.url + "/q/meta/localhost.json",
            "blocked_address",
            metadata=http_meta(
                "/q/meta/localhost.json", f"http://localhost:{outsider.port}/q/x.png"
            ),
        ),
        Case(
            "blocked_redirect_v4_mapped",
            origin.url + "/q/meta/redirect.json",
            "blocked_address",
            metadata=http_meta("/q/meta/redirect.json", origin.url + "/q/redirect"),
        ),
        Case("bad_base64", "data:application/json;base64,eyJuYW1lIjoi!!!*", "bad_uri"),
        Case("ftp", "ftp://ftp.example.com/1.json", "unsupported_uri"),
        Case("not_json", origin.url + "/q/notjson", "bad_json"),
        Case("json_array", "data:application/json,%5B1%2C%7B%7D%5D", "bad_json"),
        Case(
            "no_image",
            "data:application/json;base64," + b64(no_image),
            "no_image",
            metadata=no_image,
        ),
        Case(
            "image_404",
            origin.url + "/q/meta/404.json",
            "http_status",
            metadata=http_meta("/q/meta/404.json", origin.url + "/q/img/missing.png"),
        ),
        Case(
            "too_large",
            origin.url + "/q/meta/huge.json",
            "too_large",
            metadata=http_meta("/q/meta/huge.json", origin.url + "/q/img/huge.png"),
        ),
        Case(
            "too_large_after_gunzip",
            origin.url + "/q/meta/gzip.json",
            "too_large",
            metadata=http_meta("/q/meta/gzip.json", origin.url + "/q/img/gzipped.png"),
        ),
        Case(
            "html_as_image",
            origin.url + "/q/meta/html.json",
            "bad_image",
            metadata=http_meta("/q/meta/html.json", origin.url + "/q/img/page.png"),
        ),
        Case(
            "decompression_bomb",
            origin.url + "/q/meta/bomb.json",
            "bad_image",
            metadata=http_meta("/q/meta/bomb.json", origin.url + "/q/img/bomb.png"),
        ),
        Case(
            # Recognised as SVG by a scan of its head, then refused by the safe parser
            # (a script, and not well-formed): the metadata stays stored.
            "svg_refused_by_the_check",
            origin.url + "/q/meta/svg.json",
            "bad_svg",
            metadata=http_meta("/q/meta/svg.json", origin.url + "/q/img/art.svg"),
        ),
        Case("empty_uri", "", "bad_uri"),
        Case(
            "redirect_followed",
            origin.url + "/q/moved.json",
            image=png,  # the same image as http_origin: still one download
            mime="image/png",
            size=(7, 5),
            metadata=http_meta("/q/meta/moved-here.json", origin.url + "/q/img/a.png"),
        ),
    ]
    folder, files = services.quirks_ipfs_cid, services.quirks_ipfs_files

    def ipfs_image(
        name: str, ref: str, file: str | None, kind: str | None = None, requests: int = 1
    ) -> Case:
        """A data: token whose metadata names an image in the quirks IPFS folder."""
        meta = jbytes({"name": name, "image": ref})
        uri = "data:application/json;base64," + b64(meta)
        if kind is not None or file is None:
            return Case(name, uri, kind, metadata=meta, ipfs_requests=requests)
        image = files[file]
        with Image.open(io.BytesIO(image)) as im:
            size = im.size
        return Case(
            name,
            uri,
            image=image,
            mime="image/png",
            size=size,
            metadata=meta,
            cid=file_cid(image),
            ipfs_requests=requests,
        )

    cases += [
        ipfs_image("ipfs_name_raw_space", f"ipfs://{folder}/my art.png", "my art.png"),
        # The same file as the previous token once the path is normalised: no request.
        ipfs_image(
            "ipfs_name_percent_encoded", f"ipfs://{folder}/my%20art.png", "my art.png", requests=0
        ),
        ipfs_image("ipfs_unicode_name", f"ipfs://{folder}/ünïcödé.png", "ünïcödé.png"),
        ipfs_image("ipfs_escaped_query_chars", f"ipfs://{folder}/what%3F%23.png", "what?#.png"),
        ipfs_image("ipfs_escaped_percent", f"ipfs://{folder}/100%25.png", "100%.png"),
        ipfs_image("ipfs_multi_block_file", f"ipfs://{folder}/big.png", "big.png"),
        ipfs_image("ipfs_too_large", f"ipfs://{folder}/huge.png", None, "too_large"),
        ipfs_image("ipfs_missing_file", f"ipfs://{folder}/nope.png", None, "http_status"),
        ipfs_image("ipfs_directory", f"ipfs://{folder}", None, "bad_car"),
    ]
    origin.serve("/q/moved.json", status=301, headers={"Location": "/q/meta/moved-here.json"})
    unrevealed_metas = [
        jbytes({"name": f"Unrevealed #{n}", "image": origin.url + "/q/img/unrevealed.png"})
        for n in range(UNREVEALED)
    ]
    cases += [
        Case(
            f"unrevealed_{n}",
            "data:application/json;base64," + b64(meta),
            image=unrevealed,
            mime="image/png",
            size=(2, 2),
            metadata=meta,
        )
        for n, meta in enumerate(unrevealed_metas)
    ]
    # The ERC-1155 case's files depend on its token id (its position, from 1).
    position = next(n for n, c in enumerate(cases, 1) if c.name == "erc1155_id")
    hex_id = f"{position:064x}"
    origin.serve(f"/q/1155/{hex_id}.gif", gif, "image/gif")
    meta_1155 = http_meta(f"/q/1155/{hex_id}.json", origin.url + "/q/1155/{id}.gif")
    cases[position - 1] = Case(
        "erc1155_id", cases[position - 1].uri, None, gif, "image/gif", (3, 4), meta_1155
    )
    return cases


@pytest.fixture(scope="module")
def quirks(services: Services, origin: Origin) -> Iterator[Quirks]:
    outsider = Origin().start()  # a loopback server that is not allowlisted
    gateway = GatewayProxy(services.gateway).start()  # counts what the gateway is asked
    try:
        cases = _cases(services, origin, outsider)
        address = services.deploy_on_chain("Quirks", [c.uri for c in cases], first_id=1)
        settings = services.settings.replace(
            s3_prefix="quirks/",
            ipfs_gateways=(gateway.url,),
            allow_hosts=(*services.settings.allow_hosts, gateway.host_port),
            arweave_gateway=origin.url + "/q/ar",
            max_image_bytes=MAX_IMAGE_BYTES,
        )
        # One id past the last minted token: tokenURI reverts there.
        spec = BlockSpec("Quirks", address, 1, len(cases) + 2)
        before = Counter({p: n for p, n in origin.hits.items() if p.startswith("/q/")})
        result = ingest_block(spec, settings)
        hits = Counter({p: n for p, n in origin.hits.items() if p.startswith("/q/")}) - before
        store = ObjectStore(settings)
        rows = read_manifest(store, spec)
        yield Quirks(
            services,
            settings,
            store,
            origin,
            outsider,
            gateway,
            address,
            dict(enumerate(cases, 1)),
            spec,
            result,
            rows,
            hits,
        )
    finally:
        gateway.stop()
        outsider.stop()


CASE_NAMES = [
    "loot_base64",
    "percent_encoded_image_data",
    "utf8_raw_json",
    "ipfs_cid_path",
    "ipfs_ipfs_prefix",
    "gateway_url_rerouted",
    "subdomain_gateway",
    "bare_cid_path",
    "ipfs_same_image",
    "http_origin",
    "erc1155_id",
    "arweave",
    "blocked_port",
    "blocked_localhost",
    "blocked_redirect_v4_mapped",
    "bad_base64",
    "ftp",
    "not_json",
    "json_array",
    "no_image",
    "image_404",
    "too_large",
    "too_large_after_gunzip",
    "html_as_image",
    "decompression_bomb",
    "svg_refused_by_the_check",
    "empty_uri",
    "redirect_followed",
    "ipfs_name_raw_space",
    "ipfs_name_percent_encoded",
    "ipfs_unicode_name",
    "ipfs_escaped_query_chars",
    "ipfs_escaped_percent",
    "ipfs_multi_block_file",
    "ipfs_too_large",
    "ipfs_missing_file",
    "ipfs_directory",
    *(f"unrevealed_{n}" for n in range(UNREVEALED)),
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_quirk_row(quirks: Quirks, name: str) -> None:
    case, row = quirks.row(name)
    store = quirks.store
    assert (row.collection, row.contract) == ("Quirks", quirks.address)
    assert row.token_uri == case.uri
    if case.kind is None:
        assert (row.status, row.error_kind, row.error) == ("ok", None, None), row.error
        assert case.image is not None
        stored = store.read_blob(row.image_key or "")
        assert stored == case.image
        assert row.sha256 == sha(case.image)
        assert row.bytes == len(case.image)
        assert row.mime == case.mime
        assert (row.width, row.height) == (case.size or (None, None))
        assert row.cid == case.cid
    else:
        assert (row.status, row.error_kind) == ("failed", case.kind), row.error
        assert row.error
        assert row.retryable is False
        assert (row.image_key, row.sha256, row.mime, row.bytes, row.cid) == (None,) * 5
    if case.keeps_metadata:
        assert case.metadata is not None
        assert row.metadata_key is not None
        assert row.metadata_sha256 == sha(case.metadata)
        assert store.read_blob(row.metadata_key) == case.metadata
        assert row.metadata_cid == case.metadata_cid
    else:
        assert (row.metadata_key, row.metadata_sha256, row.metadata_cid) == (None, None, None)


def test_quirks_shard_goes_on(quirks: Quirks) -> None:
    cases, result = quirks.cases, quirks.result
    assert [c.name for c in cases.values()] == CASE_NAMES
    not_minted = quirks.rows[len(cases) + 1]
    assert (not_minted.status, not_minted.error_kind, not_minted.token_uri) == (
        "failed",
        "not_minted",
        None,
    )
    expected_failures = Counter(c.kind for c in cases.values() if c.kind) + Counter(not_minted=1)
    assert result.tokens == len(cases) + 1 == len(quirks.rows)
    assert result.ok == sum(1 for c in cases.values() if c.kind is None)
    assert result.failed == expected_failures
    assert result.skipped == 0
    assert result.rpc_round_trips == 1
    assert all(r.done for r in quirks.rows.values())
    ok = [r for r in quirks.rows.values() if r.status == "ok"]
    assert result.bytes == sum(r.bytes or 0 for r in ok)


def test_quirks_requests_and_blocked_hosts(quirks: Quirks) -> None:
    """Exactly the expected requests went out; nothing reached the non-allowlisted server."""
    assert sum(quirks.outsider.hits.values()) == 0
    ipfs = sum(c.ipfs_requests for c in quirks.cases.values())
    assert quirks.gateway.count() == ipfs
    assert quirks.result.http_requests == ipfs + sum(quirks.origin_hits.values())
    hits = quirks.origin_hits
    assert hits["/q/redirect"] == 1  # the redirect is followed no further
    assert hits["/q/img/missing.png"] == 1  # 404 is final: no retry
    assert hits["/q/img/unrevealed.png"] == 1  # one download for every token naming it
    assert all(n == 1 for n in hits.values()), hits


def test_quirks_blobs_are_content_addressed(quirks: Quirks) -> None:
    """S3 holds exactly the objects the manifest names, one copy per distinct content."""
    rows = quirks.rows.values()
    refs = {k for r in rows for k in (r.metadata_key, r.image_key) if k}
    assert set(stored_objects(quirks.store)) == {object_of(k) for k in refs}
    digests = {d for r in rows for d in (r.metadata_sha256, r.sha256) if d}
    assert len(refs) == len(digests)
    unrevealed = {quirks.row(f"unrevealed_{n}")[1].image_key for n in range(UNREVEALED)}
    assert len(unrevealed) == 1
    same = {quirks.row(n)[1].image_key for n in ("ipfs_cid_path", "ipfs_same_image")}
    assert len(same) == 1
    expected_new = sum(size for _, size, _ in stored_objects(quirks.store).values())
    assert quirks.result.new_bytes == expected_new


def test_quirks_rerun_fetches_nothing(quirks: Quirks) -> None:
    before = stored_objects(quirks.store)
    gateway_before = quirks.gateway.count()
    again = ingest_block(quirks.spec, quirks.settings)
    assert (again.http_requests, again.rpc_round_trips, again.new_bytes) == (0, 0, 0)
    assert again.skipped == again.tokens == len(quirks.rows)
    assert (again.ok, again.failed) == (quirks.result.ok, quirks.result.failed)
    assert quirks.gateway.count() == gateway_before
    assert sum(quirks.outsider.hits.values()) == 0
    assert stored_objects(quirks.store) == before


def test_lying_gateway(quirks: Quirks, request: pytest.FixtureRequest) -> None:
    """A gateway serving tampered blocks costs a retry elsewhere, never bad data."""
    services = quirks.services
    ipfs_ids = [i for i, c in quirks.cases.items() if c.ipfs_requests][:5]
    spec = BlockSpec("Quirks", quirks.address, ipfs_ids[0], ipfs_ids[-1] + 1)
    liar = GatewayProxy(services.gateway, tamper=True).start()
    try:
        base = quirks.settings.replace(allow_hosts=(*quirks.settings.allow_hosts, liar.host_port))
        first = base.replace(
            s3_prefix=prefix_for(request) + "liar-first/",
            ipfs_gateways=(liar.url, services.gateway),
        )
        result = ingest_block(spec, first)
        assert result.ok == len(ipfs_ids), result.failed
        # Asked first, until its third lie benches it behind the honest gateway.
        assert FAILS_TO_BENCH <= liar.count() < 2 * len(ipfs_ids)
        store = ObjectStore(first)
        for token_id, row in read_manifest(store, spec).items():
            case = quirks.cases[token_id]
            assert row.sha256 == sha(case.image or b"")
            assert store.read_blob(row.image_key or "") == case.image
            assert row.cid == case.cid

        alone = base.replace(
            s3_prefix=prefix_for(request) + "liar-alone/", ipfs_gateways=(liar.url,)
        )
        result = ingest_block(spec, alone)
        assert result.failed == Counter({"cid_mismatch": len(ipfs_ids)})
        store = ObjectStore(alone)
        for row in read_manifest(store, spec).values():
            assert (row.status, row.error_kind, row.metadata_key) == (
                "failed",
                "cid_mismatch",
                None,
            )
        assert stored_objects(store) == {}
    finally:
        liar.stop()


# ----------------------------------------------------------------- demo collections


@functools.cache
def moonbirds_archive() -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Archived (images, metadata) of the ids the services deployed."""
    images: dict[int, bytes] = {}
    metadata: dict[int, bytes] = {}
    with tarfile.open(MOONBIRDS_ARCHIVE, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != "moonbirds" or not member.isfile():
                continue
            stem, _, _ = parts[2].partition(".")
            if not stem.isdigit() or int(stem) >= MOONBIRDS:
                continue
            f = tar.extractfile(member)
            assert f is not None
            (images if parts[1] == "images" else metadata)[int(stem)] = f.read()
    return images, metadata


def test_moonbirds_in_three_steps_then_rerun(services: Services, settings: Settings) -> None:
    proxy = GatewayProxy(services.gateway).start()
    try:
        settings = settings.replace(
            ipfs_gateways=(proxy.url,), allow_hosts=(*settings.allow_hosts, proxy.host_port)
        )
        store = ObjectStore(settings)
        specs = plan_blocks("Moonbirds", services.moonbirds_address, range(MOONBIRDS), 100)
        assert [(s.first, s.end, s.step) for s in specs] == [(0, MOONBIRDS, 100)]  # one block
        results = [ingest_block(spec, settings) for spec in specs]
        for r in results:
            assert (r.tokens, r.ok, r.failed, r.skipped) == (MOONBIRDS, MOONBIRDS, Counter(), 0)
            assert (r.http_requests, r.rpc_round_trips) == (2 * MOONBIRDS, 3)  # 3 steps of 100
        assert proxy.count() == 2 * MOONBIRDS  # one metadata and one image CAR per token

        manifests = store.list_keys(store.key("manifests") + "/")
        assert sorted(manifests) == sorted(manifest_key(store, s) for s in specs)
        rows = {i: r for s in specs for i, r in read_manifest(store, s).items()}
        assert sorted(rows) == list(range(MOONBIRDS))

        images, metadata = moonbirds_archive()
        blobs = read_blobs(
            store, {k for r in rows.values() for k in (r.image_key, r.metadata_key) if k}
        )
        images_cid = services.moonbirds.images_cid
        for i, row in rows.items():
            assert row.status == "ok", row.error
            assert row.token_uri == f"ipfs://{services.moonbirds.metadata_cid}/{i}"
            assert (row.mime, row.bytes, row.width, row.height) == (
                "image/png",
                len(images[i]),
                42,
                42,
            )
            assert blobs[row.image_key or ""] == images[i]
            assert row.sha256 == sha(images[i])
            assert row.cid == file_cid(images[i])
            assert row.image_uri == f"ipfs://{images_cid}/{i}.png"
            stored_meta = json.loads(blobs[row.metadata_key or ""])
            original = json.loads(metadata[i])
            assert stored_meta["image"] == f"ipfs://{images_cid}/{i}.png"
            assert {k: v for k, v in stored_meta.items() if k != "image"} == {
                k: v for k, v in original.items() if k != "image"
            }
        assert sum(r.new_bytes for r in results) == sum(len(b) for b in blobs.values())

        blobs_before = stored_objects(store)
        manifest_bytes = {k: store.get(k) for k in manifests}
        again = [ingest_block(spec, settings) for spec in specs]
        for r in again:
            assert (r.http_requests, r.rpc_round_trips, r.new_bytes) == (0, 0, 0)
            assert (r.tokens, r.ok, r.skipped) == (MOONBIRDS, MOONBIRDS, MOONBIRDS)
        assert proxy.count() == 2 * MOONBIRDS  # the gateway was asked nothing more
        assert stored_objects(store) == blobs_before  # not one blob written again
        assert {k: store.get(k) for k in manifests} == manifest_bytes
    finally:
        proxy.stop()


def test_loot_on_chain_svgs(services: Services, settings: Settings) -> None:
    store = ObjectStore(settings)
    spec = BlockSpec("Loot", services.loot_address, 1, len(services.loot_uris) + 1)
    result = ingest_block(spec, settings)
    assert (result.tokens, result.ok, result.failed) == (len(services.loot_uris), 50, Counter())
    assert (result.http_requests, result.rpc_round_trips) == (0, 1)
    rows = read_manifest(store, spec)
    for token_id, uri in enumerate(services.loot_uris, 1):
        row = rows[token_id]
        assert uri.startswith("data:application/json;base64,")
        meta = base64.b64decode(uri.partition(",")[2])
        image_uri = json.loads(meta)["image"]
        assert image_uri.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(image_uri.partition(",")[2])
        assert row.status == "ok", row.error
        assert row.token_uri == uri
        assert (row.mime, row.width, row.height, row.cid) == ("image/svg+xml", None, None, None)
        assert row.sha256 == sha(svg)
        assert store.read_blob(row.image_key or "") == svg
        assert row.metadata_sha256 == sha(meta)
        assert store.read_blob(row.metadata_key or "") == meta
    again = ingest_block(spec, settings)
    assert (again.http_requests, again.rpc_round_trips, again.skipped) == (0, 0, 50)


# ------------------------------------------------------------------- more edge cases


def test_retryable_failure_is_retried_by_the_next_run(
    services: Services, origin: Origin, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """A 503 is retried max_retries times, kept retryable, and fetched again on a rerun."""
    base = "/" + prefix_for(request)
    svg = SVG_INLINE.encode()
    meta = jbytes({"name": "flaky", "image": "data:image/svg+xml;base64," + b64(svg)})
    origin.serve(base + "flaky.json", b"busy", "text/plain", status=503)
    good = "data:application/json;base64," + b64(jbytes({"name": "ok", "image_data": SVG_LOOT}))
    address = services.deploy_on_chain("Flaky", [good, origin.url + base + "flaky.json"])
    spec = BlockSpec("Flaky", address, 1, 3)
    store = ObjectStore(settings)

    first = ingest_block(spec, settings)
    assert (first.ok, first.failed) == (1, Counter(http_status_retryable=1))
    assert origin.hits_for(base + "flaky.json") == 1 + settings.max_retries
    row = read_manifest(store, spec)[2]
    assert (row.status, row.error_kind, row.retryable, row.done) == (
        "failed",
        "http_status_retryable",
        True,
        False,
    )

    origin.serve(base + "flaky.json", meta, "application/json")
    second = ingest_block(spec, settings)
    assert (second.ok, second.skipped, second.failed) == (2, 1, Counter())
    assert (second.http_requests, second.rpc_round_trips) == (1, 1)  # only the failed token
    row = read_manifest(store, spec)[2]
    assert (row.status, row.sha256, row.metadata_sha256) == ("ok", sha(svg), sha(meta))
    assert store.list_keys(store.key("manifests", address, "_parts") + "/") == []


def test_token_ids_beyond_64_bits(
    services: Services, origin: Origin, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """uint256 ids: ERC-1155 {id} substitution, decimal ids in the manifest."""
    base = "/" + prefix_for(request)
    first = 2**256 - 2
    for token_id in (first, first + 1):
        svg = f"<svg xmlns='http://www.w3.org/2000/svg'><text>{token_id}</text></svg>"
        doc = {"name": str(token_id), "image": "data:image/svg+xml;base64," + b64(svg)}
        origin.serve(f"{base}{token_id:064x}.json", jbytes(doc), "application/json")
    uri = origin.url + base + "{id}.json"
    address = services.deploy_on_chain("Big", [uri, uri], first_id=first)
    spec = BlockSpec("Big", address, first, first + 2)
    result = ingest_block(spec, settings)
    assert (result.ok, result.failed) == (2, Counter())
    rows = read_manifest(ObjectStore(settings), spec)
    assert sorted(rows) == [first, first + 1]
    assert rows[first + 1].token_id == str(2**256 - 1)
    assert origin.hits_for(base + "f" * 64 + ".json") == 1


def test_inline_svg_with_doctype_or_comment(services: Services, settings: Settings) -> None:
    svgs = [
        '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
        '<svg xmlns="http://www.w3.org/2000/svg"><rect width="1" height="1"/></svg>',
        '<!-- Generator: a hand --><svg xmlns="http://www.w3.org/2000/svg"><g/></svg>',
    ]
    uris = ["data:application/json," + quote(json.dumps({"image_data": s})) for s in svgs]
    address = services.deploy_on_chain("InlineSvg", uris)
    spec = BlockSpec("InlineSvg", address, 1, 1 + len(uris))
    ingest_block(spec, settings)
    rows = read_manifest(ObjectStore(settings), spec)
    for token_id, svg in enumerate(svgs, 1):
        row = rows[token_id]
        assert (row.status, row.error_kind) == ("ok", None), row.error
        assert (row.mime, row.sha256) == ("image/svg+xml", sha(svg.encode()))


def test_non_utf8_token_uri_fails_for_good(services: Services, settings: Settings) -> None:
    good = "data:application/json," + quote(json.dumps({"image_data": SVG_INLINE}))
    address = services.deploy_on_chain("Latin1", [b"ipfs://caf\xe9/1.json", good])
    spec = BlockSpec("Latin1", address, 1, 3)
    first = ingest_block(spec, settings)
    assert first.ok == 1
    row = read_manifest(ObjectStore(settings), spec)[1]
    assert row.status == "failed"
    assert (row.error_kind, row.retryable) == ("bad_uri", False), (row.error_kind, row.error)
    again = ingest_block(spec, settings)
    assert (again.rpc_round_trips, again.skipped) == (0, 2)
