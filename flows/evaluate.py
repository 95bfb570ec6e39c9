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

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from flows.runner import artifact_key, task_runner
from tasks.core import paths
from tasks.core.folders import open_bucket
from tasks.core.s3 import presigned_link
from tasks.core.settings import Settings, load_settings
from tasks.evaluate import (
    ALL,
    KS,
    POOLS,
    embed_shards,
    evaluate,
    held_out_split,
    result_rows,
    retrieval_result_id,
    save_results,
    topk_plot,
)
from tasks.train import load_clip, open_shards, resolve_device, resolve_model, resolve_precision

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
    ref = resolve_model(model, architecture, settings)
    if data is None:
        data = held_out_split(settings)
        if data is None:
            logger.warning("no test or holdout split exported: nothing to evaluate")
            return {"model": ref.label, "data": None, "skipped": True}
    shards = open_shards(data, settings)
    result_id = retrieval_result_id(ref.label, shards.url)
    bucket = open_bucket(settings)
    results_key = paths.retrieval_results(result_id)
    results_url = paths.url(settings, results_key)
    if not force and bucket.exists(results_key):
        logger.info("%s on %s was evaluated already: %s", ref.label, shards.url, results_url)
        return {"model": ref.label, "data": shards.url, "results": results_url, "skipped": True}

    device = resolve_device(settings.device)
    clip = load_clip(ref.architecture, ref.weights, settings, device)
    embedded = embed_shards(
        clip,
        shards,
        settings,
        device=device,
        batch_size=batch_size,
        precision=resolve_precision(precision, device),
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
        row
        for pool in results.values()
        for row in result_rows(pool, model=ref.label, data=shards.url)
    ]
    save_results(settings, rows, results_url)

    plot = paths.report("retrieval", f"{result_id}.png")
    bucket.put(plot, topk_plot(results, f"{ref.label} on {shards.url}"))
    _artifacts(settings, rows, ref.label, shards.url, plot)
    summary = {
        pool: {f"top{k}": round(r.micro(k), 4) for k in r.ks}
        | {f"macro_top{k}": round(r.macro(k), 4) for k in r.ks}
        for pool, r in results.items()
    }
    return {
        "model": ref.label,
        "data": shards.url,
        "pairs": len(embedded.keys),
        "embed_per_second": round(embedded.per_second, 1),
        "results": results_url,
        "accuracy": summary,
        "skipped": False,
    }


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
