"""`nft1000/finetune`: fine-tune CLIP on the exported shards, plain or with dynamic masking.

Orchestration only. For dynamic masking, each training collection's trait masks
are built first where missing or stored without a drawing order (one Dask task per
collection, tasks.train.masks.store: official layers where configured, else derived
from its training images; a masked trait paints only where it is visible). Then
the model trains in this flow run's process, on its GPU when it has one
(tasks.train.loop), with checkpoints and logs in S3 under ``models/<name>/<run id>/``;
a rerun of a stopped run resumes it. A finished run updates
``models/<name>/latest.json`` and ``models/latest.json``, which nft1000/evaluate
reads. Runs nightly on the `gpu` work pool (prefect.yaml).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.runner import artifact_key, task_runner
from tasks.core import paths
from tasks.core.folders import open_folder
from tasks.core.settings import Settings, load_settings
from tasks.export import ExportItem, Holdout, read_holdout
from tasks.train import (
    MaskReport,
    Mode,
    Precision,
    TrainConfig,
    TrainResult,
    build_collection_masks,
    load_all_masks,
    mask_targets,
    open_shards,
    planned_steps,
    publish_run,
    run_folder_name,
    train,
)

SETTINGS = load_settings()


@task(name="trait-masks", retries=1, retry_delay_seconds=10, task_run_name="{items[0].folder}")
def collection_masks(items: list[ExportItem], settings: Settings, layers: str | None) -> MaskReport:
    return build_collection_masks(items, settings, layers)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def finetune(
    architecture: str | None = None,
    pretrained: str | None = None,
    train_data: str | None = None,
    mode: Mode | None = None,
    mask_probability: float = 0.5,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    precision: Precision | None = None,
    compile: bool = False,
    warmup_steps: int | None = None,
    workers: int = 4,
    name: str | None = None,
    seed: int | None = None,
    rebuild_masks: bool = False,
) -> dict[str, Any]:
    """Train a CLIP on the training shards (default: the latest webdataset export).

    ``architecture``/``pretrained`` default to the settings' model (NFT1000_MODEL,
    NFT1000_PRETRAINED); ``pretrained`` is an open_clip tag, a checkpoint file
    (local or s3://) or "" for random weights. ``mode``, ``lr``, ``epochs``,
    ``batch_size``, ``precision`` and ``warmup_steps`` left out come from the
    model's measured defaults where its config has them (the tiny CLIP's
    ``training.json``), else dynamic masking, 1 epoch, batch 256, bf16, 100 warm-up
    steps and the authors' rate for the mode. ``name`` names the run folder
    (default: architecture and mode).
    """
    logger = get_run_logger()
    settings = SETTINGS
    config = TrainConfig.resolve(
        architecture or settings.model,
        settings.pretrained if pretrained is None else pretrained,
        mode=mode,
        mask_probability=mask_probability,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        precision=precision,
        compile=compile,
        warmup_steps=warmup_steps,
        workers=workers,
        seed=settings.seed if seed is None else seed,
    )
    shards = open_shards(
        train_data or paths.url(settings, paths.export(paths.WEBDATASET, "train")), settings
    )
    masks: dict[str, Any] = {}
    if config.mode == "dynamic-mask":
        reports = _ensure_masks(settings, rebuild_masks, read_holdout(shards.url, settings))
        if reports:
            _mask_artifact(reports)
        masks = load_all_masks(settings)
        logger.info("dynamic masking with the masks of %d collections", len(masks))
    run_name = name or run_folder_name(config)
    run_id = config.run_id(shards)
    out_url = paths.url(settings, paths.run_folder(run_name, run_id))
    progress = cast(
        UUID, create_progress_artifact(0.0, key=artifact_key("finetune", run_name, "progress"))
    )
    expected = max(1, planned_steps(config, shards))

    def on_log(entry: dict[str, Any]) -> None:
        update_progress_artifact(progress, min(100.0, 100.0 * entry["step"] / expected))
        logger.info("step %(step)d epoch %(epoch)d loss %(loss).4f lr %(lr).2e", entry)

    result = train(
        config,
        shards,
        settings,
        open_folder(out_url, settings),
        masks,
        device=settings.device,
        on_log=on_log,
    )
    update_progress_artifact(progress, 100.0)
    pointer = publish_run(settings, run_name, result.run_id, config, shards.url)
    _training_artifacts(result, run_name, out_url)
    return pointer | {"steps": result.steps, "resumed_from_step": result.resumed_from_step}


def _ensure_masks(settings: Settings, rebuild: bool, holdout: Holdout | None) -> list[MaskReport]:
    """Build, one Dask task each, the masks of every training collection that has none."""
    layers = dict(entry.split("=", 1) for entry in settings.trait_layers if "=" in entry)
    futures = [
        collection_masks.submit(items, settings, layers.get(items[0].collection))
        for items in mask_targets(settings, holdout, rebuild=rebuild)
    ]
    reports = [future.result() for future in futures]
    for report in reports:
        if not report.values:
            get_run_logger().warning("%s: no trait has a mask; trains unmasked", report.collection)
    return reports


def _mask_artifact(reports: list[MaskReport]) -> None:
    rows = [
        {
            "collection": r.collection,
            "source": r.source,
            "values": r.values,
            "tokens": r.tokens,
            "derived_vs_official_iou": None if r.mean_iou is None else round(r.mean_iou, 3),
            "values_compared": r.iou_values,
        }
        for r in reports
    ]
    create_table_artifact(rows, key="trait-masks", description="Trait masks built for training")


def _training_artifacts(result: TrainResult, run_name: str, out_url: str) -> None:
    rows = [asdict(e) for e in result.epochs]
    create_table_artifact(
        rows,
        key=artifact_key("finetune", run_name, "epochs"),
        description=f"{run_name} run {result.run_id}: loss and throughput per epoch",
    )
    state = "was already finished" if result.finished_before else f"trained on {result.device}"
    create_markdown_artifact(
        f"## {run_name} ({result.run_id})\n\n"
        f"- {result.steps} steps; {state}; resumed from step {result.resumed_from_step}\n"
        f"- model: `{out_url}/model.pt`, log: `{out_url}/log.jsonl`\n",
        key=artifact_key("finetune", run_name),
    )
