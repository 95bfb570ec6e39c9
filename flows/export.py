"""`nft1000/export`: the dataset in the formats people train on, to S3 or a folder.

Orchestration only. ``webdataset``: tar shards of a fixed number of samples per
split, each shard one Dask task (tasks.export.webdataset), then the shard lists that
open_clip_train reads. ``nft1000``: the released NFT1000 folder layout, one Dask
task per block of a collection (tasks.export.layout_export), plus each collection's
metadata_dashboard.json. Both are resumable: what is already written is skipped.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture

from flows.runner import failed_by_reason, task_runner
from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.settings import Settings, load_settings
from tasks.export import (
    HOLDOUT,
    SPLITS,
    ExportItem,
    Holdout,
    LayoutExportResult,
    ShardOptions,
    ShardPlan,
    ShardResult,
    copy_dashboards,
    export_batch,
    export_items,
    layout_batches,
    plan_shards,
    write_index,
    write_shard,
)

SETTINGS = load_settings()


@task(
    name="export-shard",
    retries=2,
    retry_delay_seconds=10,
    task_run_name="{plan.split} {plan.index}",
)
def export_shard(
    plan: ShardPlan, destination: str, settings: Settings, options: ShardOptions
) -> ShardResult:
    return write_shard(plan, destination, settings, options)


@task(name="export-layout", retries=2, retry_delay_seconds=10)
def export_layout_batch(
    items: list[ExportItem], destination: str, settings: Settings
) -> LayoutExportResult:
    return export_batch(items, destination, settings)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def export(
    format: Literal["webdataset", "nft1000"] = "webdataset",
    destination: str | None = None,
    splits: list[str] | None = None,
    mini_only: bool = False,
    samples_per_shard: int = 1000,
    shortest_side: int = 256,
    image_format: Literal["png", "jpg"] = "png",
    seed: int | None = None,
    holdout: int = 0,
    include_unrevealed: bool = False,
) -> dict[str, Any]:
    """Export the tables' tokens (images with their preferred caption and prompt).

    ``holdout``: per collection, this many train-split tokens (a seeded draw) are
    exported as split ``holdout`` instead, to evaluate on tokens never trained on
    where every collection is a training collection (the demo).
    ``include_unrevealed``: export unrevealed placeholders too (left out by default).
    """
    settings = SETTINGS
    target = destination or paths.url(settings, paths.export(format))
    chosen = list(splits or SPLITS)
    if holdout and HOLDOUT not in chosen:
        chosen.append(HOLDOUT)
    seed = settings.seed if seed is None else seed
    con = connect(settings)
    try:
        if format == "webdataset":
            options = ShardOptions(shortest_side=shortest_side, image_format=image_format)
            return _webdataset(
                con, target, chosen, mini_only, samples_per_shard, seed, holdout, options,
                include_unrevealed,
            )  # fmt: skip
        return _layout(con, target, chosen, mini_only, seed, holdout, include_unrevealed)
    finally:
        con.close()


def _webdataset(
    con: Any,
    target: str,
    splits: list[str],
    mini_only: bool,
    samples_per_shard: int,
    seed: int,
    holdout: int,
    options: ShardOptions,
    include_unrevealed: bool,
) -> dict[str, Any]:
    settings = SETTINGS
    futures: list[PrefectFuture[ShardResult]] = []
    for split in splits:
        items = export_items(
            con,
            paths.tables_root(settings),
            splits=[split],
            mini_only=mini_only,
            shuffled=True,
            seed=seed,
            holdout=holdout,
            include_unrevealed=include_unrevealed,
        )
        futures += [
            export_shard.submit(plan, target, settings, options)
            for plan in plan_shards(split, items, samples_per_shard)
        ]
    results = [f.result() for f in futures]
    index = write_index(target, settings, results, options, Holdout(holdout, seed))
    rows = [
        {
            "split": split,
            "shards": len(info["shards"]),
            "samples": info["samples"],
            "failed": info["failed"],
            "train_data": info["train_data"],
        }
        for split, info in index["splits"].items()
    ]
    create_table_artifact(rows, key="export-webdataset", description=f"WebDataset in {target}")
    get_run_logger().info("WebDataset shards in %s: %s", target, rows)
    return index


def _layout(
    con: Any,
    target: str,
    splits: list[str],
    mini_only: bool,
    seed: int,
    holdout: int,
    include_unrevealed: bool,
) -> dict[str, Any]:
    settings = SETTINGS
    items = export_items(
        con,
        paths.tables_root(settings),
        splits=splits,
        mini_only=mini_only,
        seed=seed,
        holdout=holdout,
        include_unrevealed=include_unrevealed,
    )
    folders: dict[str, str] = {}
    futures: list[PrefectFuture[LayoutExportResult]] = []
    for batch in layout_batches(items):
        folders[batch[0].contract] = batch[0].folder
        futures.append(export_layout_batch.submit(batch, target, settings))
    total = LayoutExportResult()
    for future in futures:
        total.merge(future.result())
    copy_dashboards(target, settings, paths.tables_root(settings), folders)
    row = {
        "collections": len(folders),
        "written": total.written,
        "already_there": total.skipped_existing,
        "failed": len(total.failed),
        "failed_by_reason": failed_by_reason(f.kind for f in total.failed),
        "bytes": total.bytes_written,
    }
    create_table_artifact([row], key="export-nft1000", description=f"NFT1000 layout in {target}")
    return row
