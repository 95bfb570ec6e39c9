"""Verifying paths through a collection-sized HAMT directory (10,000 entries), whole and
with only the blocks on the path."""

from __future__ import annotations

import pytest

from tasks.ingest.ipfs import dagpb
from tasks.ingest.ipfs.importer import add_bytes, add_directory
from tasks.ingest.ipfs.verify import file_from_car
from tests.support.ipfs import LIMIT, car_of, kind_of


@pytest.mark.parametrize("cid_version", [0, 1])
def test_paths_through_a_hamt(cid_version: int) -> None:
    tree = {f"{i}.png": f"bird {i}".encode() for i in range(10_000)}
    root, blocks = add_directory({"images": tree}, cid_version)
    car = car_of(root, blocks)
    for i in (0, 4321, 9999):
        assert file_from_car(car, root, f"images/{i}.png", LIMIT)[1] == f"bird {i}".encode()
    assert kind_of(car, root, "images/10000.png") == "bad_car"


def test_only_the_blocks_on_the_path_are_needed() -> None:
    tree = {f"{i}.png": f"bird {i}".encode() for i in range(10_000)}
    root, blocks = add_directory(tree)
    wanted, _ = add_bytes(b"bird 77")
    shards = {
        c: b
        for c, b in blocks.items()
        if dagpb.decode_unixfs(dagpb.decode_node(b).data or b"").type == dagpb.TYPE_HAMT_SHARD
    }
    partial = {c: b for c, b in blocks.items() if c in shards or c == wanted}
    assert file_from_car(car_of(root, partial), root, "77.png", 100)[1] == b"bird 77"
