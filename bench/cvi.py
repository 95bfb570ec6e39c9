"""bench/cvi: the CVI query on 1,000,000 embeddings and the embedding writer's throughput;
prints JSON.

Two measurements, each against a named baseline in the same run:

- ``cvi``: ``tasks.evaluate.cvi.compute_cvi`` (``sql/evaluate/cvi.sql``, one DuckDB scan) on
  ``--pairs`` synthetic pairs of ``--dim`` float16 vectors (512: ViT-B/32), in
  parquet files of ``--per-file`` pairs written by ``tasks.evaluate.embedding_files.to_parquet``
  like the real writer's groups, against ``numpy``: the same files read with
  pyarrow, per (collection, split) sums of the unit vectors in float64, and the
  same formulas (docs/method.md section 6). Each runs in a forked process, after the
  files were read once into the page cache, and reports the peak RSS it reached
  there. The two results must agree to TOLERANCE on every part: the bench prints
  its JSON, then fails if they do not. The pairs fall in ``--collections``
  collections of Zipf-like sizes (a tenth of the pairs or a little more in the
  largest, down to a single pair), about a fifth of each in ``test``; each
  collection has its own image and text centres, spreads and image-text match, so
  their CVIs differ. The files are cached in ``<cache>/cvi-<pairs>-<dim>/`` (2 GB
  for the default) and regenerated only when the arguments differ.
- ``embed``: ``tasks.evaluate.embed.embed_split`` (embedding plus the float16 parquet
  writes to a local folder) on one split of the real Moonbirds shards
  (``tests.data.moonbird_shards``) with ``--architecture`` (the tiny CLIP, random
  weights), against ``tasks.evaluate.embed.embed_shards`` alone on the same shard groups,
  the two in turn ``--repeats`` times after an untimed warm-up shard, best of
  each: the difference is the writer's cost, also timed alone (``to_parquet`` of
  the baseline's vectors). Then ``embed_split`` again on the last folder, which
  must embed nothing (the resume path).

``--seed`` seeds both the vectors and the Moonbirds split. The machine may be
shared with other jobs: the times are noisy.

    python -m bench.cvi [--pairs N] [--dim D] [--collections C] [--threads T] [--seed S]
        [--per-file P] [--split test|train] [--repeats R] [--quick]
        [the data arguments of tests.data.moonbird_shards]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from bench.measure import Meter
from tasks.core.duck import connect
from tasks.evaluate.cvi import CviRow, compute_cvi
from tasks.evaluate.embed import SplitEmbeddings, embed_shards, embed_split, shard_groups
from tasks.evaluate.embedding_files import embeddings_to_parquet
from tasks.train.model import ClipModel, load_clip, resolve_device
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import ShardSet
from tests.data.moonbird_shards import LOCAL, add_arguments, prepared_of

TOLERANCE = 1e-6  # the two CVI computations must agree to this on every part
TEST_SHARE = 0.2
LARGEST_SHARE = 0.1  # of the pairs, in the largest collection
DONE = "generated.json"
VERSION = 1  # bump when what a generated folder holds changes
PARTS = ("image_dispersion", "text_dispersion", "matching_margin", "cvi")
QUICK = {"pairs": 20_000, "dim": 64, "collections": 50, "per_file": 5_000, "tokens": 200,
         "per_shard": 4, "repeats": 2}  # fmt: skip
Key = tuple[str, str, str, str | None]  # level, collection, contract, split


class Disagreement(AssertionError):
    """DuckDB's CVI and numpy's differ: the query (or the baseline) is wrong."""


@dataclass(frozen=True)
class VectorSet:
    """What a generated folder holds; its ``generated.json``."""

    pairs: int
    dim: int
    collections: int
    seed: int
    per_file: int
    version: int = VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.collections <= self.pairs or self.dim < 1 or self.per_file < 1:
            raise ValueError("need 1 <= collections <= pairs, dim >= 1 and per_file >= 1")


@dataclass(frozen=True)
class FileTask:
    """One parquet file to write: its pairs' collections and token ids."""

    path: Path
    split: str
    collections: np.ndarray
    token_ids: np.ndarray
    vectors: VectorSet
    number: int


def collection_sizes(pairs: int, collections: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like (log-normal) sizes summing to ``pairs``, largest first: the others hold at
    most LARGEST_SHARE of the pairs each and the smallest one pair (its margin is
    undefined); the largest holds the rest, LARGEST_SHARE or a little more."""
    cap = max(1, int(pairs * LARGEST_SHARE))
    weights = np.sort(rng.lognormal(0.0, 2.0, collections - 1))[::-1]
    others = np.floor(weights / weights.sum() * (pairs - cap)).astype(np.int64)
    others = np.clip(others, 1, cap)
    if len(others):
        others[-1] = 1
    largest = pairs - int(others.sum())  # the cap, plus what flooring and capping left
    if largest < 1:
        raise ValueError(f"{pairs} pairs are too few for {collections} collections")
    return np.sort(np.r_[largest, others])[::-1]


def _collection_model(vectors: VectorSet) -> tuple[np.ndarray, ...]:
    """Per collection: unit image and text centres, their strengths, the image-text match."""
    rng = np.random.default_rng([vectors.seed, 1])
    shape = (vectors.collections, vectors.dim)
    centres = [rng.standard_normal(shape, dtype=np.float32) for _ in range(2)]
    image, text = (c / np.linalg.norm(c, axis=1, keepdims=True) for c in centres)
    strength = rng.uniform(0.1, 2.0, (3, vectors.collections, 1)).astype(np.float32)
    return image, text, strength[0], strength[1], strength[2] * 0.75


def _write_file(task: FileTask) -> float:
    """Write one file; the seconds ``to_parquet`` took."""
    vectors = task.vectors
    image_centre, text_centre, image_strength, text_strength, match = _collection_model(vectors)
    rng = np.random.default_rng([vectors.seed, 2, task.number])
    c = task.collections
    shape = (len(c), vectors.dim)
    scale = np.float32(1 / math.sqrt(vectors.dim))  # noise of norm about 1
    noise = rng.standard_normal(shape, dtype=np.float32) * scale
    images = image_strength[c] * image_centre[c] + noise
    texts = text_strength[c] * text_centre[c] + match[c] * noise
    texts += rng.standard_normal(shape, dtype=np.float32) * scale
    tokens = [
        (f"Synthetic {i:04d}", f"0x{i:040x}", str(t), task.split)
        for i, t in zip(c.tolist(), task.token_ids.tolist(), strict=True)
    ]
    meter = Meter()
    data = embeddings_to_parquet(tokens, images, texts)
    seconds = meter.seconds()
    task.path.parent.mkdir(parents=True, exist_ok=True)
    task.path.write_bytes(data)
    return seconds


def plan_files(vectors: VectorSet, folder: Path) -> list[FileTask]:
    """Every file of the set: each split's pairs in a seeded order (collections mixed, as
    in an export), cut into files of ``per_file``."""
    rng = np.random.default_rng([vectors.seed, 0])
    sizes = collection_sizes(vectors.pairs, vectors.collections, rng)
    collection = np.repeat(np.arange(vectors.collections), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    token_ids = np.arange(vectors.pairs) - starts
    is_test = rng.random(vectors.pairs) < TEST_SHARE
    tasks: list[FileTask] = []
    for split, chosen in (("train", ~is_test), ("test", is_test)):
        order = rng.permutation(np.flatnonzero(chosen))
        for first in range(0, len(order), vectors.per_file):
            part = order[first : first + vectors.per_file]
            path = folder / split / f"part-{first // vectors.per_file:04d}.parquet"
            tasks.append(
                FileTask(path, split, collection[part], token_ids[part], vectors, len(tasks))
            )
    return tasks


def generate(vectors: VectorSet, cache: Path) -> dict[str, Any]:
    """The set's files under ``cache``, written on every core unless an earlier run wrote
    them with the same arguments; what was done."""
    folder = (cache / f"cvi-{vectors.pairs}-{vectors.dim}").resolve()
    done = folder / DONE
    tasks = plan_files(vectors, folder)
    files = [str(t.path) for t in tasks]
    if done.is_file() and json.loads(done.read_text()) == asdict(vectors):
        return {"folder": str(folder), "files": files, "generated": False}
    done.unlink(missing_ok=True)
    for old in folder.glob("*/*.parquet"):
        old.unlink()
    meter = Meter()
    processes = min(os.cpu_count() or 1, len(tasks))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        writes = list(pool.map(_write_file, tasks))
    seconds = meter.seconds()
    done.write_text(json.dumps(asdict(vectors)) + "\n")
    return {
        "folder": str(folder),
        "files": files,
        "generated": True,
        "seconds": round(seconds, 1),
        "processes": processes,
        "to_parquet_seconds_per_file": round(sum(writes) / len(writes), 2),
    }


def duckdb_cvi(files: Sequence[str], threads: int | None) -> dict[str, Any]:
    """``compute_cvi`` on the files in a connection of ``threads`` (None: DuckDB's own)."""
    con = connect(threads=threads)
    con.execute("SET enable_progress_bar = false")  # it draws on stdout, into the JSON
    meter = Meter()
    rows = compute_cvi(con, list(files))
    seconds = meter.seconds()
    used = con.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit')"
    ).fetchone()
    assert used is not None
    return {
        "seconds": seconds,
        "rows": rows,
        "threads": int(used[0]),
        "memory_limit": str(used[1]),
        "duckdb": duckdb.__version__,
    }


def numpy_cvi(files: Sequence[str]) -> dict[str, Any]:
    """The named baseline: per group float64 sums of unit vectors from pyarrow reads."""
    meter = Meter()
    groups: dict[str, int] = {}
    sums: list[np.ndarray] = []  # per group: n, own dot products, S_v..., S_t...
    for path in files:
        table = pq.read_table(path, columns=["collection", "contract", "split", "image", "text"])
        keys = pc.binary_join_element_wise(
            table["collection"], table["contract"], table["split"], "\x1f"
        ).combine_chunks()
        encoded = keys.dictionary_encode()
        local = np.array(
            [groups.setdefault(k, len(groups)) for k in encoded.dictionary.to_pylist()], np.int64
        )
        index = local[encoded.indices.to_numpy(zero_copy_only=False)]
        v, t = _unit_rows(table["image"]), _unit_rows(table["text"])
        own = np.einsum("ij,ij->i", v, t)
        rows = np.column_stack([np.ones(len(own)), own, v, t])
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        while len(sums) < len(groups):
            sums.append(np.zeros(rows.shape[1]))
        for group, total in zip(ordered[starts], np.add.reduceat(rows[order], starts), strict=True):
            sums[group] += total
    rows_out = _numpy_rows(groups, sums)
    return {
        "seconds": meter.seconds(),
        "rows": rows_out,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def _unit_rows(column: pa.ChunkedArray) -> np.ndarray:
    rows = column.combine_chunks()
    values = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    matrix: np.ndarray = values.reshape(len(rows), -1)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def _numpy_rows(groups: dict[str, int], sums: list[np.ndarray]) -> list[CviRow]:
    """Split rows from each group's sums, collection rows from the sums of its splits."""
    by_collection: dict[tuple[str, str], np.ndarray] = {}
    rows: list[CviRow] = []
    for key, group in groups.items():
        collection, contract, split = key.split("\x1f")
        total = sums[group]
        whole = by_collection.setdefault((collection, contract), np.zeros_like(total))
        whole += total
        rows.append(_row("split", collection, contract, split, total))
    rows += [_row("collection", c, k, None, total) for (c, k), total in by_collection.items()]
    return rows


def _row(level: str, collection: str, contract: str, split: str | None, sums: np.ndarray) -> CviRow:
    n, d = int(sums[0]), float(sums[1])  # counts of ones: exact in float64
    s_v, s_t = np.split(sums[2:], 2)
    image_dispersion = 1 - float(s_v @ s_v) / (n * n)
    text_dispersion = 1 - float(s_t @ s_t) / (n * n)
    margin = d / n - (float(s_v @ s_t) - d) / (n * (n - 1)) if n > 1 else None
    spread = math.sqrt(max(image_dispersion, 0) * max(text_dispersion, 0))
    cvi = spread * margin if margin is not None else None
    return CviRow(
        level, collection, contract, split, n, image_dispersion, text_dispersion, margin, cvi
    )


def differences(ours: Sequence[CviRow], baseline: Sequence[CviRow]) -> dict[str, float]:
    """The largest absolute difference of each part; Disagreement on other groups, other
    pair counts or a margin defined on one side only."""
    mine = {_key(r): r for r in ours}
    theirs = {_key(r): r for r in baseline}
    if mine.keys() != theirs.keys():
        raise Disagreement(f"different groups: {sorted(mine.keys() ^ theirs.keys())[:5]}")
    worst = dict.fromkeys(PARTS, 0.0)
    for key, row in mine.items():
        other = theirs[key]
        if row.pairs != other.pairs:
            raise Disagreement(f"{key}: {row.pairs} pairs against {other.pairs}")
        for part in PARTS:
            a, b = getattr(row, part), getattr(other, part)
            if (a is None) != (b is None):
                raise Disagreement(f"{key}: {part} is {a} against {b}")
            if a is not None:
                worst[part] = max(worst[part], abs(a - b))
    return worst


def check(doc: dict[str, Any]) -> None:
    """Disagreement unless the document's two CVI computations agree to TOLERANCE."""
    worst = doc["cvi"]["max_abs_difference"]
    if max(worst.values()) >= TOLERANCE:
        raise Disagreement(f"DuckDB and numpy differ by {TOLERANCE} or more: {worst}")


def _key(row: CviRow) -> Key:
    return row.level, row.collection, row.contract, row.split


def _fresh(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a forked process, with the peak RSS it reached there."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        result: dict[str, Any] = pool.submit(_measured, fn, *args).result()
    return result


def _measured(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    # A forked child starts with the bench's pages resident: reset the peak to them
    # and report both, so the difference is fn's own.
    meter = Meter(reset_peak=True)
    result = fn(*args)
    return result | {"peak_rss_mib": meter.peak_rss_mib(), "start_rss_mib": meter.start_rss_mib}


def _read_through(files: Sequence[str]) -> float:
    """Read every file once, so both contenders find them in the page cache."""
    meter = Meter()
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    return meter.seconds()


def cvi_bench(args: argparse.Namespace) -> dict[str, Any]:
    """DuckDB's CVI against numpy's on the generated set."""
    vectors = VectorSet(args.pairs, args.dim, args.collections, args.seed, args.per_file)
    data = generate(vectors, args.cache)
    files = data.pop("files")
    size = sum(Path(f).stat().st_size for f in files)
    cached_seconds = _read_through(files)
    ours = _fresh(duckdb_cvi, files, args.threads)
    baseline = _fresh(numpy_cvi, files)
    worst = differences(ours.pop("rows"), baseline["rows"])
    ratio = ours["seconds"] / baseline["seconds"]
    rows: list[CviRow] = baseline.pop("rows")
    cvis = [r.cvi for r in rows if r.level == "collection" and r.cvi is not None]
    return {
        "data": {
            **asdict(vectors),
            "files": len(files),
            "gigabytes": round(size / 1e9, 2),
            "groups": len(rows),
            "largest_collection": max(r.pairs for r in rows),
            "single_pair_collections": sum(r.pairs == 1 for r in rows if r.level == "collection"),
            "cvi_range": [round(min(cvis), 4), round(max(cvis), 4)],
            "read_into_page_cache_seconds": round(cached_seconds, 1),
            **data,
        },
        "duckdb": _rates(ours, args.pairs),
        "baseline": {"name": "numpy (pyarrow reads, float64 per-group sums)"}
        | _rates(baseline, args.pairs),
        "duckdb_over_numpy_seconds": round(ratio, 2),
        "max_abs_difference": {k: float(f"{v:.3g}") for k, v in worst.items()},
        "tolerance": TOLERANCE,
    }


def _rates(result: dict[str, Any], pairs: int) -> dict[str, Any]:
    seconds = result.pop("seconds")
    return {"seconds": round(seconds, 2), "pairs_per_s": round(pairs / seconds)} | result


def embed_bench(args: argparse.Namespace) -> dict[str, Any]:
    """embed_split (embedding and parquet writes) against embed_shards alone on the same
    groups, in turn ``--repeats`` times after a warm-up shard; then a resume."""
    device = resolve_device(args.device)
    shards = prepared_of(args).split(args.split)
    torch.manual_seed(0)
    clip = load_clip(args.architecture, None, LOCAL, device)
    options: dict[str, Any] = {
        "device": device, "batch_size": args.batch_size, "precision": args.precision,
        "workers": args.workers,
    }  # fmt: skip
    groups = [ShardSet(shards.url, {n: shards.sizes[n] for n in g}) for g in shard_groups(shards)]
    first = sorted(shards.sizes)[0]
    embed_shards(clip, ShardSet(shards.url, {first: shards.sizes[first]}), LOCAL, **options)
    baseline: list[float] = []
    writes: list[float] = []
    written: list[SplitEmbeddings] = []
    with tempfile.TemporaryDirectory(prefix="nft1000-bench-cvi-") as out:
        for repeat in range(args.repeats):
            seconds, write_seconds, pairs = _embed_alone(clip, groups, options)
            baseline.append(seconds)
            writes.append(write_seconds)
            written.append(embed_split(clip, shards, f"{out}/{repeat}", LOCAL, **options))
            stored = sum(pq.read_metadata(f).num_rows for f in written[-1].files)
            if written[-1].embedded != pairs or stored != pairs:
                raise AssertionError(
                    f"embed_split embedded {written[-1].embedded} and stored {stored} pairs, "
                    f"embed_shards {pairs}"
                )
        resumed = embed_split(clip, shards, f"{out}/{args.repeats - 1}", LOCAL, **options)
    best = min(w.seconds for w in written)
    return {
        "config": {
            "architecture": Path(args.architecture).name,
            "pretrained": "none (random init)",
            "device": str(device),
            "split": args.split,
            "repeats": args.repeats,
            **{k: v for k, v in options.items() if k != "device"},
        },
        "pairs": pairs,
        "groups": len(groups),
        "embed_split": {
            "pairs_per_s": round(pairs / best, 1),
            "seconds_per_run": [round(w.seconds, 2) for w in written],
        },
        "baseline": {
            "name": "tasks.evaluate.embed.embed_shards alone (no parquet), same groups",
            "pairs_per_s": round(pairs / min(baseline), 1),
            "seconds_per_run": [round(s, 2) for s in baseline],
        },
        "writer_overhead": round(best / min(baseline) - 1, 3),
        "to_parquet_seconds": round(min(writes), 3),
        "note": "best of the runs; the writer alone: to_parquet of the baseline's vectors",
        "resume": {
            "embedded": resumed.embedded,
            "seconds": round(resumed.seconds, 4),
            "seconds_per_group": round(resumed.seconds / len(groups), 4),
        },
    }


def _embed_alone(
    clip: ClipModel, groups: Sequence[ShardSet], options: dict[str, Any]
) -> tuple[float, float, int]:
    """embed_shards on each group as embed_split calls it: its seconds (the data loader's
    start included), the seconds to_parquet takes on its vectors, and the pairs."""
    seconds = write_seconds = 0.0
    pairs = 0
    for group in groups:
        meter = Meter()
        workers = min(options["workers"], len(group.sizes))
        result = embed_shards(clip, group, LOCAL, **options | {"workers": workers})
        seconds += meter.lap()
        pairs += len(result.keys)
        embeddings_to_parquet(result.tokens, result.images.numpy(), result.texts.numpy())
        write_seconds += meter.lap()
    return seconds, write_seconds, pairs


def run(args: argparse.Namespace) -> dict[str, Any]:
    meter = Meter()
    cvi = cvi_bench(args)
    embed = embed_bench(args)
    return {
        "benchmark": "cvi",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "note": "a shared machine: single runs, times are noisy",
        },
        "quick": args.quick,
        "cvi": cvi,
        "embed": embed,
        "seconds": round(meter.seconds(), 1),
    }


def parser(quick: bool = False) -> argparse.ArgumentParser:
    """The bench's arguments; ``quick`` makes the defaults tiny (for the test)."""
    small = QUICK if quick else {}
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check, not a measure")
    add_arguments(p, **{k: small[k] for k in ("tokens", "per_shard") if k in small})
    p.add_argument("--pairs", type=int, default=small.get("pairs", 1_000_000))
    p.add_argument("--dim", type=int, default=small.get("dim", 512))
    p.add_argument("--collections", type=int, default=small.get("collections", 1_000))
    p.add_argument("--per-file", type=int, default=small.get("per_file", 50_000))
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads; default: all")
    p.add_argument("--architecture", default=TINY_ARCHITECTURE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "amp"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument(
        "--repeats", type=int, default=small.get("repeats", 3), help="embedding runs of each"
    )
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with the defaults ``--quick`` picks."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--quick", action="store_true")
    quick: bool = first.parse_known_args(argv)[0].quick
    return parser(quick).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the JSON, then fail if the two CVI computations disagree."""
    doc = run(parse(argv))
    print(json.dumps(doc, indent=2), flush=True)
    check(doc)


if __name__ == "__main__":
    main()
