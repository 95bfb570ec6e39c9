"""Helpers of the CAR verification tests: unit/test_ipfs_verify, slow/test_ipfs_verify_hamt."""

from __future__ import annotations

import pytest

from tasks.core.errors import ItemError
from tasks.ingest.ipfs.car import write_car
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.ipfs.verify import file_from_car

LIMIT = 64 * 1024 * 1024


def car_of(root: CID, blocks: dict[CID, bytes]) -> bytes:
    return write_car([root], blocks.items())


def kind_of(car: bytes, root: CID, path: str = "", max_bytes: int = LIMIT) -> str:
    with pytest.raises(ItemError) as info:
        file_from_car(car, root, path, max_bytes)
    return info.value.kind
