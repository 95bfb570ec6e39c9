"""`nft1000 demo` (`make demo`): every stage on the demo collections, told in a few lines.

The stack starts (or is found running), the deployments are registered, then each
stage runs through its deployment as a user would run it: one line when a stage
starts and one when it ends (seconds, key counts). Stages that a deployment
trigger starts (nft1000/tables after the ingest, nft1000/evaluate after the
finetune) are followed, not started twice. Prefect's own output (the deploy
report, each run's event stream) and the services' startup log go to
``<home>/logs/demo.log``. At the end: one table per collection, the Prefect UI
link and two queries to try. A failing stage stops the demo with its name, its
flow run link and the last lines of its log.

Both demo collections are NFT1000 training collections, so the export holds out
``HOLDOUT`` tokens of each (a seeded draw, split ``holdout``): the model is
scored on tokens it never trained on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb

from infra import deployments, sql_shell, stack
from infra.process import ServiceError
from tasks.core import paths
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.core.sql import sql_text
from tasks.export.webdataset import read_index
from tasks.ingest.summary import summarize

# What the demo ingests: a slice of the 10,000 Moonbirds on the demo chain (the rest
# is one `prefect deployment run nft1000/ingest` away) and the 1,000 Loot bags.
DEMO_COLLECTIONS = ("Moonbirds:0-3999", "Loot")
# Tokens per collection held out of training and scored (a seeded draw).
HOLDOUT = 500
# The tiny model reads 64 px; shards of 500 keep both Dask workers busy to the end.
DEMO_EXPORT = {"holdout": str(HOLDOUT), "shortest_side": "64", "samples_per_shard": "500"}
# The stack's model is the tiny CLIP from random weights on the CPU: nft1000/finetune
# takes its measured budget (tasks/train/model_configs/tiny_clip/training.json) by default.
DEMO_FINETUNE = {"workers": "1"}
LOG_TAIL = 25


@dataclass(frozen=True)
class Stage:
    """One deployment the demo runs; ``triggered``: its trigger starts it, so follow that."""

    name: str
    params: Mapping[str, str] = field(default_factory=dict)
    triggered: bool = False


STAGES = (
    Stage("ingest", {"collections": json.dumps(DEMO_COLLECTIONS)}),
    Stage("tables", triggered=True),  # after a completed ingest
    Stage("export", DEMO_EXPORT),
    Stage("finetune", DEMO_FINETUNE),
    Stage("evaluate", triggered=True),  # after a completed finetune; scores the holdout
    Stage("cvi", {"workers": "1", "splits": '["holdout"]'}),
)


def run_demo(cfg: stack.StackConfig, pipeline_env: Callable[[], dict[str, str]]) -> int:
    """The whole demo; 0 when every stage completed."""
    log_path = cfg.home / "logs" / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        _log_to(log)
        stages = ", ".join(f"nft1000/{s.name}" for s in STAGES)
        print(f"demo: {' and '.join(DEMO_COLLECTIONS)} through {stages}")
        print(f"Prefect's own output goes to {log_path}")
        started = time.monotonic()
        if not _timed("stack", lambda: _stack_up(cfg)):
            print(f"the stack did not start: see {log_path} and {cfg.services_dir}/*.log")
            return 1
        env = pipeline_env()
        if not _timed("deploy", lambda: _deploy(env, log)):
            print(f"prefect deploy failed: see the end of {log_path}")
            return 1
        settings = load_settings(env)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        since = datetime.now(UTC)
        for stage in STAGES:
            # A trigger schedules its run once the stage before ends: after that one began.
            began = datetime.now(UTC)
            outcome = _run_stage(stage, env, settings, log, since)
            since = began
            if not outcome.completed:
                report_failure(stage, env, outcome, log_path)
                return 1
        print(f"\nevery stage completed in {time.monotonic() - started:.0f} s\n")
        print(summary_table(settings, exported_samples(settings)))
        _closing(env, cfg)
    return 0


def _log_to(log: TextIO) -> None:
    """Send this process's own logging (service startup lines) to the demo log."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _timed(name: str, step: Callable[[], str | None]) -> bool:
    """Run one step between its start and end lines; False when it returned None."""
    print(f"{name:9} ...", flush=True)
    t0 = time.monotonic()
    detail = step()
    if detail is None:
        return False
    _ended(name, t0, detail)
    return True


def _ended(name: str, t0: float, detail: str) -> None:
    print(f"{name:9} done in {time.monotonic() - t0:4.0f} s  {detail}", flush=True)


def _stack_up(cfg: stack.StackConfig) -> str | None:
    try:
        env = stack.up(cfg)
    except ServiceError as e:
        logging.getLogger(__name__).error("%s", e)
        return None
    services = ", ".join(stack.status(cfg))
    note = stack.stale_note(stack.stale_services(cfg, os.environ))
    warning = f"\n          warning: {note}" if note else ""
    return f"{services}; Prefect UI {env['PREFECT_API_URL'].removesuffix('/api')}{warning}"


def _deploy(env: Mapping[str, str], log: TextIO) -> str | None:
    try:
        deployments.register(env, log)
    except subprocess.CalledProcessError:
        return None
    return "nft1000/* registered from prefect.yaml"


def _run_stage(
    stage: Stage, env: Mapping[str, str], settings: Settings, log: TextIO, since: datetime
) -> deployments.RunOutcome:
    """Run (or follow the triggered run of) one stage; ``since``: when the stage before began."""
    print(f"{stage.name:9} ...", flush=True)
    t0 = time.monotonic()
    log.write(f"\n=== nft1000/{stage.name} {json.dumps(dict(stage.params))}\n")
    run_id = None
    if stage.triggered:
        run_id = deployments.triggered_run(env, f"nft1000/{stage.name}", since)
    if run_id is not None:
        outcome = deployments.watch(env, run_id, log)
        how = " (started by its trigger)"
    else:
        outcome = deployments.run(env, f"nft1000/{stage.name}", stage.params, log)
        how = ""
    if outcome.completed:
        _ended(stage.name, t0, REPORTS[stage.name](settings) + how)
    return outcome


def report_failure(
    stage: Stage, env: Mapping[str, str], outcome: deployments.RunOutcome, log_path: Path
) -> None:
    print(f"\nnft1000/{stage.name} did not complete.")
    lines: list[str] = []
    if outcome.flow_run_id:
        print(f"flow run: {deployments.flow_run_url(env, outcome.flow_run_id)}")
        lines = deployments.error_lines(env, outcome.flow_run_id, LOG_TAIL)
    if lines:
        print("its last error lines:")
    else:  # no run, or nothing logged as an error: what the CLI said
        print(f"the last lines of {log_path}:")
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    for line in lines:
        print(f"  {line}")


def _closing(env: Mapping[str, str], cfg: stack.StackConfig) -> None:
    ui = env["PREFECT_API_URL"].removesuffix("/").removesuffix("/api")
    print(f"\nPrefect UI: {ui} (flow runs, artifacts: progress, tables, plots)")
    print("try:")
    print(f'  eval "$(nft1000 stack env --home {cfg.home})"')
    print(
        '  nft1000 sql "SELECT collection, method, caption FROM captions '
        "WHERE collection = 'Moonbirds' LIMIT 5\""
    )
    print(
        '  nft1000 sql "SELECT model, pool, k, round(accuracy, 3) FROM retrieval_results '
        "WHERE collection = 'all' ORDER BY pool, k\""
    )
    print("stop everything: make stop")


# What each stage's end line says, read back from what the stage wrote.


def _ingest_report(settings: Settings) -> str:
    rows = summarize(ObjectStore(settings))
    return "; ".join(
        f"{r['collection']}: {r['tokens']:,} tokens, {r['ok']:,} ok, {r['failed']:,} failed"
        for r in rows
    )


def _tables_report(settings: Settings) -> str:
    row = _query(
        settings,
        "SELECT count(*), count(DISTINCT collection), count(*) FILTER (truncated) "
        "FROM captions WHERE preferred",
    )
    if not row:
        return "no captions"
    captions, collections, cut = row[0]
    return f"{captions:,} captions in {collections} collections ({cut:,} cut at 77 CLIP tokens)"


def _export_report(settings: Settings) -> str:
    index = _export_index(settings)
    splits = index.get("splits", {})
    return ", ".join(
        f"{split} {info['samples']:,} samples ({info['failed']:,} failed)"
        for split, info in splits.items()
    )


def _finetune_report(settings: Settings) -> str:
    folder = ObjectStore(settings)
    pointer = folder.get(folder.key(paths.MODELS, paths.latest()))
    if pointer is None:
        return "no model"
    latest = json.loads(pointer)
    config = latest.get("config", {})
    return (
        f"{latest['name']}: {config.get('mode')}, {config.get('epochs')} epochs, "
        f"batch {config.get('batch_size')}, lr {config.get('lr')}"
    )


def _evaluate_report(settings: Settings) -> str:
    rows = _query(settings, sql_text("shell/last_accuracy"))
    if not rows:
        return "nothing evaluated"
    _, data, _, _, _, queries = rows[0]
    scores = ", ".join(f"{pool} top-{k} {accuracy:.3f}" for _, _, pool, k, accuracy, _ in rows)
    return f"{queries:,} held-out captions ({data.rsplit('/', 1)[-1]}): {scores}"


def _cvi_report(settings: Settings) -> str:
    rows = _query(settings, sql_text("shell/last_cvi"))
    return ", ".join(f"{name} CVI {_number(cvi)}" for name, cvi, _ in rows) or "no CVI rows"


REPORTS: dict[str, Callable[[Settings], str]] = {
    "ingest": _ingest_report,
    "tables": _tables_report,
    "export": _export_report,
    "finetune": _finetune_report,
    "evaluate": _evaluate_report,
    "cvi": _cvi_report,
}


def _export_index(settings: Settings) -> dict[str, Any]:
    return read_index(paths.url(settings, paths.export(paths.WEBDATASET)), settings) or {}


def exported_samples(settings: Settings) -> dict[str, dict[str, int]]:
    """split -> collection -> samples of the WebDataset export."""
    splits = _export_index(settings).get("splits", {})
    return {split: info.get("samples_by_collection", {}) for split, info in splits.items()}


def summary_table(settings: Settings, exported: Mapping[str, Mapping[str, int]]) -> str:
    """The closing table: one row per collection, from ingest to CVI."""
    rows = _query(settings, sql_text("shell/demo_summary"))
    header = (
        "collection",
        "tokens",
        "ok",
        "failed",
        "captions",
        "trained on",
        "held out",
        "top-1",
        "top-10",
        "CVI",
    )
    lines = [header]
    for collection, tokens, ok, failed, captions, _, top1, top10, cvi in rows:
        lines.append(
            (
                str(collection),
                f"{tokens:,}",
                f"{ok:,}",
                f"{failed:,}",
                f"{captions:,}",
                f"{exported.get('train', {}).get(collection, 0):,}",
                f"{exported.get('holdout', {}).get(collection, 0):,}",
                _number(top1),
                _number(top10),
                _number(cvi),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    note = "top-1/top-10: each held-out caption ranks its own image among its collection's"
    return "\n".join([*text, note])


def _query(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query`` over the `nft1000 sql` views; none while a view does not exist."""
    con = sql_shell.open_views(settings)
    try:
        return con.execute(query).fetchall()
    except duckdb.CatalogException:  # no results file yet, so no view
        return []
    finally:
        con.close()


def _number(value: float | None) -> str:
    """Accuracy and CVI lie in [-1, 1]: three decimals, and no "-0.000"."""
    return "n/a" if value is None else f"{round(value, 3) + 0.0:.3f}"
