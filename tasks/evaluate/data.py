"""Which exported splits an evaluation or CVI run measures, found from the export itself.

A split is there when its ``sizes.json`` is (nft1000/export writes it last). The
demo trains on every collection, so it has no test split: its token-level
``holdout`` split takes the test split's place.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core import paths
from tasks.core.folders import open_folder
from tasks.core.settings import Settings
from tasks.export.items import HOLDOUT

HELD_OUT = ("test", HOLDOUT)  # in order of preference


def held_out_split(settings: Settings) -> str | None:
    """URL of the webdataset export's test split, else its holdout split; None without."""
    for split in HELD_OUT:
        url = paths.url(settings, paths.export(paths.WEBDATASET, split))
        if open_folder(url, settings).exists(paths.SIZES):
            return url
    return None


def exported_splits(root: str, wanted: Sequence[str], settings: Settings) -> list[str]:
    """The splits of ``wanted`` exported under ``root``, in the order given."""
    folder = open_folder(root, settings)
    return [s for s in wanted if folder.exists(f"{s}/{paths.SIZES}")]


def split_listing(root: str, splits: Sequence[str], settings: Settings) -> bytes:
    """The splits' ``sizes.json`` bytes: what identifies the export's content."""
    folder = open_folder(root, settings)
    return b"".join(folder.get(f"{s}/{paths.SIZES}") for s in splits)
