"""The Prefect server on PostgreSQL, started and stopped by infra like every service.

A flow run against it must land in the Postgres cluster of the stack's home, not in
SQLite, and ``stack.down`` must leave neither server running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra import postgres, stack
from infra.process import ServiceError, alive

# A flow with two tasks, run in its own process as any Prefect client would.
FLOW = """
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow(name="postgres-check")
def check() -> int:
    return double(1) + double(2)

print(check())
"""


@pytest.fixture
def home() -> Iterator[Path]:
    """A stack home the server's unprivileged OS user can reach (pytest's tmp is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="nft1000-postgres-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _flow_runs(cluster: postgres.Cluster, flow_name: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(
        host=postgres.HOST,
        port=cluster.port,
        user=postgres.DB_USER,
        password=postgres.DB_PASSWORD,
        database=postgres.DB_NAME,
    )
    try:
        rows = await conn.fetch(
            "SELECT fr.state_type::text AS state, count(tr.id) AS tasks FROM flow_run fr "
            "JOIN flow f ON f.id = fr.flow_id LEFT JOIN task_run tr ON tr.flow_run_id = fr.id "
            "WHERE f.name = $1 GROUP BY fr.id, fr.state_type",
            flow_name,
        )
    finally:
        await conn.close()
    return [(row["state"], row["tasks"]) for row in rows]


def test_prefect_server_on_postgres(home: Path) -> None:
    cfg = stack.with_environment(
        stack.StackConfig.with_free_ports(home), {stack.PREFECT_DB_ENV: "postgres"}
    )
    try:
        stack.start_orchestration(cfg)
        pids = {name: pid for name, pid in stack.status(cfg).items() if pid is not None}
        assert set(pids) == {"postgres", "prefect-server"}
        env = {**os.environ, **stack.stack_env(cfg)}
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        done = subprocess.run(
            [sys.executable, "-c", FLOW],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip().splitlines()[-1] == "6"
        assert asyncio.run(_flow_runs(cfg.postgres, "postgres-check")) == [("COMPLETED", 2)]
        assert not list(home.rglob("*.db")), "the server wrote a SQLite database"
    finally:
        stopped = stack.down(cfg)
    assert set(stopped) == {"postgres", "prefect-server"}
    assert not any(alive(pid) for pid in pids.values())
    log = (cfg.services_dir / "postgres.log").read_text()
    assert "database system is shut down" in log


def test_postgres_switch_from_the_environment(tmp_path: Path) -> None:
    cfg = stack.StackConfig(home=tmp_path)
    assert stack.with_environment(cfg, {}).prefect_db == "sqlite"
    chosen = stack.with_environment(cfg, {stack.PREFECT_DB_ENV: "Postgres"})
    assert chosen.prefect_db == "postgres"
    assert "postgres" not in stack.status(cfg)
    assert "postgres" in stack.status(chosen)
    server = stack.prefect_server_spec(chosen)
    assert server.env["PREFECT_API_DATABASE_CONNECTION_URL"] == chosen.postgres.url
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in stack.prefect_server_spec(cfg).env
    with pytest.raises(ValueError, match="sqlite, postgres"):
        stack.with_environment(cfg, {stack.PREFECT_DB_ENV: "mysql"})
    stack.save_config(chosen)
    assert stack.load_config(tmp_path).prefect_db == "postgres"


def test_missing_postgres_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="apt-get install postgresql"):
        postgres.require_bindir(search=tmp_path)
