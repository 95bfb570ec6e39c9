"""The local stack: S3 (SeaweedFS), Prefect, Dask, anvil and the demo gateway on 127.0.0.1.

The Prefect server keeps its database in SQLite, or with ``NFT1000_PREFECT_DB=postgres``
in a PostgreSQL cluster the stack starts too (``infra.postgres``).

Everything lives in one state folder (data, PID and log files, the demo registry,
``stack.env``), and every service is started and stopped by PID through
``infra.process``, so ``up`` is idempotent and ``down`` stops exactly what ``up``
started. Independent services start side by side; the whole demo is up in
well under a minute.

The pipeline's processes (Dask scheduler and workers, Prefect workers and the flow
runs they spawn) get ``resolve_settings``: the stack's own values as defaults, and
whatever NFT1000_* the calling shell (or its NFT1000_CONFIG file) sets on top.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import signal
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from infra.demo_chain import anvil_spec, compile_contracts, deploy_demo, read_loot_uris
from infra.demo_content import build_moonbirds
from infra.postgres import Cluster, ensure_cluster, postgres_spec, require_bindir
from infra.process import ServiceSpec, free_port, read_pid, start, stop
from tasks.core.settings import Settings, load_settings
from tasks.train.model_configs import TINY_ARCHITECTURE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The demo's real data (with SOURCE and licence notes), shipped with the package;
# tests and benchmarks read the same archives.
DEMO_DATA = Path(__file__).resolve().parent / "demo"
MOONBIRDS_ARCHIVE = DEMO_DATA / "moonbirds.tar.gz"
LOOT_ARCHIVE = DEMO_DATA / "loot.tar.gz"
# The official Moonbirds trait layers: the demo's masks, and ground truth for derived ones.
MOONBIRDS_LAYERS = DEMO_DATA / "moonbirds_layers.tar.gz"
HOST = "127.0.0.1"
# Fixed local values, not secrets: weed takes them as its admin identity, clients sign with them.
AWS_KEY = "nft1000-local"
AWS_REGION = "us-east-1"
PREFECT_WORKER_NAME = "nft1000-local"
GPU_WORKER_NAME = "nft1000-local-gpu"
MODEL_KEYS = ("NFT1000_MODEL", "NFT1000_PRETRAINED", "NFT1000_TRAIT_LAYERS")
# The filer drains its gRPC streams for up to 15 s on SIGINT; give it that, then some.
S3_STOP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# A server that just started runs its first scheduler passes: on a busy machine it
# answers the work-pool calls in seconds, not milliseconds (5 s timed out on 2 cores).
POOL_TIMEOUT_S = 30.0
# The Prefect server's database: the switch, read from the environment of `stack up`.
PREFECT_DB_ENV = "NFT1000_PREFECT_DB"
SQLITE = "sqlite"
POSTGRES = "postgres"
PREFECT_DBS = (SQLITE, POSTGRES)
CONFIG_ENV = "NFT1000_CONFIG"
# NFT1000_* names that are not pipeline settings: read by the CLI and the stack.
STACK_NAMES = ("NFT1000_HOME", "NFT1000_PROJECT_DIR", PREFECT_DB_ENV, CONFIG_ENV)
SETTING_NAMES = tuple(f"NFT1000_{f.name.upper()}" for f in dataclasses.fields(Settings))
# List settings the user's value extends instead of replacing: the stack's own entries
# (its loopback gateway) are what its other values need to work.
MERGED_SETTINGS = ("NFT1000_ALLOW_HOSTS",)
# Where a value of the pipeline's environment came from.
STACK = "stack"
SHELL = "shell"
CONFIG_FILE = "NFT1000_CONFIG file"
MERGED = "merged"  # the user's list with the stack's entries added

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    """Where one stack keeps its state, which ports it uses and how big its demo is."""

    home: Path = PROJECT_ROOT / ".nft1000"
    # Every port is explicit, so stacks with different ports run side by side.
    s3_port: int = 8333
    s3_grpc_port: int = 18333
    weed_master_port: int = 9333
    weed_master_grpc_port: int = 19333
    weed_volume_port: int = 9334
    weed_volume_grpc_port: int = 19334
    weed_filer_port: int = 9335
    weed_filer_grpc_port: int = 19335
    prefect_port: int = 4200
    dask_scheduler_port: int = 8786
    dask_dashboard_port: int = 8787
    anvil_port: int = 8545
    gateway_port: int = 8899
    postgres_port: int = 5432  # used only when prefect_db is postgres
    dask_workers: int = 2
    moonbirds_count: int = 10_000
    loot_count: int = 1_000
    moonbirds_archive: Path = MOONBIRDS_ARCHIVE
    loot_archive: Path = LOOT_ARCHIVE
    bucket: str = "nft1000"
    work_pool: str = "ingest"
    gpu_work_pool: str = "gpu"
    prefect_db: str = SQLITE  # the Prefect server's database: sqlite or postgres

    def __post_init__(self) -> None:
        if self.prefect_db not in PREFECT_DBS:
            raise ValueError(
                f"the Prefect database ({PREFECT_DB_ENV}) is one of "
                f"{', '.join(PREFECT_DBS)}, not {self.prefect_db!r}"
            )
        # Absolute paths: they go into stack.env and into services with another cwd.
        for name in ("home", "moonbirds_archive", "loot_archive"):
            object.__setattr__(self, name, Path(getattr(self, name)).resolve())

    @classmethod
    def with_free_ports(cls, home: Path, **kw: Any) -> StackConfig:
        """A config whose ports are all currently free (tests, a second stack)."""
        ports: set[int] = set()
        while len(ports) < len(port_fields()):
            ports.add(free_port())
        return cls(home=home, **{**dict(zip(port_fields(), sorted(ports), strict=True)), **kw})

    @property
    def services_dir(self) -> Path:
        return self.home / "services"

    @property
    def registry_path(self) -> Path:
        return self.home / "demo" / "registry.json"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def dask_address(self) -> str:
        return f"tcp://{HOST}:{self.dask_scheduler_port}"

    @property
    def postgres(self) -> Cluster:
        return Cluster(self.home / "postgres", self.services_dir, self.postgres_port)


def port_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(StackConfig) if f.name.endswith("_port")]


def save_config(cfg: StackConfig) -> None:
    """Remember the config in its home, so later commands on that home need no flags."""
    data = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}
    cfg.home.mkdir(parents=True, exist_ok=True)
    (cfg.home / "stack.json").write_text(json.dumps(data, indent=2) + "\n")


def load_config(home: Path) -> StackConfig:
    """The config saved in `home` by the last `up`, else the defaults."""
    try:
        data = json.loads((home / "stack.json").read_text())
    except FileNotFoundError:
        return StackConfig(home=home)
    defaults = StackConfig()
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(StackConfig)}
    return StackConfig(**{k: types[k](v) for k, v in data.items() if k in types})


def with_environment(cfg: StackConfig, environ: Mapping[str, str]) -> StackConfig:
    """``cfg`` with the switches the calling shell sets: NFT1000_PREFECT_DB."""
    chosen = environ.get(PREFECT_DB_ENV, "").strip().lower()
    return dataclasses.replace(cfg, prefect_db=chosen) if chosen else cfg


def stack_env(cfg: StackConfig) -> dict[str, str]:
    """The stack's own values: everything the pipeline (and a shell) needs to reach it."""
    gateway = f"{HOST}:{cfg.gateway_port}"
    return {
        "NFT1000_HOME": str(cfg.home),
        "NFT1000_PROJECT_DIR": str(PROJECT_ROOT),
        "NFT1000_RPC_URL": f"http://{HOST}:{cfg.anvil_port}",
        "NFT1000_IPFS_GATEWAYS": f"http://{gateway}",
        "NFT1000_ALLOW_HOSTS": gateway,
        "NFT1000_S3_ENDPOINT_URL": cfg.s3_endpoint_url,
        "NFT1000_S3_BUCKET": cfg.bucket,
        "NFT1000_DASK_ADDRESS": cfg.dask_address,
        "NFT1000_REGISTRIES": str(cfg.registry_path),
        "NFT1000_COLLECTIONS": "Moonbirds,Loot",
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_KEY,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "PREFECT_API_URL": cfg.prefect_api_url,
        "PREFECT_HOME": str(cfg.home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **model_env({}),
    }


@dataclass(frozen=True)
class Setting:
    """One variable of the pipeline's environment, where its value came from, and the
    stack's own value when the user's replaced or extended it."""

    value: str
    source: str  # STACK, SHELL, CONFIG_FILE or MERGED
    stack_value: str | None = None


def check_names(environ: Mapping[str, str]) -> None:
    """Fail on an NFT1000_* name that nothing reads: a typo would be silently ignored."""
    known = {*SETTING_NAMES, *STACK_NAMES}
    unknown = sorted(k for k in environ if k.startswith("NFT1000_") and k not in known)
    if unknown:
        hints = [
            f"{name}: did you mean {close[0]}?"
            for name in unknown
            if (close := difflib.get_close_matches(name, known, n=1))
        ]
        raise ValueError("; ".join([f"unknown settings: {unknown}", *hints]))


def _config_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The NFT1000_CONFIG file's values under their NFT1000_* names (lists comma-joined)."""
    path = environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{CONFIG_ENV}={path}: {e}") from e
    return {
        f"NFT1000_{key.upper()}": ",".join(map(str, v)) if isinstance(v, list) else str(v)
        for key, v in data.items()
    }


def _merge(user: str, own: str) -> str:
    """The user's list, then the stack's entries it lacks."""
    items = [i.strip() for i in user.split(",") if i.strip()]
    return ",".join([*items, *(i for i in own.split(",") if i not in items)])


def resolve_settings(cfg: StackConfig, environ: Mapping[str, str]) -> dict[str, Setting]:
    """The environment of the stack's pipeline processes, each value with its source.

    The stack's own values are defaults: an NFT1000_* setting the shell exports (or the
    NFT1000_CONFIG file sets) wins, except MERGED_SETTINGS, which keep the stack's entries
    too. The stack's own names (NFT1000_HOME, PREFECT_*) are not settings and stay. AWS_*
    come from the stack while its own S3 is used (that server knows only its keys), else
    from the shell. ValueError for an unknown NFT1000_* name or a value the settings
    loader rejects, before anything starts.
    """
    check_names(environ)
    user = {k: (v, CONFIG_FILE) for k, v in _config_values(environ).items()}
    user |= {k: (v, SHELL) for k, v in environ.items() if k.startswith("NFT1000_")}
    resolved: dict[str, Setting] = {}
    for key, own in stack_env(cfg).items():
        value, source = user.pop(key, (own, STACK))
        if key not in SETTING_NAMES or value == own:
            resolved[key] = Setting(own, STACK)
        elif key in MERGED_SETTINGS:
            merged = _merge(value, own)
            resolved[key] = Setting(merged, source if merged == value else MERGED, own)
        else:
            resolved[key] = Setting(value, source, own)
    resolved |= {k: Setting(v, source) for k, (v, source) in user.items()}
    if resolved["NFT1000_S3_ENDPOINT_URL"].value != cfg.s3_endpoint_url:
        resolved = {k: v for k, v in resolved.items() if not k.startswith("AWS_")}
        resolved |= {k: Setting(v, SHELL) for k, v in environ.items() if k.startswith("AWS_")}
    load_settings(process_env(resolved))  # the loader's own checks: values, the TOML's keys
    return resolved


def process_env(resolved: Mapping[str, Setting]) -> dict[str, str]:
    """The variables to set: NFT1000_CONFIG file values stay in the file, which the
    settings loader reads below the environment."""
    return {k: s.value for k, s in resolved.items() if s.source != CONFIG_FILE}


@dataclass(frozen=True)
class ProcessEnv:
    """What a pipeline process of the stack is started with: variables set on top of the
    caller's environment, and the caller's it must not inherit (its AWS_* while the
    stack's own S3 is used: a session token of the shell would spoil the stack's keys)."""

    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unset: frozenset[str] = frozenset()


def pipeline_process_env(resolved: Mapping[str, Setting], environ: Mapping[str, str]) -> ProcessEnv:
    """What the stack's pipeline processes get, started from ``environ``."""
    env = process_env(resolved) | _python_env(environ)
    unset = frozenset(k for k in environ if k.startswith("AWS_") and k not in resolved)
    return ProcessEnv(env, unset)


def pipeline_env(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the CLI runs the pipeline with: as the stack's processes get it
    (when a stack was started in ``home``), with the shell's PREFECT_API_URL on top;
    without a stack, the shell's NFT1000_*, AWS_* and PREFECT_API_URL."""
    environ = os.environ if environ is None else environ
    prefect = {k: v for k, v in environ.items() if k == "PREFECT_API_URL"}
    if not (home / "stack.json").exists():
        prefixes = ("NFT1000_", "AWS_")
        return {k: v for k, v in environ.items() if k.startswith(prefixes)} | prefect
    return process_env(resolve_settings(load_config(home), environ)) | prefect


def model_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The CLIP nft1000/finetune and nft1000/evaluate use: the tiny model from random
    weights (CPU-sized, nothing to download) unless `environ` names another."""
    defaults = {
        "NFT1000_MODEL": TINY_ARCHITECTURE,
        "NFT1000_PRETRAINED": "",
        "NFT1000_TRAIT_LAYERS": f"Moonbirds={MOONBIRDS_LAYERS}",
    }
    return defaults | {k: environ[k] for k in MODEL_KEYS if k in environ}


def _bin(name: str) -> str:
    """A console script of this virtualenv (weed, dask, prefect)."""
    return str(Path(sys.executable).parent / name)


def _python_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Lets Python services import the project's packages even when it is not installed."""
    path = environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{path}" if path else str(PROJECT_ROOT)}


def _http_json(url: str, body: Any = None, timeout_s: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())


def _s3_client(cfg: StackConfig) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint_url,
        aws_access_key_id=AWS_KEY,
        aws_secret_access_key=AWS_KEY,
        region_name=AWS_REGION,
        config=botocore.config.Config(
            retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10
        ),
    )


def _bucket_ready(cfg: StackConfig) -> Callable[[], bool]:
    """Readiness for S3: its port answers before it can serve, so create the bucket."""

    def check() -> bool:
        client = _s3_client(cfg)
        try:
            client.create_bucket(Bucket=cfg.bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            return True
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return False
        return True

    return check


def s3_spec(cfg: StackConfig) -> ServiceSpec:
    flags = {
        "ip": HOST,
        "ip.bind": HOST,
        "dir": cfg.home / "s3",
        "volume.max": 100,
        "volume.preStopSeconds": 0,  # nothing to drain to: one volume server
        "master.port": cfg.weed_master_port,
        "master.port.grpc": cfg.weed_master_grpc_port,
        "master.telemetry": "false",
        "master.electionTimeout": "1s",  # one master: a restart waits this long for itself
        "volume.port": cfg.weed_volume_port,
        "volume.port.grpc": cfg.weed_volume_grpc_port,
        "filer.port": cfg.weed_filer_port,
        "filer.port.grpc": cfg.weed_filer_grpc_port,
        "s3": "true",
        "s3.port": cfg.s3_port,
        "s3.port.grpc": cfg.s3_grpc_port,
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
    }
    return ServiceSpec(
        name="s3",
        argv=[_bin("weed"), "server", *(f"-{k}={v}" for k, v in flags.items())],
        state_dir=cfg.services_dir,
        # weed makes AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment its admin
        # identity: pin the stack's, never whatever real keys the calling shell exports.
        env={k: v for k, v in stack_env(cfg).items() if k.startswith("AWS_")},
        ready_port=cfg.s3_port,
        ready_check=_bucket_ready(cfg),
        stop_signal=signal.SIGINT,
    )


def prefect_server_spec(cfg: StackConfig) -> ServiceSpec:
    # On SQLite, a PREFECT_API_DATABASE_CONNECTION_URL in the environment (an external
    # Postgres) is inherited; without one the server uses SQLite in PREFECT_HOME.
    env = {k: v for k, v in stack_env(cfg).items() if k.startswith("PREFECT_")}
    if cfg.prefect_db == POSTGRES:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = cfg.postgres.url
    return ServiceSpec(
        name="prefect-server",
        argv=[_bin("prefect"), "server", "start", "--host", HOST, "--port", str(cfg.prefect_port)],
        state_dir=cfg.services_dir,
        env=env,
        ready_url=f"{cfg.prefect_api_url}/health",
        timeout_s=180.0,  # a fresh database runs all migrations first
    )


def _dask_names(cfg: StackConfig) -> list[str]:
    return [f"dask-worker-{i}" for i in range(cfg.dask_workers)]


def _dask_scheduler_spec(cfg: StackConfig, penv: ProcessEnv) -> ServiceSpec:
    return ServiceSpec(
        name="dask-scheduler",
        argv=[
            _bin("dask"),
            "scheduler",
            "--host",
            HOST,
            "--port",
            str(cfg.dask_scheduler_port),
            "--dashboard-address",
            f"{HOST}:{cfg.dask_dashboard_port}",
        ],
        state_dir=cfg.services_dir,
        cwd=PROJECT_ROOT,
        env=penv.env,
        unset=penv.unset,
        ready_port=cfg.dask_scheduler_port,
        ready_url=f"http://{HOST}:{cfg.dask_dashboard_port}/health",
    )


def _dask_worker_registered(cfg: StackConfig, name: str) -> Callable[[], bool]:
    def check() -> bool:
        url = f"http://{HOST}:{cfg.dask_dashboard_port}/json/identity.json"
        try:
            workers = _http_json(url).get("workers", {}).values()
        except (OSError, ValueError):
            return False
        return any(w.get("name") == name for w in workers)

    return check


# Dask samples each worker's stacks every 10 ms for its dashboard's Profile page: about
# 4% of a CPU-bound ingest's worker CPU (py-spy, issue 14), and the stack's workers
# serve no dashboard. The caller's own value of the variable wins.
WORKER_PROFILE = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"


def _worker_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    return {} if WORKER_PROFILE in environ else {WORKER_PROFILE: "False"}


def _dask_worker_spec(cfg: StackConfig, name: str, penv: ProcessEnv) -> ServiceSpec:
    """One worker process, one thread: each worker is its own PID, stopped on its own."""
    return ServiceSpec(
        name=name,
        argv=[
            _bin("dask"),
            "worker",
            cfg.dask_address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--host",
            HOST,
            "--local-directory",
            str(cfg.home / "dask"),
        ],
        state_dir=cfg.services_dir,
        cwd=PROJECT_ROOT,  # tasks are unpickled here: the project's `tasks` must import
        # The pipeline's settings and the S3 credentials its tasks sign with, over the
        # worker's own defaults.
        env={**_worker_defaults(os.environ), **penv.env},
        unset=penv.unset,
        ready_check=_dask_worker_registered(cfg, name),
    )


def gateway_spec(cfg: StackConfig) -> ServiceSpec:
    return ServiceSpec(
        name="gateway",
        argv=[
            sys.executable,
            "-m",
            "infra.gateway",
            "--car-dir",
            str(cfg.home / "ipfs"),
            "--host",
            HOST,
            "--port",
            str(cfg.gateway_port),
        ],
        state_dir=cfg.services_dir,
        cwd=PROJECT_ROOT,
        env=_python_env(os.environ),
        ready_url=f"http://{HOST}:{cfg.gateway_port}/health",
    )


@dataclass(frozen=True)
class PrefectWorker:
    """One process worker of the stack: its service name, work pool and worker name."""

    service: str
    pool: str
    name: str
    limit: int | None = None  # flow runs at a time; None: no limit


def prefect_workers(cfg: StackConfig) -> list[PrefectWorker]:
    """`ingest` runs the data flows; `gpu` the training and evaluation, one at a time
    (on this machine on the CPU, with the tiny model)."""
    return [
        PrefectWorker("prefect-worker", cfg.work_pool, PREFECT_WORKER_NAME),
        PrefectWorker("prefect-gpu-worker", cfg.gpu_work_pool, GPU_WORKER_NAME, limit=1),
    ]


def _prefect_worker_online(cfg: StackConfig, worker: PrefectWorker) -> Callable[[], bool]:
    """Ready once the worker heartbeated since its launch (its PID file's mtime).

    A record left by an earlier worker of the same name still reads ONLINE for a while.
    """

    def check() -> bool:
        url = f"{cfg.prefect_api_url}/work_pools/{worker.pool}/workers/filter"
        try:
            launched = (cfg.services_dir / f"{worker.service}.pid").stat().st_mtime
            found = _http_json(url, {})
        except (OSError, ValueError):
            return False
        return any(
            w.get("name") == worker.name
            and w.get("last_heartbeat_time")
            and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp() >= launched
            for w in found
        )

    return check


def _prefect_worker_spec(cfg: StackConfig, worker: PrefectWorker, penv: ProcessEnv) -> ServiceSpec:
    """Flow runs are child processes of this worker: they inherit its env and cwd."""
    limit = [] if worker.limit is None else ["--limit", str(worker.limit)]
    return ServiceSpec(
        name=worker.service,
        argv=[
            _bin("prefect"),
            "worker",
            "start",
            "--pool",
            worker.pool,
            "--type",
            "process",
            "--name",
            worker.name,
            *limit,
        ],
        state_dir=cfg.services_dir,
        cwd=PROJECT_ROOT,
        env=penv.env,
        unset=penv.unset,
        ready_check=_prefect_worker_online(cfg, worker),
    )


def _specs(cfg: StackConfig) -> list[ServiceSpec]:
    """Every service in dependency order (to find and stop them: no environment)."""
    database = [postgres_spec(cfg.postgres)] if cfg.prefect_db == POSTGRES else []
    none = ProcessEnv()
    return [
        s3_spec(cfg),
        *database,
        prefect_server_spec(cfg),
        _dask_scheduler_spec(cfg, none),
        *(_dask_worker_spec(cfg, name, none) for name in _dask_names(cfg)),
        anvil_spec(cfg.services_dir, cfg.anvil_port),
        gateway_spec(cfg),
        *(_prefect_worker_spec(cfg, w, none) for w in prefect_workers(cfg)),
    ]


def _pipeline_specs(cfg: StackConfig, penv: ProcessEnv) -> list[ServiceSpec]:
    """The services that run (or schedule) pipeline code: the scheduler first."""
    return [
        _dask_scheduler_spec(cfg, penv),
        *(_dask_worker_spec(cfg, name, penv) for name in _dask_names(cfg)),
        *(_prefect_worker_spec(cfg, w, penv) for w in prefect_workers(cfg)),
    ]


def _start(spec: ServiceSpec) -> bool:
    """Start one service unless it runs; True if it was started now."""
    was_running = read_pid(spec.pid_file) is not None
    t0 = time.monotonic()
    pid = start(spec)
    state = "already running" if was_running else "started"
    log.info("%s %s (pid %d), ready in %.1fs", spec.name, state, pid, time.monotonic() - t0)
    return not was_running


def _settings_record(spec: ServiceSpec) -> Path:
    return spec.state_dir / f"{spec.name}.settings.json"


def _digests(env: Mapping[str, str]) -> dict[str, str]:
    """Each variable's value as a digest: a record to compare, with no secret in it."""
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(env.items())}


def _start_pipeline(spec: ServiceSpec) -> None:
    """Start a pipeline service unless it runs, and record what environment it got."""
    if _start(spec):
        _settings_record(spec).write_text(json.dumps(_digests(spec.env), indent=1) + "\n")


def stale_services(cfg: StackConfig, environ: Mapping[str, str]) -> dict[str, list[str]]:
    """Running pipeline services started with other values than ``environ`` gives now:
    service -> the variables that differ. `up` starts only what is not running, so these
    keep their old values until `stack down`."""
    stale = {}
    penv = pipeline_process_env(resolve_settings(cfg, environ), environ)
    for spec in _pipeline_specs(cfg, penv):
        try:
            recorded = json.loads(_settings_record(spec).read_text())
        except (OSError, ValueError):
            continue  # never started by this code: nothing to compare with
        now = _digests(spec.env)
        changed = sorted(k for k in recorded.keys() | now.keys() if recorded.get(k) != now.get(k))
        if changed and read_pid(spec.pid_file) is not None:
            stale[spec.name] = changed
    return stale


def _ensure_work_pool(cfg: StackConfig, name: str) -> None:
    """Create a process work pool once, with Prefect's own default job template."""
    pools = f"{cfg.prefect_api_url}/work_pools/"
    try:
        _http_json(pools + name, timeout_s=POOL_TIMEOUT_S)
        return
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    from prefect.workers.process import ProcessWorker  # heavy: imported only when needed

    template = ProcessWorker.get_default_base_job_template()
    pool = {"name": name, "type": ProcessWorker.type, "base_job_template": template}
    try:
        _http_json(pools, pool, timeout_s=POOL_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409: created meanwhile by someone else
            raise
    log.info("created work pool %s", name)


def _storage(cfg: StackConfig) -> None:
    (cfg.home / "s3").mkdir(parents=True, exist_ok=True)  # weed does not create it
    _start(s3_spec(cfg))


def start_orchestration(cfg: StackConfig) -> None:
    """The Prefect server (on Postgres, started first, when the config says so) and its
    work pools."""
    if cfg.prefect_db == POSTGRES:
        ensure_cluster(cfg.postgres, require_bindir())
        _start(postgres_spec(cfg.postgres))
    _start(prefect_server_spec(cfg))
    for worker in prefect_workers(cfg):
        _ensure_work_pool(cfg, worker.pool)


def stale_note(stale: Mapping[str, Sequence[str]]) -> str | None:
    """One sentence on services still running with other values, or None."""
    if not stale:
        return None
    names = sorted({k for keys in stale.values() for k in keys})
    return (
        f"still running with other values of {', '.join(names)}: {', '.join(stale)}; "
        "`nft1000 stack down` then `nft1000 stack up` starts them with these"
    )


def _compute(cfg: StackConfig, penv: ProcessEnv) -> None:
    _start_pipeline(_dask_scheduler_spec(cfg, penv))
    specs = [_dask_worker_spec(cfg, n, penv) for n in _dask_names(cfg)]
    with ThreadPoolExecutor(cfg.dask_workers) as pool:
        list(pool.map(_start_pipeline, specs))


def _demo(cfg: StackConfig) -> None:
    """Demo content, chain and gateway; anvil keeps no state, so a fresh one is redeployed."""
    t0 = time.monotonic()
    content = build_moonbirds(cfg.moonbirds_archive, cfg.home / "ipfs", limit=cfg.moonbirds_count)
    log.info("moonbirds content (%d tokens) in %.1fs", content.count, time.monotonic() - t0)
    fresh = _start(anvil_spec(cfg.services_dir, cfg.anvil_port))
    if fresh or not cfg.registry_path.exists():
        t0 = time.monotonic()
        artifacts = compile_contracts(cfg.home / "chain" / "artifacts.json")
        uris = read_loot_uris(cfg.loot_archive, cfg.loot_count)
        rpc_url = stack_env(cfg)["NFT1000_RPC_URL"]
        addresses = deploy_demo(rpc_url, artifacts, content.metadata_cid, content.count, uris)
        supplies = {"Moonbirds": content.count, "Loot": len(uris)}
        _write_registry(cfg.registry_path, addresses, supplies)
        log.info("demo contracts deployed in %.1fs: %s", time.monotonic() - t0, addresses)
    _start(gateway_spec(cfg))


def _write_registry(path: Path, addresses: dict[str, str], supplies: dict[str, int]) -> None:
    """The deployed collections in NFT1000's collections.json shape."""
    collections = {
        name: {"project_name": name, "contract_address": address, "total_supply": supplies[name]}
        for name, address in addresses.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"collections": collections}, indent=2) + "\n")


def up(
    cfg: StackConfig, *, worker: bool = True, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Start whatever is not running yet, in dependency order; the pipeline's environment.

    ``environ`` (default: this process's) is the calling shell: its NFT1000_* settings
    reach every pipeline process (``resolve_settings``). ``stack.env`` gets the values the
    stack itself sets (its defaults, and the lists it extended), never the shell's.
    """
    t0 = time.monotonic()
    environ = os.environ if environ is None else environ
    resolved = resolve_settings(cfg, environ)  # a bad setting fails before anything starts
    penv = pipeline_process_env(resolved, environ)
    save_config(cfg)
    compute = functools.partial(_compute, penv=penv)
    lanes: list[Callable[[StackConfig], None]] = [_storage, start_orchestration, compute, _demo]
    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [pool.submit(lane, cfg) for lane in lanes]  # independent of each other
    for future in futures:
        future.result()  # the first failure, after every lane has finished
    own = {k: s.value for k, s in resolved.items() if s.source in (STACK, MERGED)}
    (cfg.home / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in own.items()))
    if worker:
        with ThreadPoolExecutor() as pool:
            specs = [_prefect_worker_spec(cfg, w, penv) for w in prefect_workers(cfg)]
            list(pool.map(_start_pipeline, specs))
    log.info("stack up in %.1fs", time.monotonic() - t0)
    return process_env(resolved)


def down(cfg: StackConfig) -> list[str]:
    """Stop every service by PID, dependents first; the names of those that were running."""
    stopped = []
    # With every optional service: one an earlier `up` started under other switches stops too.
    for spec in reversed(_specs(dataclasses.replace(cfg, prefect_db=POSTGRES))):
        timeout = S3_STOP_TIMEOUT_S if spec.name == "s3" else STOP_TIMEOUT_S
        t0 = time.monotonic()
        if stop(spec, timeout_s=timeout):
            log.info("%s stopped in %.1fs", spec.name, time.monotonic() - t0)
            stopped.append(spec.name)
    return stopped


def status(cfg: StackConfig) -> dict[str, int | None]:
    """Service name -> PID while it runs, else None."""
    return {spec.name: read_pid(spec.pid_file) for spec in _specs(cfg)}
