"""The NFT1000 folder layout: export real Moonbirds and Loot tokens, import them back.

Against the real S3 server (SeaweedFS) and real files: blobs are stored as ingest
stores them, exported to a local folder and to an s3:// folder, and the export is
imported into manifests again, hostile names and broken tokens included.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from PIL import Image

from tasks.core.content import inspect_image
from tasks.core.folders import open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export.items import ExportItem, safe_names
from tasks.export.layout_export import (
    LayoutExportResult,
    export_batch,
    token_paths,
    write_dashboard,
)
from tasks.export.layout_import import (
    ImportResult,
    import_batch,
    plan_import,
)
from tasks.ingest.blocks import BlockSpec, manifest_key
from tasks.ingest.manifest import ManifestRow, from_parquet
from tasks.ingest.registry import BUILTIN_REGISTRY
from tests.support.stack import Services, data_uri_bytes, noise_png, read_moonbirds

MOONBIRDS = "0x23581767a106ae21c074b2276d25e5c3e136a68b"  # in NFT1000's collections.json
LOOT = "0xff9c1b15b16263c61d017ee9f65c50e4ae0113d7"
BIRDS = 30  # Moonbirds ids 0..29
LOOT_IDS = (1, 2, 3)
CORRUPT_ID = "9999"  # a Moonbird whose stored image is a cut-off PNG


@dataclass(frozen=True)
class Stored:
    item: ExportItem
    metadata: bytes
    image: bytes


@pytest.fixture(scope="module")
def moonbirds() -> dict[int, tuple[bytes, bytes]]:
    """Real metadata JSON and PNG bytes of the first Moonbirds: id -> (metadata, image)."""
    return read_moonbirds(BIRDS)


def _store_tokens(
    store: ObjectStore, services: Services, moonbirds: dict[int, tuple[bytes, bytes]]
) -> list[Stored]:
    """Store the tokens' blobs as ingest would and make their export items."""
    folders = safe_names([("Moonbirds", MOONBIRDS), ("Loot (for Adventurers)", LOOT)])
    tokens: list[tuple[str, str, str, bytes, bytes]] = [
        ("Moonbirds", MOONBIRDS, str(i), meta, image) for i, (meta, image) in moonbirds.items()
    ]
    for i in LOOT_IDS:
        meta = data_uri_bytes(services.loot_uris[i - 1])
        svg = data_uri_bytes(json.loads(meta)["image"])
        tokens.append(("Loot (for Adventurers)", LOOT, str(i), meta, svg))
    meta0, png0 = moonbirds[0]
    tokens.append(("Moonbirds", MOONBIRDS, CORRUPT_ID, meta0, png0[:60]))
    stored = []
    for collection, contract, token_id, meta, image in tokens:
        mime = "image/png" if token_id == CORRUPT_ID else inspect_image(image).mime
        item = ExportItem(
            collection=collection,
            contract=contract,
            token_id=token_id,
            split="train",
            in_mini=False,
            metadata_key=store.put_blob(meta, "application/json").key,
            image_key=store.put_blob(image, mime).key,
            image_mime=mime,
            caption=f"{collection} #{token_id}, ünïcode ✓",
            prompt=f"a picture of {collection} #{token_id}",
            folder=folders[(collection, contract)],
        )
        stored.append(Stored(item, meta, image))
    return stored


def _export(stored: list[Stored], url: str, settings: Settings) -> LayoutExportResult:
    """Export Moonbirds and Loot as two batches (one per collection block), with dashboards."""
    result = LayoutExportResult()
    for folder in ("Moonbirds", "Loot_for_Adventurers"):
        batch = [s.item for s in stored if s.item.folder == folder]
        result.merge(export_batch(batch, url, settings))
    moon = json.dumps({"collection": "Moonbirds", "contract": MOONBIRDS}).encode()
    loot = json.dumps({"collection": "Loot (for Adventurers)", "contract": LOOT}).encode()
    assert write_dashboard(url, settings, "Moonbirds", moon)
    assert write_dashboard(url, settings, "Loot_for_Adventurers", loot)
    return result


def _expected_tree(stored: list[Stored]) -> set[str]:
    good = [s.item for s in stored if s.item.token_id != CORRUPT_ID]
    return {
        *(p for i in good for p in token_paths(i.folder, i.token_id)),
        "Moonbirds/metadata_dashboard.json",
        "Loot_for_Adventurers/metadata_dashboard.json",
    }


def _s3_stamps(store: ObjectStore, prefix: str) -> dict[str, tuple[str, object]]:
    """Key -> (ETag, LastModified) of every object under a prefix."""
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=prefix
    )
    return {o["Key"]: (o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", [])}


def test_export_writes_the_nft1000_layout_locally_and_to_s3(
    services: Services,
    settings: Settings,
    store: ObjectStore,
    moonbirds: dict[int, tuple[bytes, bytes]],
    tmp_path: Path,
) -> None:
    stored = _store_tokens(store, services, moonbirds)
    local = tmp_path / "export"
    s3_prefix = f"{settings.s3_prefix}export"
    for url in (str(local), f"s3://{settings.s3_bucket}/{s3_prefix}"):
        result = _export(stored, url, settings)
        assert (result.written, result.skipped_existing) == (BIRDS + len(LOOT_IDS), 0)
        assert [(f.folder, f.token_id, f.kind) for f in result.failed] == [
            ("Moonbirds", CORRUPT_ID, "bad_image")
        ]
        folder = open_folder(url, settings)
        assert set(folder.walk()) == _expected_tree(stored)
        for s in stored[:-1]:
            meta, caption, prompt, image = token_paths(s.item.folder, s.item.token_id)
            assert folder.get(meta) == s.metadata  # original bytes, unchanged
            assert folder.get(caption) == s.item.caption.encode()  # no trailing newline
            assert folder.get(prompt) == s.item.prompt.encode()
            if s.item.image_mime == "image/png":
                assert folder.get(image) == s.image
            else:  # Loot's SVG, rasterised
                with Image.open(io.BytesIO(folder.get(image)), formats=["PNG"]) as im:
                    assert im.format == "PNG"
                    assert im.size == (1024, 1024)
                    assert len(im.getcolors(4096) or ()) > 1  # text was drawn

    # Reruns write nothing: same counts, untouched files and objects.
    mtimes = {p: p.stat().st_mtime_ns for p in local.rglob("*")}
    stamps = _s3_stamps(store, s3_prefix)
    for url in (str(local), f"s3://{settings.s3_bucket}/{s3_prefix}"):
        again = _export_again(stored, url, settings)
        assert (again.written, again.bytes_written) == (0, 0)
        assert again.skipped_existing == BIRDS + len(LOOT_IDS)
        assert [f.kind for f in again.failed] == ["bad_image"]
    assert {p: p.stat().st_mtime_ns for p in local.rglob("*")} == mtimes
    assert _s3_stamps(store, s3_prefix) == stamps

    # A token left incomplete by a killed batch (its image missing) is written again.
    (local / "Moonbirds/images/Moonbirds_7.png").unlink()
    resumed = export_batch([s.item for s in stored], str(local), settings)
    assert (resumed.written, resumed.skipped_existing) == (1, BIRDS + len(LOOT_IDS) - 1)
    assert (local / "Moonbirds/images/Moonbirds_7.png").read_bytes() == moonbirds[7][1]


def _export_again(stored: list[Stored], url: str, settings: Settings) -> LayoutExportResult:
    result = export_batch([s.item for s in stored], url, settings)
    for name in ("Moonbirds", "Loot_for_Adventurers"):
        data = open_folder(url, settings).get(f"{name}/metadata_dashboard.json")
        assert not write_dashboard(url, settings, name, data)
    return result


def test_export_records_missing_blobs_and_unsafe_names(
    settings: Settings,
    store: ObjectStore,
    moonbirds: dict[int, tuple[bytes, bytes]],
    tmp_path: Path,
) -> None:
    meta, png = moonbirds[0]
    good = ExportItem(
        "Moonbirds", MOONBIRDS, "0", "train", False,
        store.put_blob(meta, "application/json").key, store.put_blob(png, "image/png").key,
        "image/png", "c", "p", "Moonbirds",
    )  # fmt: skip
    gone = store.blob_key(hashlib.sha256(b"never stored").hexdigest())
    items = [
        good,
        replace(good, token_id="1", image_key=gone),
        replace(good, token_id="../../x"),
        replace(good, folder=".."),
    ]
    result = export_batch(items, str(tmp_path), settings)
    assert result.written == 1
    assert [(f.token_id, f.kind) for f in result.failed] == [
        ("1", "missing_blob"),
        ("../../x", "bad_name"),
        ("0", "bad_name"),
    ]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*")) == sorted(
        token_paths("Moonbirds", "0")
    )


def _manifest(store: ObjectStore, contract: str, block: int) -> dict[str, ManifestRow]:
    data = store.get(manifest_key(store, BlockSpec("-", contract, block, block + 1000)))
    assert data is not None
    return {r.token_id: r for r in from_parquet(data)}


def _run(url: str, settings: Settings, registries: list[Path]) -> list[ImportResult]:
    plan = plan_import(url, settings, registries)
    return [import_batch(b, settings) for b in plan.batches]


def test_import_of_an_export_gives_the_stored_rows(
    services: Services,
    settings: Settings,
    store: ObjectStore,
    moonbirds: dict[int, tuple[bytes, bytes]],
    tmp_path: Path,
) -> None:
    stored = _store_tokens(store, services, moonbirds)
    root = tmp_path / "nft1000"
    _export(stored, str(root), settings)
    # Moonbirds' dashboard names no contract (the registry knows the folder name);
    # a collection nobody knows; broken tokens; names that fit no layout.
    (root / "Moonbirds/metadata_dashboard.json").write_text('{"collection": "Moonbirds"}')
    files = {
        "Mystery/metadata/Mystery_1.json": b"{}",
        "Moonbirds/metadata/Moonbirds_41.json": moonbirds[1][0],  # no image
        "Moonbirds/metadata/Moonbirds_42.json": b'{"name": "cut',
        "Moonbirds/images/Moonbirds_42.png": moonbirds[2][1],
        "Moonbirds/metadata/Moonbirds_43.json": moonbirds[3][0],
        "Moonbirds/images/Moonbirds_43.png": b"\x89PNG\r\n\x1a\nnot really",
        "Moonbirds/images/Moonbirds_44.png": moonbirds[4][1],  # no metadata
        "Moonbirds/metadata/Moonbirds_45.json": moonbirds[5][0],
        "Moonbirds/images/Moonbirds_45.png": noise_png(200, 200, 45),  # over the cap below
        "Moonbirds/metadata/Moonbirds_1000.json": moonbirds[6][0],  # a second block
        "Moonbirds/images/Moonbirds_1000.png": moonbirds[6][1],
        "Moonbirds/metadata/Moonbirds_46.json": moonbirds[7][0],
    }
    hostile = {
        "README.md": b"hello",
        "Moonbirds/images/Moonbirds_abc.png": b"x",
        "Moonbirds/images/Moonbirds_.png": b"x",
        "Moonbirds/images/Moonbirds_007.png": moonbirds[7][1],
        "Moonbirds/images/Moonbirds_-1.png": b"x",
        "Moonbirds/images/notes.txt": b"x",
        "Moonbirds/images/deep/Moonbirds_1.png": b"x",
        "Moonbirds/Moonbirds_3.json": b"{}",
        "Moonbirds/metadata/Other_5.json": b"{}",
        "Moonbirds/metadata/Moonbirds_5.exe": b"x",
    }
    for path, data in {**files, **hostile}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    secret = tmp_path / "outside.png"  # a link may not lead the import out of the folder
    secret.write_bytes(moonbirds[8][1])
    os.symlink(secret, root / "Moonbirds/images/Moonbirds_46.png")
    settings = settings.replace(max_image_bytes=100_000)

    plan = plan_import(str(root), settings, [BUILTIN_REGISTRY])
    assert [(e.path, e.reason) for e in plan.errors] == [("Mystery", "no_contract")]
    assert {n.path for n in plan.notes} == set(hostile)
    assert plan.notes_total == len(hostile)
    assert [(b.contract, b.block, len(b.tokens)) for b in plan.batches] == [
        (LOOT, 0, 3),
        (MOONBIRDS, 0, BIRDS + 6),
        (MOONBIRDS, 1000, 1),
    ]
    results = [import_batch(b, settings) for b in plan.batches]
    assert all(r.manifest_written for r in results)
    assert sum(r.ok for r in results) == BIRDS + len(LOOT_IDS) + 1

    birds = _manifest(store, MOONBIRDS, 0)
    for s in stored:
        item = s.item
        if item.token_id == CORRUPT_ID:
            continue
        row = (
            birds[item.token_id]
            if item.contract == MOONBIRDS
            else _manifest(store, LOOT, 0)[item.token_id]
        )
        assert (row.status, row.collection, row.metadata_key, row.token_uri, row.image_uri) == (
            "ok", item.collection, item.metadata_key, None, None
        )  # fmt: skip
        if item.contract == MOONBIRDS:
            assert (row.image_key, row.mime, row.width, row.height, row.bytes) == (
                item.image_key, "image/png", 42, 42, len(s.image)
            )  # fmt: skip
        else:
            png = (root / token_paths(item.folder, item.token_id)[3]).read_bytes()
            assert store.get(row.image_key or "") == png
            assert (row.mime, row.width, row.sha256) == (
                "image/png", 1024, hashlib.sha256(png).hexdigest()
            )  # fmt: skip
    failed = {t: (r.status, r.error_kind, r.retryable) for t, r in birds.items()}
    assert {t: f for t, f in failed.items() if f[0] != "ok"} == {
        "41": ("failed", "missing_image", False),
        "42": ("failed", "bad_json", False),
        "43": ("failed", "bad_image", False),
        "44": ("failed", "missing_metadata", False),
        "45": ("failed", "too_large", False),
        "46": ("failed", "unreadable_file", False),
    }
    assert birds["41"].metadata_key == stored[1].item.metadata_key  # kept, like ingest
    assert _manifest(store, MOONBIRDS, 1000)["1000"].image_key == stored[6].item.image_key

    # Re-importing writes nothing: no blob, no manifest.
    stamps = _s3_stamps(store, settings.s3_prefix)
    again = _run(str(root), settings, [BUILTIN_REGISTRY])
    assert [(r.new_blobs, r.manifest_written) for r in again] == [(0, False)] * 3
    assert _s3_stamps(store, settings.s3_prefix) == stamps


def test_import_from_s3(
    services: Services,
    settings: Settings,
    store: ObjectStore,
    moonbirds: dict[int, tuple[bytes, bytes]],
) -> None:
    stored = _store_tokens(store, services, moonbirds)
    prefix = f"{settings.s3_prefix}export"
    url = f"s3://{settings.s3_bucket}/{prefix}"
    _export(stored, url, settings)
    extra = {
        "a\nb": b"x",  # S3 keys may hold control characters
        "Moonbirds/images/Moonbirds_x.png": b"x",
        "Moonbirds/images/Moonbirds_50.png": b"",  # empty: no byte range to read
        "Moonbirds/metadata/Moonbirds_50.json": b"{}",
    }
    for key, body in extra.items():
        store.client.put_object(Bucket=store.bucket, Key=f"{prefix}/{key}", Body=body)
    plan = plan_import(url, settings)  # no registry: the dashboards name the contracts
    assert plan.errors == []
    assert [(n.path, n.reason) for n in plan.notes] == [
        ("Moonbirds/images/Moonbirds_x.png", "unexpected_file"),
        ("a\\nb", "unsafe_name"),
    ]
    blobs = len(store.list_keys(store.key("blobs") + "/"))
    results = [import_batch(b, settings) for b in plan.batches]
    assert [(r.contract, r.tokens, r.ok, dict(r.failed)) for r in results] == [
        (LOOT, 3, 3, {}),
        (MOONBIRDS, BIRDS + 1, BIRDS, {"bad_image": 1}),
    ]
    # Moonbirds' blobs were stored already; Loot's PNGs (rasterised SVGs) and the {} are new.
    assert [r.new_blobs for r in results] == [len(LOOT_IDS), 1]
    assert len(store.list_keys(store.key("blobs") + "/")) == blobs + len(LOOT_IDS) + 1
    rows = _manifest(store, MOONBIRDS, 0)
    assert {t: (rows[t].metadata_key, rows[t].image_key) for t in map(str, range(BIRDS))} == {
        s.item.token_id: (s.item.metadata_key, s.item.image_key) for s in stored[:BIRDS]
    }
    assert rows["50"].error == "image is empty"
