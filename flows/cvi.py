"""`nft1000/cvi`: the Comprehensive Variance Index of every collection of an export.

Orchestration only. Embeds each split's images and captions with a model
(tasks.evaluate.embed: float16 parquet under ``embeddings/<id>/<split>/``, one file
per group of shards, so a stopped run resumes and nothing is embedded twice),
computes CVI and its parts per collection and per split in one DuckDB scan
(sql/evaluate/cvi.sql), and sets each beside the within-collection top-1 of the same
pairs with Spearman's rank correlation between the two (does CVI rank
difficulty?). Writes ``tables/cvi/<id>.parquet`` (the ``cvi`` view of
`nft1000 sql`), ``reports/cvi/<id>.json`` and PNG plots, and table, image and
markdown artifacts.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.runner import artifact_key, task_runner
from tasks.core import paths
from tasks.core.folders import open_bucket
from tasks.core.s3 import presigned_link
from tasks.core.settings import Settings, load_settings
from tasks.evaluate import (
    CviPoint,
    CviRow,
    correlations,
    cvi_bars,
    cvi_run_id,
    cvi_scatter,
    embed_split,
    exported_splits,
    measure_cvi,
    split_listing,
)
from tasks.export import HOLDOUT
from tasks.train import (
    has_finished_run,
    load_clip,
    open_shards,
    resolve_device,
    resolve_model,
    resolve_precision,
)

SETTINGS = load_settings()
# The token-level holdout (nft1000/export holdout=N) is measured like a test split.
SPLITS = ("train", "test", HOLDOUT)


@flow(name="nft1000", task_runner=task_runner(SETTINGS), log_prints=True)
def cvi(
    model: str = "latest",
    architecture: str | None = None,
    data: str | None = None,
    splits: list[str] | None = None,
    batch_size: int = 256,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    workers: int = 4,
    force: bool = False,
) -> dict[str, Any]:
    """CVI of each collection and split of the export at ``data`` (default: the
    webdataset export), with ``model`` as nft1000/evaluate names it ("latest" falls
    back to the configured pretrained model when no finetune run has finished).
    ``force`` embeds again what an earlier run embedded."""
    logger = get_run_logger()
    settings = SETTINGS
    if model == "latest" and not has_finished_run(settings):
        logger.warning("no finished nft1000/finetune run: using the configured pretrained model")
        model = "pretrained"
    ref = resolve_model(model, architecture, settings)
    root = (data or paths.url(settings, paths.export(paths.WEBDATASET))).rstrip("/")
    present = exported_splits(root, splits or SPLITS, settings)
    if not present:
        raise ValueError(f"no split of {list(splits or SPLITS)} is exported under {root}")
    run_id = cvi_run_id(ref.label, root, split_listing(root, present, settings))
    out_root = paths.url(settings, paths.embeddings(run_id))
    doc = {"model": ref.label, "architecture": ref.architecture, "weights": ref.weights}
    open_bucket(settings).put(
        paths.embeddings_model(run_id), json.dumps(doc | {"data": root}).encode()
    )

    device = resolve_device(settings.device)
    clip = load_clip(ref.architecture, ref.weights, settings, device)
    files: list[str] = []
    key = artifact_key("cvi", ref.label, "embed")
    progress = UUID(str(create_progress_artifact(0.0, key=key)))
    for number, split in enumerate(present):

        def report(done: int, total: int, number: int = number) -> None:
            update_progress_artifact(progress, 100.0 * (number + done / total) / len(present))

        result = embed_split(
            clip,
            open_shards(f"{root}/{split}", settings),
            f"{out_root}/{split}",
            settings,
            device=device,
            batch_size=batch_size,
            precision=resolve_precision(precision, device),
            workers=workers,
            force=force,
            on_group=report,
        )
        logger.info(
            "%s: %d files, %d pairs embedded now at %.0f/s",
            split,
            len(result.files),
            result.embedded,
            result.per_second,
        )
        files += result.files
    del clip

    results = paths.url(settings, paths.cvi_results(run_id))
    rows = measure_cvi(
        settings,
        files,
        model=ref.label,
        data=root,
        url=results,
        device=device,
    )
    rho = correlations(rows)
    reports = _reports(settings, run_id, ref.label, root, rows, rho)
    return {
        "model": ref.label,
        "data": root,
        "embeddings": out_root,
        "results": results,
        "collections": sum(r.level == "collection" for r in rows),
        "spearman": rho,
        "reports": reports,
    }


def _reports(
    settings: Settings,
    run_id: str,
    label: str,
    root: str,
    rows: list[CviRow],
    rho: dict[str, float | None],
) -> dict[str, str]:
    """Plots and the JSON report under reports/cvi/, and the run's artifacts."""
    bucket = open_bucket(settings)
    whole = [r for r in rows if r.level == "collection"]
    plots = {"bars": cvi_bars(whole, f"CVI of {label} on {root}")}
    for group in rho:
        points = [
            CviPoint(r.collection, r.cvi, r.top1, r.pairs)
            for r in rows
            if (r.split or "collection") == group and r.cvi is not None and r.top1 is not None
        ]
        title = f"CVI against top-1 ({group}) of {label}"
        plots[f"scatter-{group}"] = cvi_scatter(points, rho[group], title)
    plot_paths = {name: paths.report("cvi", f"{run_id}-{name}.png") for name in plots}
    for name, png in plots.items():
        bucket.put(plot_paths[name], png)
    doc = {
        "model": label,
        "data": root,
        "spearman": rho,
        "rows": [asdict(r) for r in rows],
    }
    json_path = paths.report("cvi", f"{run_id}.json")
    bucket.put(json_path, json.dumps(doc, indent=1).encode())
    _artifacts(settings, doc, plot_paths)
    return plot_paths | {"json": json_path}


def _artifacts(settings: Settings, doc: dict[str, Any], paths: dict[str, str]) -> None:
    label = str(doc["model"])
    table = [
        {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        for row in doc["rows"]
    ]
    create_table_artifact(
        table, key=artifact_key("cvi", label), description=f"CVI of {label} on {doc['data']}"
    )
    links = {name: presigned_link(settings, path) for name, path in paths.items()}
    for name, link in links.items():
        create_image_artifact(link, key=artifact_key("cvi", label, name))
    lines = [f"## CVI of {label}", "", f"Data: `{doc['data']}`", ""]
    lines += ["| pairs of | Spearman's rho, CVI against within-collection top-1 |", "|---|---|"]
    undefined = "undefined (fewer than 3 collections, or all tied)"
    lines += [
        f"| {group} | {undefined if r is None else f'{r:.3f}'} |"
        for group, r in doc["spearman"].items()
    ]
    lines += ["", *(f"- {name} (link valid 7 days): {url}" for name, url in links.items())]
    create_markdown_artifact("\n".join(lines), key=artifact_key("cvi", label, "summary"))
