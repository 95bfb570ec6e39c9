"""A private local stack for a bench, and `nft1000/ingest` deployment runs on it.

`private_stack` starts the whole stack on free ports in a temporary home and stops
it by PID after the block. `IngestDeployment` registers only `nft1000/ingest`
from prefect.yaml (no `nft1000/tables` trigger to load the machine after each run)
and starts runs of it through the Prefect API, as `prefect deployment run` does,
each with its own S3 prefix, so that runs of one bench never see each other's
objects.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import stack

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = "nft1000/ingest"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
API_ATTEMPTS = 6

log = logging.getLogger(__name__)


@contextmanager
def private_stack(
    keep_logs: Path | None = None, *, worker: bool = True, **config: Any
) -> Iterator[tuple[stack.StackConfig, dict[str, str]]]:
    """The local stack on free ports in a temporary home (config: StackConfig fields;
    worker: start the Prefect workers too); its services' logs copied to `keep_logs`
    once it is down."""
    with tempfile.TemporaryDirectory(prefix="nft1000-bench-") as tmp:
        cfg = stack.StackConfig.with_free_ports(Path(tmp), **config)
        try:
            yield cfg, stack.up(cfg, worker=worker)
        finally:
            stack.down(cfg)
            if keep_logs is not None:
                copy_logs(cfg, keep_logs)


def copy_logs(cfg: stack.StackConfig, to: Path) -> None:
    """The services' logs outlive the stack's temporary home, for a look afterwards."""
    to.mkdir(parents=True, exist_ok=True)
    for log in [*cfg.services_dir.glob("*.log"), *cfg.home.glob("*.log*")]:
        shutil.copy(log, to / log.name)


def api(env: Mapping[str, str], path: str, body: Any = None) -> Any:
    """One Prefect REST call (GET, or POST when a body is given); its JSON reply.

    A busy server (SQLite locked) answers 503, and one restarting refuses connections:
    both are retried, as Prefect's own client does.
    """
    url = env["PREFECT_API_URL"].rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for attempt in range(API_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                text = reply.read()
            return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            if e.code < 500 or attempt == API_ATTEMPTS - 1:
                raise
        except OSError:
            if attempt == API_ATTEMPTS - 1:
                raise
        log.warning("Prefect API %s failed; retrying", path)
        time.sleep(2.0 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RunState:
    type: str  # COMPLETED, RUNNING, CRASHED...
    name: str
    message: str = ""

    @property
    def final(self) -> bool:
        return self.type in FINAL_STATES


class IngestDeployment:
    """`nft1000/ingest` registered on a stack; runs of it started and followed by id."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.env = dict(env)
        prefect = str(Path(sys.executable).parent / "prefect")
        with log.open("a") as out:
            subprocess.run(
                [prefect, "--no-prompt", "deploy", "--name", DEPLOYMENT.split("/")[1]],
                cwd=PROJECT_ROOT,
                env={**self.env, "NFT1000_PROJECT_DIR": str(PROJECT_ROOT)},
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.id = api(self.env, f"/deployments/name/{DEPLOYMENT}")["id"]

    def start(self, collections: list[str], s3_prefix: str) -> str:
        """A new flow run over `collections` storing under `s3_prefix`; its id."""
        run = api(
            self.env,
            f"/deployments/{self.id}/create_flow_run",
            {
                "parameters": {"collections": collections},
                "job_variables": {"env": {"NFT1000_S3_PREFIX": s3_prefix}},
            },
        )
        return str(run["id"])

    def state(self, run_id: str) -> RunState:
        state = api(self.env, f"/flow_runs/{run_id}")["state"] or {}
        return RunState(
            state.get("type", "SCHEDULED"),
            state.get("name", "Scheduled"),
            str(state.get("message") or ""),
        )

    def mark_crashed(self, run_id: str, why: str) -> None:
        """What a user does in the UI for a run whose process is gone: it reports nothing."""
        api(
            self.env,
            f"/flow_runs/{run_id}/set_state",
            {"state": {"type": "CRASHED", "name": "Crashed", "message": why}, "force": True},
        )

    def wait(self, run_id: str, timeout_s: float, poll_s: float = 1.0) -> RunState:
        """The run's state once final, or as it is when timeout_s has passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state(run_id)
            if state.final or time.monotonic() > deadline:
                return state
            time.sleep(poll_s)
