"""Register the Prefect deployments of prefect.yaml and run them, as an operator would.

Uses the `prefect` CLI itself (`prefect deploy`, `prefect deployment run`), so the
demo goes through exactly the commands the README tells users to type.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


@dataclass(frozen=True)
class RunOutcome:
    flow_run_id: str | None
    completed: bool


def _prefect(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    exe = str(Path(sys.executable).parent / "prefect")
    return [exe], {**os.environ, **env, "NFT1000_PROJECT_DIR": str(PROJECT_ROOT)}


def register(env: Mapping[str, str]) -> None:
    """`prefect deploy --all` from the project root (deployments nft1000/<stage>)."""
    argv, full_env = _prefect(env)
    subprocess.run(
        [*argv, "--no-prompt", "deploy", "--all"], cwd=PROJECT_ROOT, env=full_env, check=True
    )


def run(
    env: Mapping[str, str], deployment: str, params: Mapping[str, str] | None = None
) -> RunOutcome:
    """`prefect deployment run NAME --watch`, echoing its output; the run's id and outcome."""
    argv, full_env = _prefect(env)
    command = [*argv, "deployment", "run", deployment, "--watch"]
    for key, value in (params or {}).items():
        command += ["--param", f"{key}={value}"]
    proc = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    run_id = None
    for line in proc.stdout:
        sys.stdout.write(line)
        if run_id is None and (match := _UUID.search(line)):
            run_id = match.group(0)
    return RunOutcome(run_id, proc.wait() == 0)


def flow_run_url(env: Mapping[str, str], flow_run_id: str) -> str:
    """The Prefect UI page of a flow run."""
    ui = env["PREFECT_API_URL"].removesuffix("/").removesuffix("/api")
    return f"{ui}/runs/flow-run/{flow_run_id}"
