"""Bytes for a Location: inline data, a checked HTTP fetch, or verified IPFS content.

IPFS content is asked of each configured gateway in turn (healthiest first:
tasks.ingest.gateways) as a trustless CAR and verified block by block against the
token's CID, so a lying or broken gateway can only cost time, never corrupt the
dataset. A file under a directory already verified is asked for by its own CID; a
gateway that answers with the raw file instead of a CAR is believed only when
re-chunking the bytes gives that CID. That time is bounded: one
download, across every gateway, ends within ``url_deadline_s``, and each gateway
gets an even share of what is left when its turn comes, so a gateway that hangs
cannot use up the next one's time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from tasks.core.errors import ItemError
from tasks.ingest.fetch import SafeFetcher
from tasks.ingest.gateways import GatewayPool
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.verify import file_from_car, file_from_raw, resolve_from_cache
from tasks.ingest.uris import DataLocation, HttpLocation, IpfsLocation, Location

CAR_ACCEPT = "application/vnd.ipld.car;version=1;order=dfs;dups=n"
# A CAR carries the file plus DAG nodes and the path's directory blocks.
CAR_OVERHEAD = 0.1
CAR_OVERHEAD_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    cid: str | None  # the content's own CID when it came from IPFS


async def download(
    location: Location,
    fetcher: SafeFetcher,
    gateways: GatewayPool | Sequence[str],
    max_bytes: int,
) -> Downloaded:
    """Fetch a location's bytes within max_bytes, or raise ItemError. ``gateways``: a
    shard's pool (which remembers their health), or a plain list asked in order."""
    if isinstance(location, DataLocation):
        if len(location.data) > max_bytes:
            raise ItemError("too_large", f"data: URI holds {len(location.data)} bytes")
        return Downloaded(location.data, None)
    if isinstance(location, HttpLocation):
        result = await fetcher.get(location.url, max_bytes=max_bytes)
        return Downloaded(result.body, None)
    pool = gateways if isinstance(gateways, GatewayPool) else GatewayPool(gateways)
    deadline = asyncio.get_running_loop().time() + fetcher.url_deadline_s
    return await _download_ipfs(location, fetcher, pool, max_bytes, deadline)


async def _download_ipfs(
    location: IpfsLocation,
    fetcher: SafeFetcher,
    pool: GatewayPool,
    max_bytes: int,
    deadline: float,
) -> Downloaded:
    if not pool.gateways:
        raise ItemError("unsupported_uri", "no IPFS gateway is configured")
    try:
        root = CID.parse(location.cid)
    except ValueError as e:
        raise ItemError("bad_uri", f"not a CID: {location.cid[:80]}: {e}") from e
    segments = [unquote(s) for s in location.path.split("/") if s]
    path = "/".join(segments)
    # A file under a directory this process has verified is asked for by its own CID:
    # its CAR then holds the file alone, not the directory blocks above it again.
    own = resolve_from_cache(root, path)
    if own is not None:
        root, path, url_path = own, "", str(own)
    else:
        url_path = f"{location.cid}/{location.path}".rstrip("/")
    car_cap = max_bytes + int(max_bytes * CAR_OVERHEAD) + CAR_OVERHEAD_BYTES
    errors: list[ItemError] = []
    verified: list[tuple[CID, bytes]] = []

    def verify(body: bytes) -> None:
        try:
            verified.append(file_from_car(body, root, path, max_bytes))
        except ItemError as e:
            # A gateway that serves no CARs answers with the file itself: accepted when
            # re-chunking it proves the CID, which needs a file's own CID (no path).
            if e.kind != "bad_car" or e.verified or path:
                raise
            try:
                verified.append((root, file_from_raw(body, root, max_bytes)))
            except ItemError:
                raise e from None

    loop = asyncio.get_running_loop()
    gateways = pool.order()
    for n, gateway in enumerate(gateways):
        url = f"{gateway.rstrip('/')}/ipfs/{url_path}?format=car&dag-scope=entity"
        share = loop.time() + (deadline - loop.time()) / (len(gateways) - n)
        # A bad answer sends us on to the next gateway at once; the last one is asked
        # again within its retries (a CAR cut short heals on a second request).
        last = n == len(gateways) - 1
        try:
            got = await fetcher.get(
                url,
                max_bytes=car_cap,
                accept=CAR_ACCEPT,
                deadline=share,
                check=verify if last else None,
            )
            if not last:
                verify(got.body)
        except ItemError as e:
            if e.kind == "too_large" and e.verified:
                raise  # the content itself is too big: every gateway serves the same
            pool.failed(gateway, e)
            errors.append(e)  # this gateway failed or lied: try the next
            continue
        pool.succeeded(gateway)
        cid, data = verified[-1]
        return Downloaded(data, str(cid))
    # If any gateway failed for a passing reason, a later run may succeed.
    return_error = next((e for e in errors if e.retryable), errors[-1])
    raise return_error
