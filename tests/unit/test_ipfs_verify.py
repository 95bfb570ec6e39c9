"""Verifying gateway CARs: good content comes back byte for byte, bad content is refused."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest

from tasks.ingest.ipfs import dagpb, verify
from tasks.ingest.ipfs.car import read_car, write_car
from tasks.ingest.ipfs.cid import CID, DAG_PB, IDENTITY, RAW
from tasks.ingest.ipfs.dagpb import PBLink, UnixFSData
from tasks.ingest.ipfs.importer import CHUNK_SIZE, MAX_LINKS, Tree, add_bytes, add_directory
from tasks.ingest.ipfs.verify import file_from_car
from tests.support.ipfs import LIMIT, car_of, kind_of


def pb_block(links: list[PBLink], fs: UnixFSData) -> tuple[CID, bytes]:
    block = dagpb.encode_node(links, dagpb.encode_unixfs(fs))
    return CID.for_block(block, DAG_PB, 0), block


@pytest.mark.parametrize("cid_version", [0, 1])
@pytest.mark.parametrize(
    "size",
    [0, 1000, CHUNK_SIZE, 3 * CHUNK_SIZE - 1, (MAX_LINKS + 1) * CHUNK_SIZE + 1],
    ids=["empty", "small", "one-chunk", "three-chunks", "two-levels"],
)
def test_file_round_trip(size: int, cid_version: int) -> None:
    data = random.Random(size).randbytes(size)
    root, blocks = add_bytes(data, cid_version)
    assert file_from_car(car_of(root, blocks), root, "", LIMIT) == (root, data)


def test_car_round_trip_keeps_roots_and_blocks() -> None:
    root, blocks = add_directory({"a": b"1", "b": {"c": b"2"}})
    other, more = add_bytes(b"x" * 10, cid_version=1)
    roots, read = read_car(write_car([root, other], [*blocks.items(), *more.items()]))
    assert roots == [root, other]
    assert read == {**blocks, **more}


TREE: Tree = {
    "0.json": b'{"name":"#0"}',
    "images": {"0.png": b"\x89PNG...", "big.bin": bytes(3 * CHUNK_SIZE)},
}


@pytest.mark.parametrize("cid_version", [0, 1])
def test_paths_through_plain_directories(cid_version: int) -> None:
    root, blocks = add_directory(TREE, cid_version)
    car = car_of(root, blocks)
    cid, data = file_from_car(car, root, "/images/0.png", LIMIT)
    assert data == b"\x89PNG..."
    assert cid == add_bytes(data, cid_version)[0]
    assert file_from_car(car, root, "images//big.bin/", LIMIT)[1] == bytes(3 * CHUNK_SIZE)
    assert kind_of(car, root, "images/1.png") == "bad_car"  # no such entry
    assert kind_of(car, root, "0.json/x") == "bad_car"  # a file is not a directory
    assert kind_of(car, root, "images") == "bad_car"  # a directory is not a file


def test_tampered_block_is_a_cid_mismatch() -> None:
    data = random.Random(3).randbytes(3 * CHUNK_SIZE)
    root, blocks = add_bytes(data, cid_version=1)
    leaf = next(c for c in blocks if c.codec == RAW)
    tampered = dict(blocks)
    tampered[leaf] = b"\0" + blocks[leaf][1:]
    assert kind_of(car_of(root, tampered), root) == "cid_mismatch"
    tampered_root = {**blocks, root: blocks[root] + b"\0"}
    assert kind_of(car_of(root, tampered_root), root) == "cid_mismatch"


def test_missing_block_is_a_bad_car() -> None:
    root, blocks = add_bytes(bytes(range(256)) * 3000)
    leaf = next(c for c in blocks if c != root)
    assert kind_of(car_of(root, {c: b for c, b in blocks.items() if c != leaf}), root) == "bad_car"
    directory, dir_blocks = add_directory({"a": b"1"})
    assert kind_of(car_of(directory, dir_blocks), root) == "bad_car"  # the root is not in it


def test_blocks_labelled_with_another_cid_version_still_verify() -> None:
    root, blocks = add_directory({"a.png": b"png"})
    relabelled = {CID(1, c.codec, c.multihash): b for c, b in blocks.items()}
    assert file_from_car(car_of(root, relabelled), root, "a.png", 10)[1] == b"png"


def test_identity_cids_need_no_block() -> None:
    inline = CID(1, RAW, bytes([IDENTITY, 5]) + b"hello")
    root, block = pb_block([PBLink(inline, "hi.txt", 5)], UnixFSData(dagpb.TYPE_DIRECTORY))
    assert file_from_car(car_of(root, {root: block}), root, "hi.txt", 10) == (inline, b"hello")


@pytest.mark.parametrize(
    "car",
    [
        b"",
        b"\x00",
        b"garbage that is not a car at all",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # endless varint
        b"\x80\x80\x80\x80\x01" + b"\0" * 16,  # header length past the end
    ],
)
def test_garbage_is_a_bad_car(car: bytes) -> None:
    root, _ = add_bytes(b"x")
    assert kind_of(car, root) == "bad_car"


def test_truncated_and_mislabelled_cars_are_bad() -> None:
    root, blocks = add_bytes(random.Random(5).randbytes(2 * CHUNK_SIZE))
    car = car_of(root, blocks)
    for cut in (5, len(car) // 2, len(car) - 1):
        assert kind_of(car[:cut], root) == "bad_car"
    v2 = car.replace(b"gversion\x01", b"gversion\x02", 1)
    assert v2 != car
    assert kind_of(v2, root) == "bad_car"


def test_declared_size_over_the_limit_is_too_large_before_fetching() -> None:
    root, blocks = add_bytes(bytes(5 * CHUNK_SIZE))
    only_root = {root: blocks[root]}  # children absent: the declared size alone decides
    assert kind_of(car_of(root, only_root), root, max_bytes=4 * CHUNK_SIZE) == "too_large"
    assert file_from_car(car_of(root, blocks), root, "", 5 * CHUNK_SIZE)[1] == bytes(5 * CHUNK_SIZE)


def test_a_root_that_understates_its_size_is_caught() -> None:
    leaf, _ = add_bytes(bytes(CHUNK_SIZE))
    _, leaf_blocks = add_bytes(bytes(CHUNK_SIZE))
    links = [PBLink(leaf, "", len(leaf_blocks[leaf]))] * 4
    root, block = pb_block(links, UnixFSData(dagpb.TYPE_FILE, filesize=10, blocksizes=(1, 3, 3, 3)))
    car = car_of(root, {root: block, **leaf_blocks})
    # Each child must hold the size its parent gives it: caught at the first child.
    assert kind_of(car, root, max_bytes=CHUNK_SIZE) == "bad_car"
    assert kind_of(car, root, max_bytes=LIMIT) == "bad_car"


def test_a_dag_bomb_of_empty_nodes_is_refused() -> None:
    empty, empty_blocks = add_bytes(b"")
    links = [PBLink(empty, "", 6)] * 174
    inner, inner_block = pb_block(
        links, UnixFSData(dagpb.TYPE_FILE, filesize=0, blocksizes=(0,) * 174)
    )
    root, root_block = pb_block(
        [PBLink(inner, "", 0)] * 174, UnixFSData(dagpb.TYPE_FILE, filesize=0, blocksizes=(0,) * 174)
    )
    car = car_of(root, {root: root_block, inner: inner_block, **empty_blocks})
    assert kind_of(car, root) == "bad_car"


def test_a_hamt_of_the_wrong_kind_is_refused() -> None:
    file_cid, file_blocks = add_bytes(b"x")
    fs = UnixFSData(dagpb.TYPE_HAMT_SHARD, data=b"\x01", hash_type=0x12, fanout=256)
    root, block = pb_block([PBLink(file_cid, "00x", 1)], fs)
    assert kind_of(car_of(root, {root: block, **file_blocks}), root, "x") == "bad_car"


def file_node(link: PBLink, count: int, size: int) -> tuple[CID, bytes]:
    """A file node linking ``count`` times to one block, each link declaring ``size``.

    Encoded by repeating one link's bytes: the same as encode_node, much faster."""
    link_bytes = dagpb.encode_node([link], b"")[:-2]  # without its empty Data field
    fs = UnixFSData(dagpb.TYPE_FILE, blocksizes=(size,) * count)
    block = link_bytes * count + dagpb.encode_node([], dagpb.encode_unixfs(fs))
    return CID.for_block(block, DAG_PB, 0), block


def test_ten_thousand_links_to_one_block_fail_fast_in_bounded_memory() -> None:
    one = CID.for_block(b"x", RAW, 1)
    n = 10_000
    # Consistent sizes, but 10,000 links for 10,000 bytes is past the link budget.
    root, block = file_node(PBLink(one, "", 1), n, 1)
    car = car_of(root, {root: block, one: b"x"})
    tracemalloc.start()
    started = time.process_time()
    try:
        assert kind_of(car, root) == "bad_car"
        cpu = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cpu < 5.0  # about 0.5 s on an idle core, under tracemalloc
    assert peak < 20 * len(car)  # the decoded links of one node, nothing per visit


def test_declared_sizes_are_checked_before_any_child_is_read() -> None:
    one = CID.for_block(b"x", RAW, 1)
    n = 2_000
    # Links declared as 64 KiB each: past the cap, and no child is fetched to see it.
    root, block = file_node(PBLink(one, "", 1), n, 1 << 16)
    assert kind_of(car_of(root, {root: block}), root) == "too_large"


def test_a_two_level_amplifier_is_refused() -> None:
    # root -> 2,000 x inner -> 2,000 x one empty block: 4,000,000 visits unbounded.
    empty = CID.for_block(b"", RAW, 1)
    n = 2_000
    inner, inner_block = file_node(PBLink(empty, "", 0), n, 0)
    root, root_block = file_node(PBLink(inner, "", 0), n, 0)
    car = car_of(root, {root: root_block, inner: inner_block, empty: b""})
    started = time.process_time()
    assert kind_of(car, root) == "bad_car"
    assert time.process_time() - started < 2.0


def test_links_decoded_from_one_car_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Distinct nodes, each within the walk's budget, together past the CAR's link
    # cap (lowered here from 100,000 to keep the test fast).
    monkeypatch.setattr(verify, "MAX_CAR_LINKS", 3_000)
    chunk = bytes(64)  # 64 bytes per link keeps the walk itself within its budget
    leaf = CID.for_block(chunk, RAW, 1)
    inners = [file_node(PBLink(leaf, str(i), 64), 400, 64) for i in range(10)]
    links = [PBLink(cid, "", 0) for cid, _ in inners]
    fs = UnixFSData(dagpb.TYPE_FILE, blocksizes=(400 * 64,) * 10)
    root, root_block = pb_block(links, fs)
    car = car_of(root, {root: root_block, leaf: chunk, **dict(inners)})
    assert kind_of(car, root) == "bad_car"  # 4,010 links decoded
    monkeypatch.setattr(verify, "MAX_CAR_LINKS", 5_000)
    assert file_from_car(car, root, "", LIMIT)[1] == chunk * 4000


def test_a_child_must_hold_what_its_parent_declares() -> None:
    big, big_blocks = add_bytes(bytes(CHUNK_SIZE), cid_version=1)
    root, block = file_node(PBLink(big, "", CHUNK_SIZE), 3, 10)
    assert kind_of(car_of(root, {root: block, **big_blocks}), root) == "bad_car"
    links = [PBLink(big, "", CHUNK_SIZE)] * 2  # one blocksize per link, not none
    root, block = pb_block(links, UnixFSData(dagpb.TYPE_FILE, filesize=2 * CHUNK_SIZE))
    assert kind_of(car_of(root, {root: block, **big_blocks}), root) == "bad_car"


def test_a_file_that_repeats_one_block_within_its_size_is_read() -> None:
    # Deduplicated content (a file of repeated chunks) is legitimate.
    chunk = b"ab" * 512
    leaf = CID.for_block(chunk, RAW, 1)
    root, block = file_node(PBLink(leaf, "", len(chunk)), 100, len(chunk))
    car = car_of(root, {root: block, leaf: chunk})
    assert file_from_car(car, root, "", LIMIT)[1] == chunk * 100


def test_a_car_of_too_many_sections_is_bad(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each section costs the same however small its block: their number is capped
    # (16,384; lowered here to keep the test fast).
    monkeypatch.setattr(verify, "MAX_CAR_SECTIONS", 500)
    data = [i.to_bytes(4, "big") for i in range(500)]
    blocks = {CID.for_block(d, RAW, 1): d for d in data}
    root = next(iter(blocks))
    assert file_from_car(car_of(root, blocks), root, "", LIMIT)[1] == data[0]
    extra = CID.for_block(b"one more", RAW, 1)
    assert kind_of(car_of(root, {**blocks, extra: b"one more"}), root) == "bad_car"
