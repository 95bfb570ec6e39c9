"""What every flow shares: the Dask task runner (the configured scheduler, or a local
cluster) and the helpers of its summary artifacts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from tasks.core.paths import slug
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
    return slug(*parts)


def failed_by_reason(kinds: Iterable[str] | Mapping[str, int]) -> str:
    """``"http_error: 3, not_found: 1"`` for a summary table's failed_by_reason cell."""
    counts = Counter(kinds)
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items()) if n) or "-"
