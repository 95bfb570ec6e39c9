"""`nft1000/evaluate`: text-to-image top-K accuracy of a model on the exported test shards.

Orchestration only. Embeds the shards' images and captions (tasks.evaluate.embed), ranks
every caption's image within its collection and among all collections, exactly
and in blocks (tasks.evaluate.retrieval), and writes one row per (model, data, pool,
collection, K) to ``tables/retrieval_results/<id>.parquet`` (the
``retrieval_results`` view of `nft1000 sql`), a PNG plot beside it under
``reports/``, and table, image and markdown artifacts. Runs after every
finished nft1000/finetune (a trigger) and on a schedule; results already there
for the same model and data are not computed again unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from flows.runner import artifact_key, task_runner
from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.folders import open_folder
from tasks.core.s3 import presigned_link
from tasks.core.settings import Settings, load_settings
from tasks.core.sql import quote
from tasks.evaluate.embed import embed_shards
from tasks.evaluate.plots import topk_plot
from tasks.evaluate.retrieval import ALL, KS, POOLS, evaluate, result_rows, upsert_results
from tasks.export.items import HOLDOUT
from tasks.train.loop import resolve_device
from tasks.train.model import load_clip
from tasks.train.shards import SIZES, open_shards

SETTINGS = load_settings()


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def evaluate_model(
    model: str = "latest",
    architecture: str | None = None,
    data: str | None = None,
    pools: list[str] | None = None,
    ks: list[int] | None = None,
    batch_size: int = 256,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    workers: int = 4,
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` (default: the webdataset export's test split, else
    its token-level ``holdout`` split where no collection is a test collection, as in
    the demo).

    ``model``: "latest" (the last finished nft1000/finetune run), a run name under
    ``models/``, "pretrained" (the settings' model with its pretrained weights,
    the zero-shot baseline) or a checkpoint file (local or s3://, with
    ``architecture``).
    """
    logger = get_run_logger()
    settings = SETTINGS
    arch, weights, label = resolve_model(model, architecture, settings)
    if data is None:
        data = _held_out_split(settings)
        if data is None:
            logger.warning("no test or holdout split exported: nothing to evaluate")
            return {"model": label, "data": None, "skipped": True}
    shards = open_shards(data, settings)
    result_id = hashlib.sha256(f"{label}\n{shards.url}".encode()).hexdigest()[:16]
    results_url = f"{paths.tables_root(settings)}/retrieval_results/{result_id}.parquet"
    tables = open_folder(paths.tables_root(settings), settings)
    if not force and tables.exists(f"retrieval_results/{result_id}.parquet"):
        logger.info("%s on %s was evaluated already: %s", label, shards.url, results_url)
        return {"model": label, "data": shards.url, "results": results_url, "skipped": True}

    device = resolve_device(settings.device)
    chosen = "bf16" if precision == "auto" and device.type == "cuda" else precision
    clip = load_clip(arch, weights, settings, device)
    embedded = embed_shards(
        clip,
        shards,
        settings,
        device=device,
        batch_size=batch_size,
        precision="fp32" if chosen == "auto" else chosen,
        workers=workers,
    )
    logger.info("embedded %d pairs at %.0f/s", len(embedded.keys), embedded.per_second)
    results = evaluate(
        embedded.images,
        embedded.texts,
        list(embedded.groups),
        pools=pools or POOLS,
        ks=ks or KS,
        device=device,
    )
    rows = [
        row for pool in results.values() for row in result_rows(pool, model=label, data=shards.url)
    ]
    con = connect(settings)
    try:
        upsert_results(con, rows)
        con.execute(f"COPY retrieval_results TO {quote(results_url)} (FORMAT parquet)")
    finally:
        con.close()

    png = topk_plot(results, f"{label} on {shards.url}")
    reports = open_folder(paths.url(settings, "reports", "retrieval"), settings)
    reports.put(f"{result_id}.png", png)
    _artifacts(settings, rows, label, shards.url, f"reports/retrieval/{result_id}.png")
    summary = {
        pool: {f"top{k}": round(r.micro(k), 4) for k in r.ks}
        | {f"macro_top{k}": round(r.macro(k), 4) for k in r.ks}
        for pool, r in results.items()
    }
    return {
        "model": label,
        "data": shards.url,
        "pairs": len(embedded.keys),
        "embed_per_second": round(embedded.per_second, 1),
        "results": results_url,
        "accuracy": summary,
        "skipped": False,
    }


def _held_out_split(settings: Settings) -> str | None:
    """The export's test split, else its holdout split; None when it has neither."""
    for split in ("test", HOLDOUT):
        url = paths.url(settings, "exports", "webdataset", split)
        if open_folder(url, settings).exists(SIZES):
            return url
    return None


def resolve_model(model: str, architecture: str | None, settings: Settings) -> tuple[str, str, str]:
    """(architecture, weights, label) of what ``model`` names."""
    if model == "pretrained":
        arch = architecture or settings.model
        return arch, settings.pretrained, f"{arch}:{settings.pretrained or 'random'}"
    if model.endswith(".pt"):
        arch = architecture or settings.model
        return arch, model, model
    models = open_folder(paths.url(settings, "models"), settings)
    pointer = "latest.json" if model == "latest" else f"{model}/latest.json"
    if not models.exists(pointer):
        raise ValueError(f"no finished nft1000/finetune run at models/{pointer}")
    doc = json.loads(models.get(pointer))
    return str(doc["architecture"]), str(doc["model"]), f"{doc['name']}/{doc['run_id']}"


def _artifacts(settings: Settings, rows: list[Any], label: str, data: str, plot_path: str) -> None:
    table = [
        {
            "pool": r.pool,
            "collection": r.collection,
            "k": r.k,
            "accuracy": round(r.accuracy, 4),
            "macro_accuracy": None if r.macro_accuracy is None else round(r.macro_accuracy, 4),
            "queries": r.queries,
        }
        for r in rows
    ]
    key = artifact_key("evaluate", label)
    create_table_artifact(table, key=key, description=f"Top-K accuracy of {label} on {data}")
    url = presigned_link(settings, plot_path)
    create_image_artifact(url, key=artifact_key("evaluate", label, "plot"))
    lines = [
        f"## {label}",
        "",
        f"Data: `{data}`",
        "",
        "| pool | K | all queries | mean of collections |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r.pool} | {r.k} | {r.accuracy:.3f} | {r.macro_accuracy:.3f} |"
        for r in rows
        if r.collection == ALL
    ]
    lines += ["", f"Plot (link valid 7 days): {url}"]
    create_markdown_artifact("\n".join(lines), key=artifact_key("evaluate", label, "summary"))
