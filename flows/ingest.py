"""`nft1000/ingest`: read collections from Ethereum and store their tokens in S3.

Orchestration only. Each collection is planned (contract facts, token id
range, shards of ~1,000 tokens); shards run as plain synchronous tasks on Dask,
each driving its own asyncio loop for downloads. Progress shows in the Prefect
UI as one progress artifact per collection and a summary table at the end, whose
``reveal`` column says which collections look unrevealed (one placeholder image for
most tokens: re-ingest them after their reveal).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed

from flows.runner import artifact_key, failed_by_reason, task_runner
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.ingest import (
    BlockSpec,
    CollectionPlan,
    CollectionTarget,
    IngestResult,
    ingest_block,
    load_registry,
    parse_target,
    plan_collection,
    registry_files,
    summarize,
)

SETTINGS = load_settings()


@task(name="plan-collection", retries=2, retry_delay_seconds=5)
def plan_task(target: CollectionTarget, settings: Settings) -> CollectionPlan:
    """Contract facts and id range cut into blocks; node failures raise and are retried."""
    return plan_collection(target, settings)


@task(
    name="ingest-block",
    retries=2,
    retry_delay_seconds=10,
    task_run_name="{spec.collection} {spec.name}",
)
def block_task(spec: BlockSpec, settings: Settings) -> IngestResult:
    """One block end to end; a retry resumes from the block's checkpoints."""
    return ingest_block(spec, settings)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def ingest(
    collections: list[str] | None = None,
    shard_size: int | None = None,
    refetch_unrevealed: bool = False,
) -> list[dict[str, object]]:
    """Ingest collections named in the registry or by address (see tasks.ingest.registry).

    ``refetch_unrevealed``: fetch again the stored tokens that show their block's
    placeholder image, for a re-ingest after a reveal (`nft1000 summary` lists the
    collections due for one); other stored tokens are never fetched again.
    """
    logger = get_run_logger()
    settings = SETTINGS if shard_size is None else SETTINGS.replace(shard_size=shard_size)
    specs = collections or list(settings.collections)
    if not specs:
        raise ValueError("no collections given and NFT1000_COLLECTIONS is empty")
    registry = load_registry(registry_files(settings.registries))
    targets = [parse_target(s, registry) for s in specs]
    addresses = [t.address for t in targets]
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"a contract is named twice in {specs}: give each collection once")
    ObjectStore(settings).ensure_bucket()
    started = time.monotonic()

    plans = [plan_task.submit(t, settings) for t in targets]
    shard_futures: list[PrefectFuture[IngestResult]] = []
    progress: dict[str, UUID] = {}
    totals: dict[str, _Totals] = {}
    broken: list[str] = []
    for planned in plans:
        plan = planned.result()
        name = plan.name
        if plan.error:
            logger.error("%s (%s) not ingested: %s", name, plan.target.address, plan.error)
            broken.append(f"{name}: {plan.error}")
        logger.info("%s (%s): %d blocks", name, plan.target.address, len(plan.blocks))
        totals[plan.target.address] = _Totals(name, plan.target.address, len(plan.blocks))
        progress[plan.target.address] = cast(
            UUID,
            create_progress_artifact(
                0.0, key=artifact_key("ingest", name), description=f"{name}: blocks done"
            ),
        )
        blocks = [replace(s, refetch_placeholders=refetch_unrevealed) for s in plan.blocks]
        shard_futures += [block_task.submit(s, settings) for s in blocks]

    for done in as_completed(shard_futures):
        try:
            result = done.result()
        except Exception as e:  # a shard whose infrastructure failed after its retries
            broken.append(f"{done.task_run_id}: {e}")
            continue
        total = totals[result.contract]
        total.add(result, time.monotonic() - started)
        update_progress_artifact(
            progress[result.contract], 100.0 * total.shards_done / total.shards
        )

    overall = _Totals("all collections", "-", sum(t.shards for t in totals.values()))
    for t in totals.values():
        overall.add(t.result, time.monotonic() - started)
    # Read from every manifest of the collections, so tokens stored by earlier runs count.
    reveal = {r["contract"]: r["reveal"] for r in summarize(ObjectStore(settings), list(totals))}
    rows = [t.row() | {"reveal": reveal.get(t.contract, "")} for t in totals.values()]
    rows.append(overall.row() | {"reveal": ""})
    for row in rows:
        if row["reveal"]:
            logger.warning("%s looks unrevealed (%s)", row["collection"], row["reveal"])
    create_table_artifact(rows, key="ingest-summary", description="nft1000/ingest summary")
    for row in rows:
        logger.info("%s", row)
    if broken:
        # Tokens of finished shards are stored; a rerun resumes the broken ones.
        raise RuntimeError(
            f"{len(broken)} collection(s) or shard(s) failed: " + "; ".join(broken)[:2000]
        )
    return rows


class _Totals:
    """A collection's shard results summed, and the seconds from flow start to its last."""

    def __init__(self, name: str, contract: str, shards: int) -> None:
        self.name, self.contract, self.shards = name, contract, shards
        self.shards_done = 0
        self.result = IngestResult(name, contract)
        self.seconds = 0.0

    def add(self, r: IngestResult, elapsed: float) -> None:
        self.shards_done += 1
        self.seconds = elapsed
        self.result.merge(r)

    def row(self) -> dict[str, object]:
        t = self.result
        fetched = t.tokens - t.skipped
        return {
            "collection": self.name,
            "contract": self.contract,
            "tokens": t.tokens,
            "ok": t.ok,
            "failed": sum(t.failed.values()),
            "failed_by_reason": failed_by_reason(t.failed),
            "already_done": t.skipped,
            "bytes": t.bytes,
            "new_bytes": t.new_bytes,
            "http_requests": t.http_requests,
            "rpc_round_trips": t.rpc_round_trips,
            "seconds": round(self.seconds, 1),
            # Tokens fetched this run per second since the flow started.
            "tokens_per_s": round(fetched / self.seconds, 1) if self.seconds else 0.0,
        }
