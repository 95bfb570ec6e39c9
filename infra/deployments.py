"""Register the Prefect deployments of prefect.yaml and run them, as an operator would.

Uses the `prefect` CLI itself (`prefect deploy`, `prefect deployment run`,
`prefect flow-run watch`), so the demo goes through exactly the commands the
README tells users to type. Their output goes to a log stream of the caller's
choice; only the Prefect REST API is read directly, to find the runs that a
deployment's trigger started.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
# A triggered run is scheduled for "now": anything later is a cron run, not ours.
_TRIGGER_SLACK = timedelta(minutes=1)


@dataclass(frozen=True)
class RunOutcome:
    flow_run_id: str | None
    completed: bool


def _prefect(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    exe = str(Path(sys.executable).parent / "prefect")
    return [exe], {**os.environ, **env, "NFT1000_PROJECT_DIR": str(PROJECT_ROOT)}


def register(env: Mapping[str, str], log: TextIO | None = None) -> None:
    """`prefect deploy --all` from the project root (deployments nft1000/<stage>)."""
    argv, full_env = _prefect(env)
    subprocess.run(
        [*argv, "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_ROOT,
        env=full_env,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )


def run(
    env: Mapping[str, str],
    deployment: str,
    params: Mapping[str, str] | None = None,
    log: TextIO = sys.stdout,
) -> RunOutcome:
    """`prefect deployment run NAME --watch`, its output to ``log``; the run's id and outcome."""
    argv, full_env = _prefect(env)
    command = [*argv, "deployment", "run", deployment, "--watch"]
    for key, value in (params or {}).items():
        command += ["--param", f"{key}={value}"]
    return _follow(command, full_env, log)


def watch(env: Mapping[str, str], flow_run_id: str, log: TextIO = sys.stdout) -> RunOutcome:
    """`prefect flow-run watch ID` until the run ends, its output to ``log``."""
    argv, full_env = _prefect(env)
    outcome = _follow([*argv, "flow-run", "watch", flow_run_id], full_env, log)
    return RunOutcome(flow_run_id, outcome.completed)


def _follow(command: Sequence[str], env: Mapping[str, str], log: TextIO) -> RunOutcome:
    proc = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    run_id = None
    for line in proc.stdout:
        log.write(line)
        if run_id is None and (match := _UUID.search(line)):
            run_id = match.group(0)
    log.flush()
    return RunOutcome(run_id, proc.wait() == 0)


def triggered_run(
    env: Mapping[str, str], deployment: str, since: datetime, wait_s: float = 30.0
) -> str | None:
    """The id of the run of ``deployment`` that its trigger scheduled after ``since``.

    Waits up to ``wait_s`` for the automation to create it; None if none came.
    """
    api = env["PREFECT_API_URL"].removesuffix("/")
    try:
        with urllib.request.urlopen(f"{api}/deployments/name/{deployment}", timeout=30) as r:
            deployment_id = json.loads(r.read())["id"]
    except urllib.error.HTTPError as e:
        if e.code == 404:  # not registered: nothing can have triggered it
            return None
        raise
    deadline = time.monotonic() + wait_s
    while True:
        latest = datetime.now(UTC) + _TRIGGER_SLACK
        runs = _post(
            api,
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "deployment_id": {"any_": [deployment_id]},
                    "expected_start_time": {
                        "after_": since.isoformat(),
                        "before_": latest.isoformat(),
                    },
                },
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": 1,
            },
        )
        if runs:
            return str(runs[0]["id"])
        if time.monotonic() > deadline:
            return None
        time.sleep(1.0)


def error_lines(env: Mapping[str, str], flow_run_id: str, limit: int = 20) -> list[str]:
    """The last lines of a flow run's error logs (task and flow), oldest first."""
    api = env["PREFECT_API_URL"].removesuffix("/")
    logs = _post(
        api,
        "/logs/filter",
        {
            "logs": {"flow_run_id": {"any_": [flow_run_id]}, "level": {"ge_": logging.ERROR}},
            "sort": "TIMESTAMP_DESC",
            "limit": limit,
        },
    )
    lines = [line for entry in reversed(logs) for line in str(entry["message"]).splitlines()]
    return lines[-limit:]


def _post(api: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def flow_run_url(env: Mapping[str, str], flow_run_id: str) -> str:
    """The Prefect UI page of a flow run."""
    ui = env["PREFECT_API_URL"].removesuffix("/").removesuffix("/api")
    return f"{ui}/runs/flow-run/{flow_run_id}"
