"""The demo's IPFS content: the Moonbirds images and metadata as real UnixFS folders in one CAR.

Moonbirds' own image URLs are dead, so the demo publishes the archived images
as an IPFS folder and points each token's metadata at ``ipfs://<folder>/<id>.png``,
the way collections pin their art. CIDs are the ones ``ipfs add -r`` gives, so
the pipeline sees realistic content (10,000 entries: both folders are HAMTs).
The result is cached beside the CAR so a restarted demo does not rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tasks.ingest.ipfs.car import write_car
from tasks.ingest.ipfs.importer import add_directory

CAR_NAME = "moonbirds.car"
INFO_NAME = "moonbirds.json"
_MEMBER = re.compile(r"moonbirds/(images|metadata)/(\d+)\.(?:png|json)")


@dataclass(frozen=True)
class MoonbirdsContent:
    images_cid: str
    metadata_cid: str
    count: int
    car_path: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_archive(archive: Path) -> tuple[dict[int, bytes], dict[int, bytes]]:
    found: dict[str, dict[int, bytes]] = {"images": {}, "metadata": {}}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.fullmatch(member.name)
            f = tar.extractfile(member) if match and member.isfile() else None
            if match and f is not None:
                found[match[1]][int(match[2])] = f.read()
    return found["images"], found["metadata"]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _cached(
    info_path: Path, car_path: Path, sha: str, limit: int | None
) -> MoonbirdsContent | None:
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("archive_sha256") != sha or info.get("limit") != limit or not car_path.exists():
        return None
    return MoonbirdsContent(info["images_cid"], info["metadata_cid"], info["count"], car_path)


def build_moonbirds(archive: Path, out_dir: Path, limit: int | None = None) -> MoonbirdsContent:
    """Build (or reuse) ``out_dir/moonbirds.car`` for the first ``limit`` token ids."""
    car_path = out_dir / CAR_NAME
    info_path = out_dir / INFO_NAME
    sha = _sha256(archive)
    cached = _cached(info_path, car_path, sha, limit)
    if cached is not None:
        return cached

    images, metadata = _read_archive(archive)
    if images.keys() != metadata.keys():
        raise ValueError(f"{archive}: image and metadata ids differ")
    ids = sorted(images)[:limit]
    images_cid, image_blocks = add_directory({f"{i}.png": images[i] for i in ids})
    documents = {}
    for i in ids:
        doc = json.loads(metadata[i])
        doc["image"] = f"ipfs://{images_cid}/{i}.png"
        documents[str(i)] = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    metadata_cid, metadata_blocks = add_directory(documents)

    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = [*metadata_blocks.items(), *image_blocks.items()]
    _write_atomic(car_path, write_car([metadata_cid, images_cid], blocks))
    content = MoonbirdsContent(str(images_cid), str(metadata_cid), len(ids), car_path)
    info = {
        "archive_sha256": sha,
        "limit": limit,
        "images_cid": content.images_cid,
        "metadata_cid": content.metadata_cid,
        "count": content.count,
    }
    _write_atomic(info_path, json.dumps(info, indent=2).encode())  # last: marks the CAR complete
    return content
