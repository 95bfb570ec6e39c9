"""Export a split as WebDataset tar shards that ``open_clip_train`` reads as they are.

A split's items arrive already in their final order (``order_key`` mixes
collections, so every shard holds many of them) and are cut into consecutive
shards of ``samples_per_shard``; each shard is one Dask task. A sample is three
tar members sharing a key ``<folder>_<token_id>``: the resized image (``.png``
or ``.jpg``), the caption (``.txt``) and its record (``.json``). Tars are built
byte for byte reproducibly, so a rerun writes identical shards. A done-file per
shard (``_done/<split>/shard-N.json``, written after the tar) lets a resumed
export skip finished shards and still report their failures. ``write_index``
then writes ``<split>/sizes.json`` (what ``open_clip_train`` reads to size an
epoch) and ``shards.json`` (each split's shards, counts and ``--train-data``
pattern).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tasks.core.errors import ItemError
from tasks.core.folders import Folder, open_folder
from tasks.core.json_bounded import loads_bounded
from tasks.core.paths import SHARD_INDEX, SIZES
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.export import images
from tasks.export.items import ExportItem
from tasks.export.svg_sandbox import SvgSandbox

log = logging.getLogger(__name__)

SAMPLES_PER_SHARD = 1000
# Keys and split names: WebDataset splits a member name at its first dot.
_SAFE = re.compile(r"[A-Za-z0-9_\-]+")
# Enlarging the short side of a 1x80,000,000 image to 256 pixels would ask for
# billions of pixels; token art this far from square is refused instead.
MAX_ASPECT = 16.0
# Fixed tar header fields: the same samples give the same bytes on every run.
_MTIME = 0
_MODE = 0o644
# Caps on this stage's own JSON read back from the bucket, which others may write.
INDEX_BYTES = 64 * 1024 * 1024
DONE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ShardOptions:
    shortest_side: int = 256
    image_format: str = "png"  # or "jpg"

    def __post_init__(self) -> None:
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be png or jpg, not {self.image_format!r}")
        if self.shortest_side < 1:
            raise ValueError(f"shortest_side must be at least 1, not {self.shortest_side}")


@dataclass(frozen=True)
class ShardPlan:
    """Consecutive items of one split that become one tar."""

    split: str
    index: int
    items: tuple[ExportItem, ...]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


@dataclass(frozen=True)
class Failure:
    """A token left out of its shard, and why."""

    collection: str
    contract: str
    token_id: str
    kind: str
    message: str


@dataclass(frozen=True)
class ShardResult:
    split: str
    name: str  # "<split>/shard-000000.tar", relative to the export folder
    samples: int
    failures: tuple[Failure, ...]
    skipped: bool = False  # True when an earlier run had already written it
    # Samples written per collection name: what a summary shows per collection.
    by_collection: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Holdout:
    """How an export drew its held-out tokens (tasks.export.items, ``holdout``)."""

    per_collection: int
    seed: int


def read_index(out_url: str, settings: Settings) -> dict[str, Any] | None:
    """An export's ``shards.json`` (what ``write_index`` wrote), or None before one."""
    folder = open_folder(out_url, settings)
    if not folder.exists(SHARD_INDEX):
        return None
    index: dict[str, Any] = loads_bounded(
        folder.read(SHARD_INDEX, INDEX_BYTES), max_bytes=INDEX_BYTES
    )
    return index


def read_holdout(split_url: str, settings: Settings) -> Holdout | None:
    """The holdout draw recorded beside an exported split (its export's shards.json)."""
    index = read_index(split_url.rstrip("/").rsplit("/", 1)[0], settings) or {}
    found = index.get("holdout")
    return Holdout(int(found["per_collection"]), int(found["seed"])) if found else None


def shard_name(split: str, index: int) -> str:
    return f"{split}/shard-{index:06d}.tar"


def sample_key(item: ExportItem) -> str:
    return f"{item.folder}_{item.token_id}"


def order_key(seed: str, contract: str, token_id: str) -> str:
    """The sort key that mixes collections: hex SHA-256 of ``seed/contract/token_id``.

    DuckDB's ``sha256(seed || '/' || contract || '/' || token_id)`` is the same
    string, so the tables' SQL can order items without Python.
    """
    return hashlib.sha256(f"{seed}/{contract}/{token_id}".encode()).hexdigest()


def plan_shards(
    split: str, items: Iterable[ExportItem], samples_per_shard: int = SAMPLES_PER_SHARD
) -> Iterator[ShardPlan]:
    """Cut one split's items, in the order given, into consecutive shards.

    Items are consumed lazily: only the shard being filled is held here.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be at least 1, not {samples_per_shard}")
    _check_safe("split", split)
    batch: list[ExportItem] = []
    index = 0
    for item in items:
        if item.split != split:
            raise ValueError(f"token {sample_key(item)} is in split {item.split!r}, not {split!r}")
        _check_safe("sample key", sample_key(item))
        batch.append(item)
        if len(batch) == samples_per_shard:
            yield ShardPlan(split, index, tuple(batch))
            batch = []
            index += 1
    if batch:
        yield ShardPlan(split, index, tuple(batch))


def write_shard(
    plan: ShardPlan, out_url: str, settings: Settings, options: ShardOptions | None = None
) -> ShardResult:
    """Write one shard tar (one Dask task); skipped if an earlier run wrote this plan.

    Takes a URL and Settings rather than clients so the call pickles to Dask workers.
    Object-store errors propagate (the task's retry resumes); a token's own bad
    image becomes a Failure.
    """
    options = options or ShardOptions()
    folder = open_folder(out_url, settings)
    digest = _plan_digest(plan, options)
    earlier = _finished(folder, plan, digest)
    if earlier is not None:
        return earlier

    store = ObjectStore(settings)
    members: list[tuple[str, bytes]] = []
    failures: list[Failure] = []
    for item, sample in item_samples(plan.items, store.read_blob, options, settings.concurrency):
        if isinstance(sample, ItemError):
            failures.append(
                Failure(item.collection, item.contract, item.token_id, sample.kind, sample.message)
            )
        else:
            members.extend(sample)
    samples = len(plan.items) - len(failures)
    failed = Counter(f.collection for f in failures)
    written = Counter(item.collection for item in plan.items) - failed
    by_collection = tuple(sorted(written.items()))
    folder.put(plan.name, _tar(members))
    done = {
        "plan": digest,
        "samples": samples,
        "failures": [dataclasses.asdict(f) for f in failures],
        "by_collection": [list(pair) for pair in by_collection],
    }
    folder.put(_done_path(plan), _json_bytes(done))  # last: marks the tar complete
    return ShardResult(plan.split, plan.name, samples, tuple(failures), False, by_collection)


def write_index(
    out_url: str,
    settings: Settings,
    results: Iterable[ShardResult],
    options: ShardOptions | None = None,
    holdout: Holdout | None = None,
) -> dict[str, Any]:
    """Write each split's ``sizes.json`` and the top-level ``shards.json``; the latter's content.

    ``results`` are those of every shard of the export (all splits), in any order.
    ``holdout``: the draw that took tokens out of train (recorded, so training can
    leave them out of whatever else it derives from the tables).
    """
    options = options or ShardOptions()
    folder = open_folder(out_url, settings)
    by_split: dict[str, list[ShardResult]] = {}
    for result in results:
        by_split.setdefault(result.split, []).append(result)
    splits: dict[str, Any] = {}
    for split, found in sorted(by_split.items()):
        found.sort(key=lambda r: r.name)
        names = [r.name.rsplit("/", 1)[1] for r in found]
        expected = [shard_name(split, i).rsplit("/", 1)[1] for i in range(len(found))]
        if names != expected:
            raise ValueError(f"split {split!r}: shards are not 0..{len(found) - 1}: {names[:5]}")
        sizes = {name: r.samples for name, r in zip(names, found, strict=True)}
        folder.put(f"{split}/{SIZES}", _json_bytes(sizes))
        kinds = Counter(f.kind for r in found for f in r.failures)
        by_collection: Counter[str] = Counter()
        for r in found:
            by_collection.update(dict(r.by_collection))
        splits[split] = {
            "shards": [r.name for r in found],
            "samples": sum(r.samples for r in found),
            "samples_by_collection": dict(sorted(by_collection.items())),
            "failed": sum(kinds.values()),
            "failures_by_kind": dict(sorted(kinds.items())),
            "train_data": f"{folder.url}/{_brace(split, len(found))}",
        }
    index = {
        "format": "webdataset",
        "image_extension": options.image_format,
        "shortest_side": options.shortest_side,
        "splits": splits,
    }
    if holdout is not None and holdout.per_collection > 0:
        index["holdout"] = dataclasses.asdict(holdout)
    folder.put(SHARD_INDEX, _json_bytes(index))
    return index


def _finished(folder: Folder, plan: ShardPlan, digest: str) -> ShardResult | None:
    """The result an earlier run recorded for this very plan, if its tar is there."""
    done_path = _done_path(plan)
    if not (folder.exists(plan.name) and folder.exists(done_path)):
        return None
    done = loads_bounded(folder.read(done_path, DONE_BYTES), max_bytes=DONE_BYTES)
    if done.get("plan") != digest or "by_collection" not in done:
        return None
    failures = tuple(Failure(**f) for f in done["failures"])
    by_collection = tuple((str(name), int(n)) for name, n in done["by_collection"])
    return ShardResult(plan.split, plan.name, done["samples"], failures, True, by_collection)


def item_samples(
    items: Sequence[ExportItem],
    fetch: Callable[[str], bytes | None],
    options: ShardOptions,
    window: int,
    sandbox: SvgSandbox | None = None,
) -> Iterator[tuple[ExportItem, list[tuple[str, bytes]] | ItemError]]:
    """Each item with its tar members, or its ItemError, in order.

    Blobs are fetched (``fetch``: image key to bytes, None when absent) ``window``
    at a time, so a shard of large images never holds more than one window of
    them. Images are decoded here, one at a time; SVGs render in ``sandbox`` (by
    default the process-wide one), where a crash or hang fails only its item.
    """
    window = max(1, window)
    with ThreadPoolExecutor(window) as pool:
        for start in range(0, len(items), window):
            chunk = items[start : start + window]
            blobs = pool.map(fetch, [i.image_key for i in chunk])
            for item, data in zip(chunk, blobs, strict=True):
                yield item, _sample(item, data, options, sandbox)


def _sample(
    item: ExportItem, data: bytes | None, options: ShardOptions, sandbox: SvgSandbox | None
) -> list[tuple[str, bytes]] | ItemError:
    try:
        if data is None:
            raise ItemError("unexpected", f"image blob {item.image_key} is not in the store")
        image = images.decode(
            data, item.image_mime, svg_shortest_side=options.shortest_side, sandbox=sandbox
        )
        width, height = image.size
        if max(width, height) / min(width, height) > MAX_ASPECT:
            raise ItemError("bad_image", f"aspect ratio of {width}x{height} is out of range")
        resized = images.resize_shortest(image, options.shortest_side)
        encoded = images.encode(resized, options.image_format)
    except ItemError as e:
        return e
    except Exception as e:
        # Image bytes that trip a bug must not stop the other samples of the shard.
        log.exception("token %s of %s: unexpected error", item.token_id, item.contract)
        return ItemError("unexpected", f"{type(e).__name__}: {e}")
    record = {
        "key": sample_key(item),
        "collection": item.collection,
        "contract": item.contract,
        "token_id": item.token_id,
        "split": item.split,
        "in_mini": item.in_mini,
        "caption": item.caption,
        "caption_method": item.caption_method,
        "traits": [list(pair) for pair in item.traits],
        "prompt": item.prompt,
        "folder": item.folder,
        "source_mime": item.image_mime,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "source_width": width,
        "source_height": height,
        "width": resized.width,
        "height": resized.height,
    }
    key = sample_key(item)
    members = {
        f"{key}.{options.image_format}": encoded,
        f"{key}.json": _json_bytes(record),
        f"{key}.txt": item.caption.encode("utf-8"),
    }
    return sorted(members.items())


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of the members in the order given, with fixed headers."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = _MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _plan_digest(plan: ShardPlan, options: ShardOptions) -> str:
    """What the shard's bytes depend on: a changed plan or option rewrites the shard."""
    doc = {
        "options": dataclasses.asdict(options),
        "items": [dataclasses.asdict(i) for i in plan.items],
    }
    return hashlib.sha256(_json_bytes(doc)).hexdigest()


def _done_path(plan: ShardPlan) -> str:
    return f"_done/{plan.name.removesuffix('.tar')}.json"


def _brace(split: str, count: int) -> str:
    """The shards of a split as one brace pattern (braceexpand, as webdataset uses)."""
    if count == 1:
        return shard_name(split, 0)
    first, last = shard_name(split, 0), shard_name(split, count - 1)
    stem = first.removesuffix("000000.tar")
    return f"{stem}{{{first[len(stem) : -4]}..{last[len(stem) : -4]}}}.tar"


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _check_safe(what: str, value: str) -> None:
    if not _SAFE.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]+ (WebDataset splits at dots)")
