"""What the session's services fixture yields, and names shared by the service tests."""

from __future__ import annotations

import base64
import io
import random
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from infra import stack
from infra.demo_chain import deploy_contract, rpc, send_transaction
from infra.demo_content import MoonbirdsContent
from tasks.core import paths
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.ingest.chain import encode_call
from tasks.ingest.ipfs.car import write_car
from tasks.ingest.ipfs.importer import add_directory
from tasks.ingest.packs import pack_key_of

MOONBIRDS_ARCHIVE = stack.MOONBIRDS_ARCHIVE
LOOT_ARCHIVE = stack.LOOT_ARCHIVE
MOONBIRDS = 300
LOOT = 50
AWS_KEY = stack.AWS_KEY  # weed takes these from its environment as its admin identity


@dataclass(frozen=True)
class Services:
    """The running stack: base settings (no prefix) and what was deployed."""

    settings: Settings
    home: Path
    rpc_url: str
    gateway: str  # http://127.0.0.1:PORT of the demo gateway
    artifacts: dict[str, Any]
    moonbirds: MoonbirdsContent
    moonbirds_address: str  # lowercase, ids 0..MOONBIRDS-1
    loot_address: str  # lowercase, ids 1..LOOT
    loot_uris: list[str]
    quirks_ipfs_cid: str  # a folder of oddly named files, served by the gateway
    quirks_ipfs_files: dict[str, bytes]

    def deploy_on_chain(self, name: str, uris: Sequence[str | bytes], first_id: int = 1) -> str:
        """Deploy a DemoOnChain collection whose token first_id + i has uris[i]; its address.

        A bytes URI is stored as is, valid UTF-8 or not (string and bytes share one ABI
        encoding, and Solidity does not check a string's encoding).
        """
        sender = str(rpc(self.rpc_url, "eth_accounts", [])[0])
        address = deploy_contract(
            self.rpc_url, sender, self.artifacts["DemoOnChain"], ["string", "string"], [name, name]
        )
        raw = [u if isinstance(u, bytes) else u.encode() for u in uris]
        data = encode_call(
            "mintWithURIs(address,uint256,string[])",
            ["address", "uint256", "bytes[]"],
            [sender, first_id, raw],
        )
        send_transaction(self.rpc_url, sender, data, to=address)
        return address.lower()


def prefix_for(request: pytest.FixtureRequest) -> str:
    """An S3 prefix of its own for the requesting test."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "-", request.node.nodeid.split("/")[-1]).strip("-")
    return f"{name}/"


def noise_png(width: int, height: int, seed: int) -> bytes:
    """An incompressible PNG: about 3 * width * height bytes."""
    pixels = random.Random(seed).randbytes(3 * width * height)
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buf, "PNG")
    return buf.getvalue()


QUIRKS_IMAGE_CAP = 400_000  # max_image_bytes of the quirks shard


def build_quirks_ipfs(car_dir: Path) -> tuple[str, dict[str, bytes]]:
    """An IPFS folder of images whose names need escaping, one multi-block file and one
    over the quirks image cap; written as a CAR for the gateway. Its CID and files."""
    files = {
        "my art.png": noise_png(4, 4, 1),
        "ünïcödé.png": noise_png(5, 5, 2),
        "what?#.png": noise_png(6, 6, 3),
        "100%.png": noise_png(7, 7, 4),
        "big.png": noise_png(320, 320, 5),  # over one 256 KiB chunk
        "huge.png": noise_png(400, 400, 6),  # over QUIRKS_IMAGE_CAP
    }
    assert 256 * 1024 < len(files["big.png"]) < QUIRKS_IMAGE_CAP < len(files["huge.png"])
    cid, blocks = add_directory(files)
    (car_dir / "quirks.car").write_bytes(write_car([cid], blocks.items()))
    return str(cid), files


_MOONBIRD_FILE = re.compile(r"moonbirds/(images|metadata)/(\d+)\.(?:png|json)")


def read_moonbirds(count: int) -> dict[int, tuple[bytes, bytes]]:
    """Real metadata JSON and PNG bytes of Moonbirds 0..count-1: id -> (metadata, image)."""
    found: dict[str, dict[int, bytes]] = {"images": {}, "metadata": {}}
    with tarfile.open(MOONBIRDS_ARCHIVE, "r:gz") as tar:
        for member in tar:
            match = _MOONBIRD_FILE.fullmatch(member.name)
            if match and int(match[2]) < count:
                data = tar.extractfile(member)
                assert data is not None
                found[match[1]][int(match[2])] = data.read()
    return {i: (found["metadata"][i], found["images"][i]) for i in range(count)}


def data_uri_bytes(uri: str) -> bytes:
    """The decoded payload of a base64 data: URI (Loot's on-chain JSON)."""
    return base64.b64decode(uri.split(",", 1)[1])


def stored_objects(store: ObjectStore) -> dict[str, tuple[str, int, Any]]:
    """Every object ingest stores bytes in (blobs alone and packs) under the store's
    prefix: key -> (ETag, size, LastModified)."""
    found: dict[str, tuple[str, int, Any]] = {}
    for folder in (paths.BLOBS, paths.PACKS):
        pages = store.client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=store.key(folder) + "/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                found[obj["Key"]] = (obj["ETag"], obj["Size"], obj["LastModified"])
    return found


def object_of(ref: str) -> str:
    """The object a blob reference lives in: its pack, or the key itself."""
    return pack_key_of(ref) or ref
