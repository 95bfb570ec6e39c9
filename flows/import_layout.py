"""`nft1000/import`: an NFT1000 download in the released layout as a source.

Orchestration only. Users who already have NFT1000 (or an export of ours) skip
ingest: each collection block's metadata and images are stored as blobs with a
manifest exactly where ingest would write it (tasks.export.layout_import), one Dask
task per block; `nft1000/tables` then builds the tables from them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.runner import failed_by_reason, task_runner
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.export import ImportBatch, ImportResult, import_batch, plan_import
from tasks.ingest import registry_files

SETTINGS = load_settings()


@task(name="import-block", retries=2, retry_delay_seconds=10)
def import_block(batch: ImportBatch, settings: Settings) -> ImportResult:
    return import_batch(batch, settings)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def import_nft1000(source: str, registries: list[str] | None = None) -> list[dict[str, object]]:
    """Import a folder (local path or s3://bucket/prefix) in the NFT1000 layout."""
    logger = get_run_logger()
    settings = SETTINGS
    ObjectStore(settings).ensure_bucket()
    paths = registry_files((*settings.registries, *(Path(p) for p in registries or ())))
    plan = plan_import(source, settings, paths)
    for error in plan.errors:
        logger.error("%s not imported (%s): %s", error.path, error.reason, error.message)
    if plan.notes_total:
        logger.warning("%d files ignored, e.g. %s", plan.notes_total, plan.notes[:5])
    results = [f.result() for f in [import_block.submit(b, settings) for b in plan.batches]]
    totals: dict[tuple[str, str], Counter[str]] = {}
    failed: dict[tuple[str, str], Counter[str]] = {}
    for r in results:
        key = (r.collection, r.contract)
        totals.setdefault(key, Counter()).update(tokens=r.tokens, ok=r.ok)
        failed.setdefault(key, Counter()).update(r.failed)
    table: list[dict[str, object]] = [
        {
            "collection": collection,
            "contract": contract,
            "tokens": count["tokens"],
            "ok": count["ok"],
            "failed_by_reason": failed_by_reason(failed[(collection, contract)]),
        }
        for (collection, contract), count in totals.items()
    ]
    table += [
        {"collection": e.path, "contract": "-", "tokens": 0, "ok": 0, "failed_by_reason": e.reason}
        for e in plan.errors
    ]
    create_table_artifact(table, key="import-summary", description=f"nft1000/import of {source}")
    return table
