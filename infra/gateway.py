"""The demo's IPFS gateway: serves the blocks of local CAR files over HTTP.

The demo has no IPFS network, so this stands in for one: path gateway
responses (``/ipfs/<cid>/<path>`` -> file bytes) and trustless gateway
responses (``?format=car`` / ``?format=raw`` or the matching Accept header),
which the pipeline verifies block by block as it would with a public gateway.

It can also misbehave, as public gateways do, so that clients can be tested
against it (``bench/faults.py``): answer a fraction of content requests with a
429 or 5xx storm, with or without Retry-After, or cut CAR responses short, for a
window that opens some seconds after its first content request. A request log
(one JSON line per content request) lets a bench count what was fetched. An added
latency holds every content answer that long, as a distant gateway would
(``bench/ingest.py`` compares clients at 0 and 50 ms); other requests wait in
parallel meanwhile.

    python -m infra.gateway --car-dir DIR --host 127.0.0.1 --port N
        [--fault-status 429 --fault-fraction 0.5 --fault-retry-after 1]
        [--truncate-fraction 0.1] [--fault-start-s 2 --fault-duration-s 10]
        [--request-log FILE] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


@dataclass(frozen=True)
class Faults:
    """Misbehaviour to put on for a window: a storm of error answers, CARs cut short."""

    status: int | None = None  # 429 or a 5xx, answered instead of content ...
    fraction: float = 0.0  # ... to this fraction of content requests, drawn at random
    retry_after: str | None = None  # sent as Retry-After with them; None: no header
    truncate_fraction: float = 0.0  # of CAR responses, cut to half their length
    start_s: float = 0.0  # the window opens this long after the first content request
    duration_s: float | None = None  # and stays open this long; None: until the gateway stops
    seed: int = 0

    def __post_init__(self) -> None:
        if self.status is not None and self.status != 429 and not 500 <= self.status < 600:
            raise ValueError(f"fault status must be 429 or 5xx, not {self.status}")
        for name in ("fraction", "truncate_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")


class _FaultDraw:
    """Decides, request by request, whether the window is open and which fault to put on."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._first: float | None = None

    def _open(self) -> bool:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        since = now - self._first - self.faults.start_s
        return since >= 0 and (self.faults.duration_s is None or since < self.faults.duration_s)

    def status(self) -> int | None:
        """The error status to answer this request with, if any."""
        f = self.faults
        if f.status is None or not self._open():
            return None
        return f.status if self._rng.random() < f.fraction else None

    def truncate(self) -> bool:
        """Whether to cut this CAR response short."""
        return self._open() and self._rng.random() < self.faults.truncate_fraction


class RequestLog:
    """One JSON line per content request (time, path, status, fault put on), appended."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, path: str, status: int, fault: str | None) -> None:
        line = {"t": time.time(), "path": path, "status": status, "fault": fault}
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()


def make_app(
    blocks: Mapping[CID, bytes],
    faults: Faults | None = None,
    request_log: RequestLog | None = None,
    latency_s: float = 0.0,
) -> web.Application:
    """The gateway as an aiohttp application over these blocks (tests run it in-process);
    every content answer is held `latency_s` first (health answers are not)."""
    if latency_s < 0:
        raise ValueError(f"latency must not be negative, not {latency_s}")
    store = BlockStore(blocks)
    draw = _FaultDraw(faults or Faults())

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ipfs(request: web.Request) -> web.Response:
        fault: str | None = None
        if latency_s:
            await asyncio.sleep(latency_s)
        try:
            if (status := draw.status()) is not None:
                fault = str(status)
                response = _fault_response(status, draw.faults.retry_after)
            else:
                body, headers = _content(store, request)
                if headers["Content-Type"] == CAR_TYPE and draw.truncate():
                    fault, body = "truncated", body[: len(body) // 2]
                response = web.Response(body=body, headers=headers)
        except web.HTTPException as e:
            if request_log is not None:
                request_log.write(request.path, e.status, fault)
            raise
        if request_log is not None:
            request_log.write(request.path, response.status, fault)
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ipfs/{cid}", ipfs)
    app.router.add_get("/ipfs/{cid}/{path:.*}", ipfs)
    return app


def _fault_response(status: int, retry_after: str | None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return web.Response(status=status, text=f"injected fault {status}\n", headers=headers)


def _content(store: BlockStore, request: web.Request) -> tuple[bytes, dict[str, str]]:
    """The body and headers the path and format ask for; HTTP errors raised."""
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
    # The CID as asked for names the content: no need to print it again (base58 is slow).
    etag = f'"{request.match_info["cid"]}"'
    return body, {"Content-Type": ctype, "Cache-Control": IMMUTABLE, "Etag": etag}


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
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="hold every content answer this long"
    )
    faults = parser.add_argument_group("faults (for testing clients)")
    faults.add_argument("--fault-status", type=int, help="429 or a 5xx")
    faults.add_argument("--fault-fraction", type=float, default=0.0)
    faults.add_argument("--fault-retry-after", help="Retry-After value; default: no header")
    faults.add_argument("--truncate-fraction", type=float, default=0.0)
    faults.add_argument("--fault-start-s", type=float, default=0.0)
    faults.add_argument("--fault-duration-s", type=float)
    faults.add_argument("--fault-seed", type=int, default=0)
    args = parser.parse_args(argv)
    plan = Faults(
        args.fault_status,
        args.fault_fraction,
        args.fault_retry_after,
        args.truncate_fraction,
        args.fault_start_s,
        args.fault_duration_s,
        args.fault_seed,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    blocks = load_car_dir(args.car_dir)
    log.info("serving %d blocks from %s on %s:%d", len(blocks), args.car_dir, args.host, args.port)
    if plan != Faults():
        log.info("faults: %s", plan)
    if args.latency_ms:
        log.info("added latency: %g ms per content request", args.latency_ms)
    out = None if args.request_log is None else args.request_log.open("a", encoding="utf-8")
    try:
        request_log = None if out is None else RequestLog(out)
        app = make_app(blocks, plan, request_log, latency_s=args.latency_ms / 1000)
        web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    finally:
        if out is not None:
            out.close()


if __name__ == "__main__":
    main()
