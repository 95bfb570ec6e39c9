"""The demo's IPFS gateway: serves the blocks of local CAR files over HTTP.

The demo has no IPFS network, so this stands in for one: path gateway
responses (``/ipfs/<cid>/<path>`` -> file bytes) and trustless gateway
responses (``?format=car`` / ``?format=raw`` or the matching Accept header),
which the pipeline verifies block by block as it would with a public gateway.

    python -m infra.gateway --car-dir DIR --host 127.0.0.1 --port N
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiohttp import web

from tasks.ingest.ipfs import unixfs
from tasks.ingest.ipfs.car import read_car, write_car
from tasks.ingest.ipfs.cid import CID

CAR_TYPE = "application/vnd.ipld.car; version=1"
RAW_TYPE = "application/vnd.ipld.raw"
MAX_FILE_BYTES = 1 << 30
CACHE_ENTRIES = 100_000  # decoded nodes and resolved paths; the demo has ~40,000 of each
IMMUTABLE = "public, max-age=29030400, immutable"

log = logging.getLogger(__name__)


class BlockStore:
    """Blocks by multihash (a CIDv0 and its CIDv1 name the same block), with cached decoding."""

    def __init__(self, blocks: Mapping[CID, bytes]) -> None:
        self._blocks = {cid.multihash: block for cid, block in blocks.items()}
        # Content never changes, so caching decoded nodes and resolved paths is always valid.
        self.node = functools.lru_cache(maxsize=CACHE_ENTRIES)(self._decode)
        self.resolve = functools.lru_cache(maxsize=CACHE_ENTRIES)(self._resolve)

    def block(self, cid: CID) -> bytes:
        block = unixfs.inline_block(cid)
        if block is None:
            block = self._blocks.get(cid.multihash)
        if block is None:
            raise unixfs.PathNotFound(f"no block {cid}")
        return block

    def _decode(self, cid: CID) -> unixfs.Node:
        return unixfs.decode(cid, self.block(cid))

    def _resolve(self, root: CID, segments: tuple[str, ...]) -> tuple[CID, tuple[CID, ...]]:
        target, traversed = unixfs.resolve(self.node, root, segments)
        return target, tuple(traversed)

    def car(self, root: CID, segments: tuple[str, ...]) -> bytes:
        """Trustless response, dag-scope=entity: the path's blocks, then the whole target."""
        target, traversed = self.resolve(root, segments)
        cids = dict.fromkeys([*traversed, *unixfs.entity_cids(self.node, target)])
        return write_car([root], ((cid, self.block(cid)) for cid in cids))


def sniff(body: bytes) -> str:
    """A content type for the formats NFT metadata and images use."""
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if body.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    head = body[:1024].lstrip()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    if head[:1] in (b"{", b"["):
        return "application/json"
    return "application/octet-stream"


def _wanted_format(request: web.Request) -> str | None:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("car", "raw"):
            raise web.HTTPBadRequest(text=f"unsupported format {fmt!r}\n")
        return fmt
    accept = request.headers.get("Accept", "")
    if "application/vnd.ipld.car" in accept:
        return "car"
    if RAW_TYPE in accept:
        return "raw"
    return None


def make_app(blocks: Mapping[CID, bytes]) -> web.Application:
    """The gateway as an aiohttp application over these blocks (tests run it in-process)."""
    store = BlockStore(blocks)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ipfs(request: web.Request) -> web.Response:
        try:
            root = CID.parse(request.match_info["cid"])
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"invalid CID: {e}\n") from None
        segments = tuple(unixfs.split_path(request.match_info.get("path", "")))
        fmt = _wanted_format(request)
        try:
            if fmt == "car":
                body, ctype = store.car(root, segments), CAR_TYPE
            else:
                target, _ = store.resolve(root, segments)
                if fmt == "raw":
                    body, ctype = store.block(target), RAW_TYPE
                elif store.node(target).is_directory:
                    raise web.HTTPNotFound(text=f"{target} is a directory\n")
                else:
                    body = unixfs.read_file(store.node, target, MAX_FILE_BYTES)
                    ctype = sniff(body)
        except unixfs.PathNotFound as e:
            raise web.HTTPNotFound(text=f"{e}\n") from None
        except (unixfs.UnixFSError, unixfs.FileTooLarge) as e:
            log.warning("cannot serve %s: %s", request.path, e)
            raise web.HTTPInternalServerError(text=f"{e}\n") from None
        headers = {"Content-Type": ctype, "Cache-Control": IMMUTABLE, "Etag": f'"{root}"'}
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ipfs/{cid}", ipfs)
    app.router.add_get("/ipfs/{cid}/{path:.*}", ipfs)
    return app


def load_car_dir(car_dir: Path) -> dict[CID, bytes]:
    """Every block of every ``*.car`` in ``car_dir``, each checked against its CID."""
    blocks: dict[CID, bytes] = {}
    for path in sorted(car_dir.glob("*.car")):
        _, found = read_car(path.read_bytes())
        for cid, block in found.items():
            if not cid.digest_matches(block):
                raise ValueError(f"{path}: block does not match {cid}")
        blocks.update(found)
    return blocks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve local CAR files as an IPFS gateway.")
    parser.add_argument("--car-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    blocks = load_car_dir(args.car_dir)
    log.info("serving %d blocks from %s on %s:%d", len(blocks), args.car_dir, args.host, args.port)
    web.run_app(make_app(blocks), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
