"""The Dask task runner every flow uses: the configured scheduler, or a local cluster."""

from __future__ import annotations

from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from tasks.core.settings import Settings


def task_runner(settings: Settings) -> TaskRunner[PrefectFuture[Any]]:
    """The configured Dask scheduler, or a local cluster of worker processes."""
    if settings.dask_address:
        runner = DaskTaskRunner(address=settings.dask_address)
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None}
        )
    # prefect-dask's runner is generic over its own future type, a PrefectFuture.
    return cast(TaskRunner[PrefectFuture[Any]], runner)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() and c.isascii() else "-" for c in text).strip("-")
