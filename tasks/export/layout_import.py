"""Import a folder in the released NFT1000 layout, so users who have NFT1000 skip ingest.

The folder (local or ``s3://``) holds one folder per collection, laid out as
tasks.export.layout_export writes it. Its files become what ingest would have made:
metadata and image bytes as content-addressed blobs, and one manifest per block
of 1,000 ids at the key ingest uses, so every later step (tables, exports)
works unchanged and a re-import writes nothing new.

``plan_import`` lists the folder once, works out each collection's contract
(its metadata_dashboard.json, else a registry) and cuts the tokens into
batches, one per manifest block; ``import_batch`` runs one batch (a Dask task).
The folder is attacker-controlled: names that do not fit the layout are
ignored with a note, files are read with byte caps and local symlinks are not
followed, and a token whose files are bad gets a failed manifest row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tasks.core.content import inspect_image, parse_metadata
from tasks.core.errors import ItemError
from tasks.core.folders import Folder, open_folder
from tasks.core.s3 import ObjectStore, StoredBlob
from tasks.core.settings import MiB, Settings
from tasks.export.layout_export import DASHBOARD
from tasks.ingest.blocks import BLOCK, BlockSpec, manifest_key
from tasks.ingest.chain import ADDRESS
from tasks.ingest.manifest import ManifestRow, error_text, from_parquet, to_parquet, valid_text
from tasks.ingest.registry import MAX_NAME_CHARS, load_registry

log = logging.getLogger(__name__)

MAX_DASHBOARD_BYTES = 64 * MiB  # a 10,000-token dashboard with rarity is about 1 MiB
MAX_NOTES = 1000  # notes kept per plan; a folder of junk cannot fill memory with them
_ID = re.compile(r"0|[1-9][0-9]{0,77}")  # canonical decimal: "007" and "7" never collide
_IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg"})
_EXTS = {"metadata": {".json"}, "captions": {".txt"}, "prompts": {".txt"}, "images": _IMAGE_EXTS}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class ImportNote:
    path: str  # the file or collection folder it is about
    reason: str  # no_contract, duplicate_contract, bad_dashboard, unexpected_file, ...
    message: str


@dataclass(frozen=True)
class LayoutFile:
    folder: str  # the collection folder
    kind: str  # dashboard, metadata, images, captions or prompts
    token_id: int | None  # None for the dashboard


@dataclass(frozen=True)
class TokenFiles:
    token_id: int
    metadata: str | None  # paths relative to the imported folder
    image: str | None


@dataclass(frozen=True)
class ImportBatch:
    """The tokens of one collection inside one manifest block."""

    folder_url: str
    collection: str
    contract: str  # lowercase 0x address
    block: int  # first id of the block
    tokens: tuple[TokenFiles, ...]


@dataclass
class ImportPlan:
    batches: list[ImportBatch] = field(default_factory=list)
    errors: list[ImportNote] = field(default_factory=list)  # collections not imported
    notes: list[ImportNote] = field(default_factory=list)  # ignored files (first MAX_NOTES)
    notes_total: int = 0  # notes in all, kept or not

    def note(self, note: ImportNote) -> None:
        self.notes_total += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(note)


@dataclass
class ImportResult:
    collection: str
    contract: str
    block: int
    tokens: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error kind
    new_blobs: int = 0  # blobs this import stored (0 on a re-import)
    new_bytes: int = 0
    manifest_written: bool = False  # False when the manifest already held these rows


def plan_import(folder_url: str, settings: Settings, registries: Sequence[Path] = ()) -> ImportPlan:
    """Batches for every collection folder whose contract is known; errors and notes."""
    folder = open_folder(folder_url, settings)
    plan = ImportPlan()
    collections = _scan(folder.walk(), plan)
    registry = load_registry(registries)
    claimed: dict[str, str] = {}
    for name in sorted(collections):
        tokens, has_dashboard = collections[name]
        found = _identify(folder, name, has_dashboard, registry, plan)
        if found is None:
            continue
        collection, contract = found
        if contract in claimed:
            # Two folders would write one manifest key at once and lose each other's rows.
            message = f"contract {contract} is already imported from {claimed[contract]!r}"
            plan.errors.append(ImportNote(_shown(name), "duplicate_contract", message))
            continue
        claimed[contract] = name
        plan.batches.extend(_batches(folder.url, collection, contract, tokens))
    return plan


def import_batch(batch: ImportBatch, settings: Settings) -> ImportResult:
    """Store one block's files as blobs and write its manifest (unless it is unchanged)."""
    folder = open_folder(batch.folder_url, settings)
    store = ObjectStore(settings)
    result = ImportResult(batch.collection, batch.contract, batch.block)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        outcomes = list(
            pool.map(lambda t: _import_token(folder, store, settings, batch, t), batch.tokens)
        )
    for row, stored in outcomes:
        result.tokens += 1
        created = [b for b in stored if b.created]
        result.new_blobs += len(created)
        result.new_bytes += sum(b.size for b in created)
        if row.status == "ok":
            result.ok += 1
        else:
            result.failed[row.error_kind or "unknown"] += 1
    spec = BlockSpec(batch.collection, batch.contract, batch.block, batch.block + BLOCK)
    key = manifest_key(store, spec)
    found = store.get(key)
    before = sorted(from_parquet(found) if found else [], key=lambda r: int(r.token_id))
    after = _merge(before, [row for row, _ in outcomes])
    if found is None or after != before:
        store.put(key, to_parquet(after))
        result.manifest_written = True
    return result


class _FileProblem(Exception):
    """A token's file is missing or unreadable: its row's error, like an ItemError."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def parse_layout_path(path: str) -> LayoutFile | ImportNote:
    """What a listed path is in the layout, or a note saying why it is ignored."""
    parts = path.split("/")
    if _CONTROL.search(path) or any(p in ("", ".", "..") for p in parts):
        return ImportNote(_shown(path), "unsafe_name", "path is not a plain relative file name")
    if len(parts) == 2 and parts[1] == DASHBOARD:
        return LayoutFile(parts[0], "dashboard", None)
    if len(parts) != 3 or parts[1] not in _EXTS:
        return ImportNote(_shown(path), "unexpected_file", "not part of the NFT1000 layout")
    collection, kind, filename = parts
    stem, ext = os.path.splitext(filename)
    head, _, raw_id = stem.rpartition("_")
    if head != collection or not _ID.fullmatch(raw_id) or ext.lower() not in _EXTS[kind]:
        message = f"not {collection}_<decimal id> with a {kind} file type"
        return ImportNote(_shown(path), "unexpected_file", message)
    if int(raw_id) >= 2**256:
        return ImportNote(_shown(path), "unexpected_file", "token id is over 2**256 - 1")
    return LayoutFile(collection, kind, int(raw_id))


def _scan(paths: Iterable[str], plan: ImportPlan) -> dict[str, tuple[dict[int, TokenFiles], bool]]:
    """Per collection folder: its tokens' files, and whether it has a dashboard."""
    tokens: dict[str, dict[int, TokenFiles]] = {}
    dashboards: set[str] = set()
    for path in paths:
        entry = parse_layout_path(path)
        if isinstance(entry, ImportNote):
            plan.note(entry)
            continue
        found = tokens.setdefault(entry.folder, {})
        if entry.token_id is None:
            dashboards.add(entry.folder)
        elif entry.kind in ("metadata", "images"):  # captions and prompts are made again
            _add_file(found, path, entry.kind, entry.token_id, plan)
    return {name: (found, name in dashboards) for name, found in tokens.items()}


def _add_file(
    found: dict[int, TokenFiles], path: str, kind: str, token_id: int, plan: ImportPlan
) -> None:
    files = found.get(token_id, TokenFiles(token_id, None, None))
    if (files.metadata if kind == "metadata" else files.image) is not None:
        plan.note(ImportNote(path, "duplicate_file", f"token {token_id} has another {kind} file"))
    elif kind == "metadata":
        found[token_id] = dataclasses.replace(files, metadata=path)
    else:
        found[token_id] = dataclasses.replace(files, image=path)


def _identify(
    folder: Folder,
    name: str,
    has_dashboard: bool,
    registry: dict[str, tuple[str, str]],
    plan: ImportPlan,
) -> tuple[str, str] | None:
    """(collection name, contract) from the dashboard, else the registry; None: an error."""
    collection, contract = name, None
    if has_dashboard:
        path = f"{name}/{DASHBOARD}"
        try:
            dashboard = parse_metadata(_read_capped(folder, path, MAX_DASHBOARD_BYTES))
        except (ItemError, _FileProblem) as e:
            plan.note(ImportNote(path, "bad_dashboard", e.message))
        else:
            collection = _clean_name(dashboard.get("collection")) or name
            raw = dashboard.get("contract")
            if isinstance(raw, str) and ADDRESS.fullmatch(raw):
                contract = raw.lower()
            elif raw is not None:
                plan.note(ImportNote(path, "bad_dashboard", "contract is not a 0x address"))
    if contract is None:
        known = registry.get(name.lower()) or registry.get(collection.lower())
        contract = known[1] if known else None
    if contract is None:
        message = f"no contract: {DASHBOARD} names none and no registry knows {name!r}"
        plan.errors.append(ImportNote(_shown(name), "no_contract", message))
        return None
    return collection, contract


def _clean_name(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return valid_text(" ".join(value.split())[:MAX_NAME_CHARS]) or None


def _batches(
    folder_url: str, collection: str, contract: str, tokens: dict[int, TokenFiles]
) -> list[ImportBatch]:
    blocks: dict[int, list[TokenFiles]] = {}
    for token_id in sorted(tokens):
        blocks.setdefault(token_id - token_id % BLOCK, []).append(tokens[token_id])
    return [
        ImportBatch(folder_url, collection, contract, block, tuple(files))
        for block, files in blocks.items()
    ]


def _import_token(
    folder: Folder, store: ObjectStore, settings: Settings, batch: ImportBatch, files: TokenFiles
) -> tuple[ManifestRow, list[StoredBlob]]:
    """The token's manifest row, and the blobs it stored (new or already there)."""
    row = ManifestRow(batch.collection, batch.contract, str(files.token_id))
    stored: list[StoredBlob] = []
    try:
        if files.metadata is None:
            raise _FileProblem("missing_metadata", "no metadata file in the folder")
        metadata = _read_capped(folder, files.metadata, settings.max_metadata_bytes)
        parse_metadata(metadata)
        stored.append(meta := store.put_blob(metadata, "application/json"))
        row = dataclasses.replace(row, metadata_key=meta.key, metadata_sha256=meta.sha256)
        if files.image is None:
            raise _FileProblem("missing_image", "no image file in the folder")
        image = _read_capped(folder, files.image, settings.max_image_bytes)
        info = inspect_image(image)
        stored.append(blob := store.put_blob(image, info.mime))
        row = dataclasses.replace(
            row,
            image_key=blob.key,
            mime=info.mime,
            bytes=blob.size,
            sha256=blob.sha256,
            width=info.width,
            height=info.height,
        )
    except (ItemError, _FileProblem) as e:
        row = _failed(row, e.kind, e.message)
    except (BotoCoreError, ClientError):
        raise  # the object store failed, not the token: the batch's retry redoes it
    except Exception as e:
        log.exception("token %s of %s: unexpected error", files.token_id, batch.contract)
        row = _failed(row, "unexpected", f"{type(e).__name__}: {e}")
    return row, stored


def _failed(row: ManifestRow, kind: str, message: str) -> ManifestRow:
    """Like tasks.ingest.token's failed rows; never retryable, since only the folder can fix it."""
    error = error_text(message)
    return dataclasses.replace(row, status="failed", error_kind=kind, error=error, retryable=False)


def _merge(before: list[ManifestRow], rows: list[ManifestRow]) -> list[ManifestRow]:
    """The block's rows with the imported ones; rows of other ids stay as they were.

    An earlier row is kept when the import adds nothing to it: the same row but for
    its time, or a stored (ok) row the import failed on or stored identically (an
    ingested row also knows its token and image URIs).
    """
    merged = {int(r.token_id): r for r in before}
    for row in rows:
        old = merged.get(int(row.token_id))
        same_blobs = old is not None and (old.metadata_key, old.image_key) == (
            row.metadata_key,
            row.image_key,
        )
        if old is not None and (
            dataclasses.replace(row, fetched_at=old.fetched_at) == old
            or (old.status == "ok" and (row.status != "ok" or same_blobs))
        ):
            continue
        merged[int(row.token_id)] = row
    return [merged[i] for i in sorted(merged)]


def _read_capped(folder: Folder, path: str, cap: int) -> bytes:
    """A file's bytes, reading at most cap + 1 of them; too_large past the cap."""
    try:
        data = folder.read(path, cap)
    except FileNotFoundError as e:
        raise _FileProblem("missing_file", "the file disappeared after listing") from e
    except OSError as e:
        raise _FileProblem("unreadable_file", f"cannot open: {e.strerror or e}") from e
    if len(data) > cap:
        raise ItemError("too_large", f"{_shown(path)} is over {cap} bytes")
    return data


def _shown(path: str) -> str:
    """A path safe to print in notes: control characters escaped, length bounded."""
    return ascii(path)[1:-1][:300] if _CONTROL.search(path) else path[:300]
