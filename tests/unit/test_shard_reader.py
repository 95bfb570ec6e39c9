"""Reading WebDataset shards that anyone with bucket access could have written."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.core.folders import LocalFolder
from tasks.core.settings import Settings
from tasks.train.batches import ShardBatches
from tasks.train.shards import open_shards, read_shard


def _png(colour: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (colour, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def _tar(members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return out.getvalue()


def _record(**extra: object) -> bytes:
    return json.dumps({"collection": "C", "contract": "0xc", "folder": "C", **extra}).encode()


def test_hostile_members_are_left_out_and_good_samples_kept(tmp_path: Path) -> None:
    shard = _tar(
        [
            ("good.png", _png(10)),
            ("good.txt", b"A picture of C"),
            ("good.json", _record(traits=[["Hat", "Red"], ["x"], [1, 2], "Eyes", ["Eyes", "Up"]])),
            ("notext.png", _png(20)),  # no caption: not a sample
            ("badtext.png", _png(30)),
            ("badtext.txt", b"\xff\xfe not utf-8"),
            ("list.png", _png(40)),
            ("list.txt", b"caption"),
            ("list.json", b"[1, 2]"),  # not an object: no record, still a sample
            ("../../escape.png", _png(50)),  # names are keys, never paths written to
            ("../../escape.txt", b"climbing"),
            ("big.png", b"x" * 5000),
            ("big.txt", b"too big"),
        ],
        links=("link.png", "link.txt"),
    )
    folder = LocalFolder(tmp_path)
    folder.put("shard-000000.tar", shard)
    samples = {s.key: s for s in read_shard(folder, "shard-000000.tar", max_member_bytes=4000)}
    assert sorted(samples) == ["escape", "good", "list"]
    assert samples["good"].traits == (("Hat", "Red"), ("Eyes", "Up"))
    assert samples["good"].group == "C"
    assert samples["list"].record == {} and samples["list"].traits == ()
    assert samples["escape"].caption == "climbing"


def test_a_corrupt_image_costs_its_sample_not_the_batch(tmp_path: Path) -> None:
    members = []
    for i in range(5):
        members += [(f"s{i}.png", _png(i) if i != 2 else b"\x89PNG broken"), (f"s{i}.txt", b"c")]
    folder = LocalFolder(tmp_path / "split")
    folder.put("shard-000000.tar", _tar(members))
    folder.put("sizes.json", json.dumps({"shard-000000.tar": 5}).encode())
    shards = open_shards(str(tmp_path / "split"), Settings())
    data = ShardBatches(
        shards,
        Settings(),
        lambda im: torch.from_numpy(np.asarray(im).copy()),
        lambda texts: torch.zeros(len(texts)),
        epoch=0,
        seed=0,
        batch_size=5,
        workers=1,
    )
    (batch,) = list(data)
    assert sorted(batch["keys"]) == ["s0", "s1", "s3", "s4"]
    assert batch["images"].shape == (4, 8, 8, 3)


@pytest.mark.parametrize(
    "sizes",
    [b"[]", b'{"../up.tar": 3}', b'{"shard.tar": "3"}', b'{"notes.txt": 1}'],
)
def test_a_malformed_sizes_file_is_refused(tmp_path: Path, sizes: bytes) -> None:
    LocalFolder(tmp_path).put("sizes.json", sizes)
    with pytest.raises(ValueError, match=r"sizes\.json"):
        open_shards(str(tmp_path), Settings())


def test_a_split_without_sizes_says_to_export_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nft1000/export"):
        open_shards(str(tmp_path), Settings())
