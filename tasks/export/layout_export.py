"""Write export items in the released NFT1000 folder layout, one batch per Dask task.

Per collection folder ``<C>`` (ExportItem.folder) and token ``<id>``::

    <C>/images/<C>_<id>.png      the stored image as PNG (PNGs byte for byte)
    <C>/metadata/<C>_<id>.json   the token's original metadata bytes, unchanged
    <C>/captions/<C>_<id>.txt    the preferred caption, UTF-8, no trailing newline
    <C>/prompts/<C>_<id>.txt     the preferred prompt, UTF-8, no trailing newline
    <C>/metadata_dashboard.json  the collection's dashboard (write_dashboard)

Text files are the bare string, as NFT1000's own caption files are, so readers
that compare or concatenate them need no stripping. A batch is resumable: a
token whose four files all exist is skipped (one listing of the collection
folder per batch, not a HEAD per file), and the image is written last, so a
killed batch leaves a token incomplete and it is written again on the rerun.
A token whose image cannot be standardised is a recorded failure, never an
exception that stops the batch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tasks.core import paths
from tasks.core.errors import ItemError
from tasks.core.folders import Folder, open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export.images import to_png
from tasks.export.items import ExportItem
from tasks.ingest.blocks import BLOCK

log = logging.getLogger(__name__)

DASHBOARD = "metadata_dashboard.json"
# What safe_names and the tables produce; anything else would be a bug upstream,
# recorded against the token rather than written somewhere unexpected.
_FOLDER = re.compile(r"[A-Za-z0-9_\-]{1,120}")
_TOKEN_ID = re.compile(r"0|[1-9][0-9]{0,77}")


@dataclass(frozen=True)
class ExportFailure:
    folder: str
    token_id: str
    kind: str  # an ItemError kind, or missing_blob / bad_name
    message: str


@dataclass
class LayoutExportResult:
    written: int = 0  # tokens whose files this run wrote
    skipped_existing: int = 0  # tokens whose four files were already there
    failed: list[ExportFailure] = field(default_factory=list)
    bytes_written: int = 0

    def merge(self, other: LayoutExportResult) -> None:
        """Add another batch's counts (collection and run totals)."""
        self.written += other.written
        self.skipped_existing += other.skipped_existing
        self.failed.extend(other.failed)
        self.bytes_written += other.bytes_written


def token_paths(folder: str, token_id: str) -> tuple[str, str, str, str]:
    """The token's metadata, caption, prompt and image paths, in the order they are written."""
    stem = f"{folder}_{token_id}"
    return (
        f"{folder}/metadata/{stem}.json",
        f"{folder}/captions/{stem}.txt",
        f"{folder}/prompts/{stem}.txt",
        f"{folder}/images/{stem}.png",
    )


def export_batch(
    items: Sequence[ExportItem], folder_url: str, settings: Settings
) -> LayoutExportResult:
    """Write the items' files under folder_url (local path or s3://), skipping finished ones."""
    folder = open_folder(folder_url, settings)
    store = ObjectStore(settings)
    existing: set[str] = set()
    for name in sorted({i.folder for i in items if _FOLDER.fullmatch(i.folder)}):
        existing.update(folder.walk(name + "/"))
    result = LayoutExportResult()
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        outcomes = pool.map(lambda i: _export_item(i, folder, store, existing), items)
        for outcome in outcomes:
            if isinstance(outcome, ExportFailure):
                result.failed.append(outcome)
            elif outcome is None:
                result.skipped_existing += 1
            else:
                result.written += 1
                result.bytes_written += outcome
    return result


def write_dashboard(folder_url: str, settings: Settings, folder_name: str, data: bytes) -> bool:
    """Write ``<folder_name>/metadata_dashboard.json``; False when identical bytes are there."""
    if not _FOLDER.fullmatch(folder_name):
        raise ValueError(f"unsafe collection folder name {folder_name!r}")
    folder = open_folder(folder_url, settings)
    path = f"{folder_name}/{DASHBOARD}"
    if folder.exists(path) and folder.get(path) == data:
        return False
    folder.put(path, data)
    return True


def layout_batches(items: Iterator[ExportItem]) -> Iterator[list[ExportItem]]:
    """Items cut at each change of collection and of 1,000-id block (items come sorted):
    one batch per folder of the layout, one Dask task each."""
    batch: list[ExportItem] = []
    for item in items:
        if batch and (item.contract, int(item.token_id) // BLOCK) != (
            batch[0].contract,
            int(batch[0].token_id) // BLOCK,
        ):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def copy_dashboards(
    folder_url: str, settings: Settings, tables: str, folders: Mapping[str, str]
) -> int:
    """Each collection's dashboard from the tables root into its layout folder
    (``folders``: contract -> folder name); returns how many were written."""
    source = open_folder(tables, settings)
    return sum(
        write_dashboard(folder_url, settings, name, source.get(paths.dashboard(contract)))
        for contract, name in folders.items()
    )


def _export_item(
    item: ExportItem, folder: Folder, store: ObjectStore, existing: set[str]
) -> ExportFailure | int | None:
    """Bytes written for the token, None when all its files were there, or why it failed."""
    if not (_FOLDER.fullmatch(item.folder) and _TOKEN_ID.fullmatch(item.token_id)):
        return _failure(item, "bad_name", "folder or token id is not a safe file name")
    paths = token_paths(item.folder, item.token_id)
    if all(p in existing for p in paths):
        return None
    metadata = store.read_blob(item.metadata_key)
    image = store.read_blob(item.image_key)
    if metadata is None or image is None:
        missing = item.metadata_key if metadata is None else item.image_key
        return _failure(item, "missing_blob", f"stored object {missing} is missing")
    try:
        png = to_png(image, item.image_mime)
    except ItemError as e:
        return _failure(item, e.kind, e.message)
    except Exception as e:
        # Image data that trips a bug in a decoder must not stop the batch.
        log.exception("token %s of %s: unexpected error", item.token_id, item.folder)
        return _failure(item, "unexpected", f"{type(e).__name__}: {e}")
    contents = (metadata, _text(item.caption), _text(item.prompt), png)
    for path, data in zip(paths, contents, strict=True):
        folder.put(path, data)
    return sum(len(c) for c in contents)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def _failure(item: ExportItem, kind: str, message: str) -> ExportFailure:
    return ExportFailure(item.folder, item.token_id, kind, message[:1000])
