"""WebDataset shards from real Moonbirds PNGs and Loot SVGs stored in the real S3 (SeaweedFS)."""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
import webdataset as wds
from PIL import Image

from infra.demo_chain import read_loot_uris
from tasks.core.content import parse_metadata
from tasks.core.folders import open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export.items import ExportItem, safe_names
from tasks.export.webdataset import (
    Holdout,
    ShardOptions,
    ShardResult,
    order_key,
    plan_shards,
    read_holdout,
    sample_key,
    write_index,
    write_shard,
)
from tasks.ingest.uris import DataLocation, resolve_uri
from tests.support.stack import LOOT_ARCHIVE, MOONBIRDS_ARCHIVE

MOONBIRDS = ("Moonbirds", "0x23581767a106ae21c074b2276d25e5c3e136a68b")
LOOT = ("Loot (for Adventurers)", "0xff9c1b15b16263c61d017ee9f65c50e4ae0113d7")
FOLDERS = safe_names([MOONBIRDS, LOOT])
SEED = "nft1000"
_MEMBER = re.compile(r"moonbirds/(images|metadata)/(\d+)\.(?:png|json)")


@functools.cache
def _moonbirds_archive() -> dict[int, tuple[bytes, dict[str, object]]]:
    """Every Moonbird's PNG and metadata, read once per test session (about 1 s)."""
    found: dict[str, dict[int, bytes]] = {"images": {}, "metadata": {}}
    with tarfile.open(MOONBIRDS_ARCHIVE, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.fullmatch(member.name)
            f = tar.extractfile(member) if match and member.isfile() else None
            if match and f is not None:
                found[match[1]][int(match[2])] = f.read()
    return {i: (png, json.loads(found["metadata"][i])) for i, png in found["images"].items()}


def moonbird_caption(token_id: int) -> str:
    meta = _moonbirds_archive()[token_id][1]
    traits = meta["attributes"]
    assert isinstance(traits, list)
    return f"Moonbirds {meta['name']}: " + ", ".join(
        f"{t['trait_type']} {t['value']}" for t in traits
    )


def _item(
    pair: tuple[str, str], token_id: int, split: str, key: str, mime: str, caption: str
) -> ExportItem:
    return ExportItem(
        collection=pair[0],
        contract=pair[1],
        token_id=str(token_id),
        split=split,
        in_mini=token_id % 2 == 0,
        metadata_key="",
        image_key=key,
        image_mime=mime,
        caption=caption,
        prompt=f"a picture of {caption}",
        folder=FOLDERS[pair],
    )


def moonbird_items(store: ObjectStore, ids: range, split: str) -> list[ExportItem]:
    """Items for real Moonbirds whose PNGs are stored as blobs, mixed by ``order_key``."""
    items = [
        _item(
            MOONBIRDS,
            i,
            split,
            store.put_blob(_moonbirds_archive()[i][0], "image/png").key,
            "image/png",
            moonbird_caption(i),
        )
        for i in ids
    ]
    return sorted(items, key=lambda it: order_key(SEED, it.contract, it.token_id))


def _loot_items(store: ObjectStore, settings: Settings, count: int) -> list[ExportItem]:
    items = []
    for token_id, uri in enumerate(read_loot_uris(LOOT_ARCHIVE, count), start=1):
        meta_location = resolve_uri(uri, token_id, settings)
        assert isinstance(meta_location, DataLocation)
        meta = parse_metadata(meta_location.data)
        image = resolve_uri(meta["image"], token_id, settings, max_data_bytes=1 << 20)
        assert isinstance(image, DataLocation) and image.mime == "image/svg+xml"
        key = store.put_blob(image.data, image.mime).key
        items.append(_item(LOOT, token_id, "train", key, image.mime, str(meta["name"])))
    return items


SVG = "image/svg+xml"
_NESTED_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
    + b"<g>" * 300
    + b'<rect width="5" height="5"/>'
    + b"</g>" * 300
    + b"</svg>"
)


@pytest.fixture
def items(store: ObjectStore, settings: Settings) -> list[ExportItem]:
    """30 Moonbirds, 4 Loot bags and 4 bad tokens, in mixed order: 38 items."""
    good = moonbird_items(store, range(30), "train") + _loot_items(store, settings, 4)
    truncated = _moonbirds_archive()[30][0][:60]
    banner = io.BytesIO()
    Image.new("RGB", (400, 20), "red").save(banner, "PNG")
    bad = [
        _item(MOONBIRDS, 30, "train", store.put_blob(truncated, "image/png").key, "image/png", "x"),
        _item(
            MOONBIRDS,
            31,
            "train",
            store.put_blob(banner.getvalue(), "image/png").key,
            "image/png",
            "y",
        ),
        _item(MOONBIRDS, 32, "train", store.blob_key("0" * 64), "image/png", "z"),
        # 300 nested groups crashed the renderer when it ran in-process.
        _item(MOONBIRDS, 33, "train", store.put_blob(_NESTED_SVG, SVG).key, SVG, "w"),
    ]
    return sorted(good + bad, key=lambda it: order_key(SEED, it.contract, it.token_id))


def export(
    items: list[ExportItem],
    url: str,
    settings: Settings,
    per_shard: int = 16,
    options: ShardOptions | None = None,
) -> tuple[list[ShardResult], dict[str, object]]:
    """What a flow does: plan, one write_shard per shard, then the index."""
    results = [
        write_shard(plan, url, settings, options)
        for split in sorted({i.split for i in items})
        for plan in plan_shards(split, (i for i in items if i.split == split), per_shard)
    ]
    return results, write_index(url, settings, results, options)


def _tar_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            assert (m.mtime, m.uid, m.gid, m.mode) == (0, 0, 0, 0o644)
            out.append((m.name, f.read()))
        return out


def test_plan_shards_cuts_lazily_in_the_given_order() -> None:
    made = (_item(MOONBIRDS, i, "train", f"k{i}", "image/png", "c") for i in itertools.count())
    first, second = itertools.islice(plan_shards("train", made, 1000), 2)
    assert (first.name, second.name) == ("train/shard-000000.tar", "train/shard-000001.tar")
    assert [i.token_id for i in first.items + second.items] == [str(i) for i in range(2000)]

    items = [_item(MOONBIRDS, i, "test", f"k{i}", "image/png", "c") for i in range(2500)]
    plans = list(plan_shards("test", reversed(items)))
    assert [(p.index, len(p.items)) for p in plans] == [(0, 1000), (1, 1000), (2, 500)]
    assert plans[2].items[-1] is items[0]
    assert list(plan_shards("test", [])) == []

    with pytest.raises(ValueError, match="split 'train', not 'test'"):
        list(plan_shards("test", [_item(MOONBIRDS, 1, "train", "k", "image/png", "c")]))
    dotted = replace(items[0], folder="Moon.birds")
    with pytest.raises(ValueError, match="WebDataset splits at dots"):
        list(plan_shards("test", [dotted]))
    with pytest.raises(ValueError, match="at least 1"):
        list(plan_shards("test", items, 0))


def test_order_key_is_what_duckdb_sha256_gives() -> None:
    con = duckdb.connect()
    try:
        (found,) = con.execute(
            "SELECT sha256(? || '/' || ? || '/' || ?)", [SEED, LOOT[1], "7"]
        ).fetchone() or ("",)
    finally:
        con.close()
    assert found == order_key(SEED, LOOT[1], "7")


def test_export_shards_locally(items: list[ExportItem], settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    results, index = export(items, str(out), settings)

    assert [(r.name, r.skipped) for r in results] == [
        ("train/shard-000000.tar", False),
        ("train/shard-000001.tar", False),
        ("train/shard-000002.tar", False),
    ]
    failures = sorted((f for r in results for f in r.failures), key=lambda f: f.token_id)
    assert [(f.token_id, f.kind) for f in failures] == [
        ("30", "bad_image"),
        ("31", "bad_image"),
        ("32", "unexpected"),
        ("33", "bad_svg"),
    ]
    assert "aspect ratio of 400x20" in failures[1].message
    assert "not in the store" in failures[2].message
    by_shard = {r.name.split("/")[1]: r.samples for r in results}
    assert sum(by_shard.values()) == 34
    bad_ids = {"30", "31", "32", "33"}  # all Moonbirds; Loot ids are 1..4
    expected_counts = [
        sum(i.token_id not in bad_ids for i in items[k : k + 16]) for k in (0, 16, 32)
    ]
    assert list(by_shard.values()) == expected_counts
    assert json.loads((out / "train" / "sizes.json").read_bytes()) == by_shard

    written = Counter(i.collection for i in items if i.token_id not in bad_ids)
    assert index["splits"] == {
        "train": {
            "shards": [r.name for r in results],
            "samples": 34,
            "samples_by_collection": dict(sorted(written.items())),
            "failed": 4,
            "failures_by_kind": {"bad_image": 2, "bad_svg": 1, "unexpected": 1},
            "train_data": f"{out}/train/shard-{{000000..000002}}.tar",
        }
    }
    assert json.loads((out / "shards.json").read_bytes()) == index
    assert read_holdout(f"{out}/train", settings) is None  # no draw: nothing recorded

    # An export with a holdout records its draw, where training reads it back.
    drawn = write_index(str(out), settings, results, None, Holdout(per_collection=3, seed=7))
    assert drawn["holdout"] == {"per_collection": 3, "seed": 7}
    assert read_holdout(f"{out}/train/", settings) == Holdout(3, 7)
    assert read_holdout(f"{tmp_path}/elsewhere/train", settings) is None

    # Members: three per sample, grouped by key, in the planned (mixed) order.
    by_key = {sample_key(i): i for i in items}
    good = [sample_key(i) for i in items if i.token_id not in bad_ids]
    seen_keys = []
    for r in results:
        members = _tar_members((out / r.name).read_bytes())
        assert len(members) == 3 * r.samples
        for (j, jdata), (p, pdata), (t, tdata) in zip(*[iter(members)] * 3, strict=True):
            key = j.removesuffix(".json")
            assert (j, p, t) == (f"{key}.json", f"{key}.png", f"{key}.txt")
            item = by_key[key]
            seen_keys.append(key)
            assert tdata.decode("utf-8") == item.caption
            record = json.loads(jdata)
            assert (record["collection"], record["contract"], record["token_id"]) == (
                item.collection,
                item.contract,
                item.token_id,
            )
            assert (record["split"], record["caption"], record["prompt"]) == (
                "train",
                item.caption,
                item.prompt,
            )
            with Image.open(io.BytesIO(pdata)) as im:
                assert im.format == "PNG" and im.size == (256, 256)
                assert (record["width"], record["height"]) == (256, 256)
            if item.contract == MOONBIRDS[1]:
                assert (record["source_width"], record["source_height"]) == (42, 42)
    assert seen_keys == good
    assert "Moonbirds_0" in seen_keys and "Loot_for_Adventurers_1" in seen_keys
    assert moonbird_caption(7) == by_key["Moonbirds_7"].caption

    # Read back the way training does: the brace pattern, decoded to PIL.
    dataset = wds.WebDataset(index["splits"]["train"]["train_data"], shardshuffle=False)
    samples = list(dataset.decode("pil"))
    assert [s["__key__"] for s in samples] == good
    for s in samples:
        assert s["png"].size == (256, 256)
        assert s["txt"] == by_key[s["__key__"]].caption
        assert s["json"]["key"] == s["__key__"]


def test_rerun_gives_identical_bytes_and_resume_skips(
    items: list[ExportItem], settings: Settings, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    results_a, _ = export(items, str(first), settings)
    results_b, _ = export(items, str(second), settings)
    assert results_a == results_b
    for r in results_a:
        assert (first / r.name).read_bytes() == (second / r.name).read_bytes()
    assert (first / "train/sizes.json").read_bytes() == (second / "train/sizes.json").read_bytes()

    # Resumed on the same folder: finished shards are skipped, failures still reported.
    shard1 = first / "train/shard-000001.tar"
    shard1.unlink()
    again, _ = export(items, str(first), settings)
    assert [r.skipped for r in again] == [True, False, True]
    assert [replace(r, skipped=False) for r in again] == results_a
    assert shard1.read_bytes() == (second / "train/shard-000001.tar").read_bytes()

    # Other options are another plan: nothing is skipped, JPEG members are written.
    jpg = ShardOptions(shortest_side=64, image_format="jpg")
    redone, index = export(items, str(first), settings, options=jpg)
    assert not any(r.skipped for r in redone)
    assert index["image_extension"] == "jpg"
    members = _tar_members((first / "train/shard-000000.tar").read_bytes())
    assert {name.rsplit(".", 1)[1] for name, _ in members} == {"jpg", "json", "txt"}
    samples = list(
        wds.WebDataset(str(first / "train/shard-000000.tar"), shardshuffle=False).decode("pil")
    )
    assert {s["jpg"].size for s in samples} == {(64, 64)}


def test_export_to_s3_matches_local(
    items: list[ExportItem], settings: Settings, tmp_path: Path
) -> None:
    local = tmp_path / "wds"
    results_local, _ = export(items, str(local), settings, per_shard=20)
    url = f"s3://{settings.s3_bucket}/{settings.s3_prefix}exports/wds"
    results_s3, index = export(items, url, settings, per_shard=20)
    assert results_s3 == results_local
    assert index["splits"]["train"]["train_data"] == f"{url}/train/shard-{{000000..000001}}.tar"

    folder = open_folder(url, settings)
    assert list(folder.walk()) == [
        "_done/train/shard-000000.json",
        "_done/train/shard-000001.json",
        "shards.json",
        "train/shard-000000.tar",
        "train/shard-000001.tar",
        "train/sizes.json",
    ]
    for r in results_s3:
        assert folder.get(r.name) == (local / r.name).read_bytes()
    assert json.loads(folder.get("train/sizes.json")) == {
        "shard-000000.tar": results_s3[0].samples,
        "shard-000001.tar": results_s3[1].samples,
    }
    assert sum(r.samples for r in results_s3) == 34
