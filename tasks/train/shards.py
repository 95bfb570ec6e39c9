"""Read the WebDataset shards nft1000/export wrote (S3 or a folder), for training and embedding.

A split folder holds ``shard-NNNNNN.tar`` files and ``sizes.json`` (samples per
shard, which open_clip_train reads too). A sample is the tar members sharing a
key: the image (png or jpg), ``.txt`` (the caption) and ``.json`` (collection,
contract, token id, and the caption's traits). Shards may come from anyone
with write access to the bucket, so members are size-capped and images decoded
with the export's restricted decoder.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tasks.core.folders import Folder, open_folder
from tasks.core.json_bounded import loads_bounded
from tasks.core.paths import SIZES
from tasks.core.settings import Settings
from tasks.export import images

IMAGE_MIMES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_SHARD_BYTES = 8 * 1024 * 1024 * 1024
# A sizes.json lists shards; a sample record holds one token's caption and traits.
SIZES_BYTES = 16 * 1024 * 1024
RECORD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ShardSet:
    """One split's shards and how many samples each holds."""

    url: str
    sizes: dict[str, int]  # shard file name -> samples

    @property
    def samples(self) -> int:
        return sum(self.sizes.values())


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes
    image_mime: str
    caption: str
    record: dict[str, Any]

    @property
    def contract(self) -> str:
        return str(self.record.get("contract", ""))

    @property
    def collection(self) -> str:
        return str(self.record.get("collection", ""))

    @property
    def group(self) -> str:
        """The collection's export folder name: unique per collection, unlike its name."""
        return str(self.record.get("folder") or self.contract or self.collection)

    @property
    def token(self) -> tuple[str, str, str, str]:
        """(collection, contract, token id, split): what keys a token's rows in tables."""
        fields = ("collection", "contract", "token_id", "split")
        return tuple(str(self.record.get(f, "")) for f in fields)  # type: ignore[return-value]

    @property
    def traits(self) -> tuple[tuple[str, str], ...]:
        """The caption's (trait_type, value) pairs; malformed entries are ignored."""
        pairs = self.record.get("traits") or []
        return tuple(
            (p[0], p[1])
            for p in pairs
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
        )

    def decode(self) -> Image.Image:
        return images.decode(self.image, self.image_mime)


def open_shards(url: str, settings: Settings) -> ShardSet:
    """The shards of a split folder, as its ``sizes.json`` lists them."""
    folder = open_folder(url, settings)
    if not folder.exists(SIZES):
        raise ValueError(f"no {SIZES} under {url}: export the split with nft1000/export first")
    sizes = loads_bounded(folder.read(SIZES, SIZES_BYTES), max_bytes=SIZES_BYTES)
    if not isinstance(sizes, dict) or not all(
        isinstance(k, str) and k.endswith(".tar") and "/" not in k and isinstance(v, int)
        for k, v in sizes.items()
    ):
        raise ValueError(f"{url}/{SIZES} is not a map of shard names to sample counts")
    return ShardSet(folder.url, {k: v for k, v in sorted(sizes.items()) if v > 0})


def read_shard(
    folder: Folder, name: str, max_member_bytes: int = MAX_MEMBER_BYTES
) -> Iterator[Sample]:
    """The samples of one shard, in tar order; incomplete samples are left out, and
    so are members that are not regular files or exceed ``max_member_bytes``."""
    data = folder.read(name, MAX_SHARD_BYTES)
    if len(data) > MAX_SHARD_BYTES:
        raise ValueError(f"shard {name} is over {MAX_SHARD_BYTES} bytes")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        for member in tar:
            if not member.isfile() or member.size > max_member_bytes:
                continue
            base = member.name.rsplit("/", 1)[-1]
            key, dot, ext = base.partition(".")
            if not dot:
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            if key not in members:
                members[key] = {}
                order.append(key)
            members[key][ext.lower()] = extracted.read()
    for key in order:
        sample = _sample(key, members.pop(key))
        if sample is not None:
            yield sample


def _sample(key: str, parts: dict[str, bytes]) -> Sample | None:
    ext = next((e for e in IMAGE_MIMES if e in parts), None)
    if ext is None or "txt" not in parts:
        return None
    try:
        record = loads_bounded(parts["json"], max_bytes=RECORD_BYTES) if "json" in parts else {}
        text = parts["txt"].decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        record = {}
    return Sample(key, parts[ext], IMAGE_MIMES[ext], text, record)
