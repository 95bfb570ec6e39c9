"""`nft1000/tables`: the dataset tables, from the manifests and metadata in S3.

Orchestration only. Stage one writes one tokens file per manifest block on Dask
(tasks.tables.tokens; unchanged blocks are skipped); stage two builds every other
table in DuckDB from those files (tasks.tables.build) and writes them back to S3.
Runs after each ingest or import (a deployment trigger in prefect.yaml) and on
its own.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed

from flows.runner import task_runner
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.ingest import manifest_keys
from tasks.tables import BlockResult, TablesResult, build_block, build_run_tables, prune_tokens

SETTINGS = load_settings()
BLOCKS_PER_TASK = 10  # a Dask task costs ~0.2 s; a block ~0.1-0.5 s


@task(name="tokens-blocks", retries=2, retry_delay_seconds=10)
def tokens_blocks(keys: list[str], settings: Settings, rebuild: bool) -> list[BlockResult]:
    """The tokens files of some manifest blocks."""
    store = ObjectStore(settings)
    return [build_block(store, key, force=rebuild) for key in keys]


@task(name="build-tables")
def build_all(settings: Settings, seed: int, mini_per_collection: int) -> TablesResult:
    """Every table from every tokens file, in DuckDB (in the flow's process)."""
    return build_run_tables(settings, seed, mini_per_collection)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def tables(
    seed: int | None = None, mini_per_collection: int = 1000, rebuild: bool = False
) -> dict[str, object]:
    """Build the dataset tables from everything ingested or imported so far."""
    logger = get_run_logger()
    settings = SETTINGS
    store = ObjectStore(settings)
    keys = manifest_keys(store)
    if not keys:
        raise ValueError("no manifests in the store: run nft1000/ingest or nft1000/import first")
    pruned = prune_tokens(store, keys)
    futures = [
        tokens_blocks.submit(keys[i : i + BLOCKS_PER_TASK], settings, rebuild)
        for i in range(0, len(keys), BLOCKS_PER_TASK)
    ]
    blocks = [block for done in as_completed(futures) for block in done.result()]
    built = [b for b in blocks if not b.skipped]
    logger.info(
        "tokens: %d blocks rebuilt (%d tokens), %d unchanged, %d stale files removed",
        len(built),
        sum(b.tokens for b in built),
        len(blocks) - len(built),
        pruned,
    )
    result = build_all(settings, settings.seed if seed is None else seed, mini_per_collection)
    rows = [
        {"table": name, "rows": count, "seconds": result.seconds.get(name, 0.0)}
        for name, count in result.rows.items()
    ]
    create_table_artifact(rows, key="tables-summary", description=_describe(result, built))
    create_markdown_artifact(
        "## Split notes\n\n" + "\n".join(f"- {note}" for note in result.split_notes),
        key="tables-split-notes",
        description="How the NFT1000 split's quirks were handled",
    )
    return {
        "tokens": result.tokens,
        "described": result.described,
        "left_out": result.left_out,
        "tables": result.rows,
    }


def _describe(result: TablesResult, built: list[BlockResult]) -> str:
    return (
        f"nft1000/tables: {result.tokens} tokens ({result.described} with metadata) in "
        f"{result.collections} collections; {len(built)} token blocks rebuilt; "
        f"{result.words} distinct words counted with CLIP's tokenizer; "
        f"{result.left_out} token rows left out and {result.rows.get('problems', 0)} problems "
        "recorded (see the problems table)"
    )
