"""What environment the local stack gives its pipeline processes, and how `stack env` shows it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from infra import cli, stack
from infra.process import ServiceSpec, running
from tasks.core.settings import load_settings


@pytest.fixture
def cfg(tmp_path: Path) -> stack.StackConfig:
    return stack.StackConfig(home=tmp_path / "home", gateway_port=8899, s3_port=8333)


def test_without_exports_every_value_is_the_stacks(cfg: stack.StackConfig) -> None:
    resolved = stack.resolve_settings(cfg, {"PATH": "/bin", "HOME": "/root"})
    assert {k: s.value for k, s in resolved.items()} == stack.stack_env(cfg)
    assert {s.source for s in resolved.values()} == {stack.STACK}


def test_exported_settings_win_over_the_stacks_and_reach_the_settings(
    cfg: stack.StackConfig,
) -> None:
    shell = {
        "NFT1000_RPC_URL": "https://mainnet.example/v3/0123456789abcdef0123",
        "NFT1000_MAX_RETRIES": "2",
        "NFT1000_MODEL": "ViT-B-32",
        "NFT1000_HOME": "/elsewhere",  # the stack's own name: its home stays
    }
    resolved = stack.resolve_settings(cfg, shell)
    rpc = resolved["NFT1000_RPC_URL"]
    assert (rpc.value, rpc.source, rpc.stack_value) == (
        shell["NFT1000_RPC_URL"],
        stack.SHELL,
        f"http://127.0.0.1:{cfg.anvil_port}",
    )
    assert resolved["NFT1000_MAX_RETRIES"] == stack.Setting("2", stack.SHELL)
    assert resolved["NFT1000_HOME"] == stack.Setting(str(cfg.home), stack.STACK)
    settings = load_settings(stack.process_env(resolved))
    assert (settings.rpc_url, settings.max_retries, settings.model) == (
        shell["NFT1000_RPC_URL"],
        2,
        "ViT-B-32",
    )
    assert settings.s3_endpoint_url == cfg.s3_endpoint_url  # not exported: the stack's


def test_allow_hosts_keep_the_stacks_gateway(cfg: stack.StackConfig) -> None:
    """The user's hosts come first; the stack's gateway is added, never dropped."""
    merged = stack.resolve_settings(cfg, {"NFT1000_ALLOW_HOSTS": "a.example:443, b:80"})
    assert merged["NFT1000_ALLOW_HOSTS"] == stack.Setting(
        "a.example:443,b:80,127.0.0.1:8899", stack.MERGED, "127.0.0.1:8899"
    )
    emptied = stack.resolve_settings(cfg, {"NFT1000_ALLOW_HOSTS": ""})
    assert emptied["NFT1000_ALLOW_HOSTS"].value == "127.0.0.1:8899"
    holding = stack.resolve_settings(cfg, {"NFT1000_ALLOW_HOSTS": "127.0.0.1:8899,c:1"})
    assert holding["NFT1000_ALLOW_HOSTS"].value == "127.0.0.1:8899,c:1"
    assert holding["NFT1000_ALLOW_HOSTS"].source == stack.SHELL


def test_aws_credentials_follow_the_s3_endpoint(cfg: stack.StackConfig) -> None:
    mine = {"AWS_ACCESS_KEY_ID": "AKIAMINE", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    token = {"AWS_SESSION_TOKEN": "tok"}
    # The stack's own S3 knows only its keys: the shell's are neither set nor inherited.
    shell = {**mine, **token}
    local = stack.pipeline_process_env(stack.resolve_settings(cfg, shell), shell)
    assert local.env["AWS_SECRET_ACCESS_KEY"] == stack.AWS_KEY
    assert local.unset == {"AWS_SESSION_TOKEN"}
    # The user's S3: the user's credentials, none of the stack's.
    theirs = {**mine, **token, "NFT1000_S3_ENDPOINT_URL": "https://minio.example"}
    remote = stack.pipeline_process_env(stack.resolve_settings(cfg, theirs), theirs)
    assert {k: v for k, v in remote.env.items() if k.startswith("AWS_")} == {**mine, **token}
    assert remote.unset == frozenset()
    assert "AWS_DEFAULT_REGION" not in remote.env


def test_the_config_file_beats_the_stacks_defaults_and_the_shell_beats_it(
    cfg: stack.StackConfig, tmp_path: Path
) -> None:
    config = tmp_path / "nft1000.toml"
    config.write_text('collections = ["Azuki"]\nallow_hosts = ["x.example:443"]\nseed = 7\n')
    shell = {"NFT1000_CONFIG": str(config), "NFT1000_SEED": "9"}
    resolved = stack.resolve_settings(cfg, shell)
    assert resolved["NFT1000_COLLECTIONS"] == stack.Setting(
        "Azuki", stack.CONFIG_FILE, "Moonbirds,Loot"
    )
    env = stack.process_env(resolved)
    assert "NFT1000_COLLECTIONS" not in env  # the stack's default must not hide the file's
    assert env["NFT1000_ALLOW_HOSTS"] == "x.example:443,127.0.0.1:8899"
    settings = load_settings(env)
    assert (settings.collections, settings.seed) == (("Azuki",), 9)
    assert settings.allow_hosts == ("x.example:443", "127.0.0.1:8899")


def test_unknown_names_and_bad_values_fail_before_anything_starts(
    cfg: stack.StackConfig, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"unknown settings: \['NFT1000_ALOW_HOSTS'\]; .*"):
        stack.up(cfg, environ={"NFT1000_ALOW_HOSTS": "x:1"})
    with pytest.raises(ValueError, match="did you mean NFT1000_ALLOW_HOSTS"):
        stack.resolve_settings(cfg, {"NFT1000_ALOW_HOSTS": "x:1"})
    with pytest.raises(ValueError, match="invalid literal"):
        stack.resolve_settings(cfg, {"NFT1000_MAX_RETRIES": "many"})
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ValueError, match="unknown settings"):
        stack.resolve_settings(cfg, {"NFT1000_CONFIG": str(bad)})
    assert not cfg.home.exists()  # nothing saved, nothing started


def test_stack_env_exports_the_stacks_values_and_shows_the_users_masked(
    cfg: stack.StackConfig,
) -> None:
    shell = {
        "NFT1000_RPC_URL": "https://user:hunter2@rpc.example/v3/0123456789abcdef0123?key=k9",
        "NFT1000_ALLOW_HOSTS": "a.example:443",
        "NFT1000_SEED": "3",
        "AWS_SECRET_ACCESS_KEY": "real-secret",
    }
    lines = cli.render_settings(stack.resolve_settings(cfg, shell), shell)
    text = "\n".join(lines)
    for secret in ("hunter2", "0123456789abcdef0123", "k9", "real-secret"):
        assert secret not in text
    assert (
        "# NFT1000_RPC_URL=https://***@rpc.example/v3/***?key=***  # from the shell; "
        f"overrides the stack's http://127.0.0.1:{cfg.anvil_port}"
    ) in lines
    assert "# NFT1000_SEED=3  # from the shell" in lines
    assert (
        "export NFT1000_ALLOW_HOSTS=a.example:443,127.0.0.1:8899  # yours, with the stack's "
        "127.0.0.1:8899"
    ) in lines
    assert f"export NFT1000_S3_BUCKET={cfg.bucket}  # stack" in lines
    assert lines[-1].startswith("# not passed on: the shell's AWS_SECRET_ACCESS_KEY")


def test_masking_keeps_what_is_not_secret() -> None:
    assert cli.mask("AWS_SESSION_TOKEN", "abc") == "***"
    assert cli.mask("NFT1000_IPFS_GATEWAYS", "https://ipfs.io,https://dweb.link") == (
        "https://ipfs.io,https://dweb.link"
    )
    assert cli.mask("NFT1000_REGISTRIES", "/data/collections_2024_v2.json") == (
        "/data/collections_2024_v2.json"
    )
    assert cli.mask("DATABASE_URL", "postgresql://u:p@h/db") == "postgresql://***@h/db"
    assert cli.mask("NFT1000_RPC_URL", "https://eth.example/rpc") == "https://eth.example/rpc"


def test_a_service_does_not_inherit_what_its_spec_unsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_KEPT", "kept")
    monkeypatch.setenv("PROBE_DROPPED", "dropped")
    log = tmp_path / "probe.log"
    names = ("PROBE_KEPT", "PROBE_DROPPED", "PROBE_SET")
    code = f"import os, time; print(*map(os.environ.get, {names}), flush=True); time.sleep(30)"
    spec = ServiceSpec(
        name="probe",
        argv=[sys.executable, "-c", code],
        state_dir=tmp_path,
        env={"PROBE_SET": "set"},
        unset=frozenset({"PROBE_DROPPED"}),
        ready_check=lambda: log.exists() and log.read_text().strip() != "",
        timeout_s=20,
    )
    with running(spec):
        assert log.read_text().split() == ["kept", "None", "set"]


def test_running_services_with_other_settings_are_named(cfg: stack.StackConfig) -> None:
    """`up` leaves running services alone: those started with other values are reported."""
    before = {"NFT1000_MAX_RETRIES": "2"}
    penv = stack.pipeline_process_env(stack.resolve_settings(cfg, before), before)
    cfg.services_dir.mkdir(parents=True)
    for spec in stack._pipeline_specs(cfg, penv):
        spec.pid_file.write_text(str(os.getpid()))  # a live PID: "running"
        record = stack._settings_record(spec)
        record.write_text(json.dumps(stack._digests(spec.env)))
    assert stack.stale_services(cfg, before) == {}
    stale = stack.stale_services(cfg, {"NFT1000_MAX_RETRIES": "3"})
    dask = ["dask-scheduler", "dask-worker-0", "dask-worker-1"]
    prefect = ["prefect-worker", "prefect-gpu-worker"]
    assert stale == {name: ["NFT1000_MAX_RETRIES"] for name in [*dask, *prefect]}
    note = stack.stale_note(stale)
    assert note is not None and note.startswith("still running with other values of NFT1000_")


def test_dask_workers_do_not_profile_unless_the_caller_asks() -> None:
    """The stack's workers serve no dashboard: Dask's 10 ms stack sampling is turned off,
    unless the caller's environment sets it."""
    assert stack._worker_defaults({}) == {stack.WORKER_PROFILE: "False"}
    assert stack._worker_defaults({stack.WORKER_PROFILE: "True"}) == {}
