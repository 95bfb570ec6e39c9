"""`nft1000/cvi`: the Comprehensive Variance Index of every collection of an export.

Orchestration only. Embeds each split's images and captions with a model
(tasks.evaluate.embedding_store: float16 parquet under ``embeddings/<id>/<split>/``, one file
per group of shards, so a stopped run resumes and nothing is embedded twice),
computes CVI and its parts per collection and per split in one DuckDB scan
(sql/evaluate/cvi.sql), and sets each beside the within-collection top-1 of the same
pairs with Spearman's rank correlation between the two (does CVI rank
difficulty?). Writes ``tables/cvi/<id>.parquet`` (the ``cvi`` view of
`nft1000 sql`), ``reports/cvi/<id>.json`` and PNG plots, and table, image and
markdown artifacts.
"""

from __future__ import annotations

import hashlib
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

from flows.evaluate import resolve_model
from flows.runner import artifact_key, task_runner
from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.folders import open_folder
from tasks.core.s3 import presigned_link
from tasks.core.settings import Settings, load_settings
from tasks.core.sql import quote
from tasks.evaluate.cvi import CviRow, correlations, cvi_results
from tasks.evaluate.embedding_files import read_files
from tasks.evaluate.embedding_store import embed_split
from tasks.evaluate.plots import CviPoint, cvi_bars, cvi_scatter
from tasks.evaluate.retrieval import within_top1
from tasks.export.items import HOLDOUT
from tasks.train.loop import resolve_device
from tasks.train.model import load_clip
from tasks.train.shards import SIZES, open_shards

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
    if model == "latest" and not open_folder(paths.url(settings, "models"), settings).exists(
        "latest.json"
    ):
        logger.warning("no finished nft1000/finetune run: using the configured pretrained model")
        model = "pretrained"
    arch, weights, label = resolve_model(model, architecture, settings)
    root = (data or paths.url(settings, "exports", "webdataset")).rstrip("/")
    exported = open_folder(root, settings)
    present = [s for s in (splits or SPLITS) if exported.exists(f"{s}/{SIZES}")]
    if not present:
        raise ValueError(f"no split of {list(splits or SPLITS)} is exported under {root}")
    # A new export (other shards or sizes) under the same root gets new embeddings.
    listing = b"".join(exported.get(f"{s}/{SIZES}") for s in present)
    run_id = hashlib.sha256(f"{label}\n{root}\n".encode() + listing).hexdigest()[:16]
    out_root = paths.url(settings, "embeddings", run_id)
    open_folder(out_root, settings).put(
        "model.json",
        json.dumps(
            {"model": label, "architecture": arch, "weights": weights, "data": root}
        ).encode(),
    )

    device = resolve_device(settings.device)
    chosen = "bf16" if precision == "auto" and device.type == "cuda" else precision
    clip = load_clip(arch, weights, settings, device)
    files: list[str] = []
    progress = UUID(str(create_progress_artifact(0.0, key=artifact_key("cvi", label, "embed"))))
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
            precision="fp32" if chosen == "auto" else chosen,
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

    rows = _measure(settings, files, label, root, run_id)
    rho = correlations(rows)
    reports = _reports(settings, run_id, label, root, rows, rho)
    return {
        "model": label,
        "data": root,
        "embeddings": out_root,
        "results": f"{paths.tables_root(settings)}/cvi/{run_id}.parquet",
        "collections": sum(r.level == "collection" for r in rows),
        "spearman": rho,
        "reports": reports,
    }


def _measure(
    settings: Settings, files: list[str], label: str, root: str, run_id: str
) -> list[CviRow]:
    """CVI (DuckDB) beside top-1 (torch) of the embeddings; the result table to S3."""
    top1 = within_top1(read_files(files, settings), device=resolve_device(settings.device))
    con = connect(settings)
    try:
        rows = cvi_results(con, files, top1, model=label, data=root)
        url = f"{paths.tables_root(settings)}/cvi/{run_id}.parquet"
        con.execute(f"COPY cvi_results TO {quote(url)} (FORMAT parquet)")
    finally:
        con.close()
    return rows


def _reports(
    settings: Settings,
    run_id: str,
    label: str,
    root: str,
    rows: list[CviRow],
    rho: dict[str, float | None],
) -> dict[str, str]:
    """Plots and the JSON report under reports/cvi/, and the run's artifacts."""
    reports = open_folder(paths.url(settings, "reports", "cvi"), settings)
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
    plot_paths = {name: f"reports/cvi/{run_id}-{name}.png" for name in plots}
    for name, png in plots.items():
        reports.put(f"{run_id}-{name}.png", png)
    doc = {
        "model": label,
        "data": root,
        "spearman": rho,
        "rows": [asdict(r) for r in rows],
    }
    reports.put(f"{run_id}.json", json.dumps(doc, indent=1).encode())
    _artifacts(settings, doc, plot_paths)
    return plot_paths | {"json": f"reports/cvi/{run_id}.json"}


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
