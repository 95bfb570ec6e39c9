"""The local stack: S3 (SeaweedFS), Prefect, Dask, anvil and the demo gateway on 127.0.0.1.

The Prefect server keeps its database in SQLite, or with ``NFT1000_PREFECT_DB=postgres``
in a PostgreSQL cluster the stack starts too (``infra.postgres``).

Everything lives in one state folder (data, PID and log files, the demo registry,
``stack.env``), and every service is started and stopped by PID through
``infra.process``, so ``up`` is idempotent and ``down`` stops exactly what ``up``
started. Independent services start side by side; the whole demo is up in
well under a minute.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
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
    """Everything the pipeline (and a shell) needs to reach this stack."""
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
        **model_env(os.environ),
    }


def pipeline_env(home: Path) -> dict[str, str]:
    """The environment the pipeline runs with: the local stack's (when one was started in
    ``home``), overridden by this shell's NFT1000_* and PREFECT_API_URL. The shell's AWS_*
    credentials count only when the shell also names its own S3 endpoint: the local S3
    server knows only the stack's keys."""
    env = stack_env(load_config(home)) if (home / "stack.json").exists() else {}
    prefixes = ["NFT1000_", "PREFECT_API_URL"]
    if "NFT1000_S3_ENDPOINT_URL" in os.environ or not env:
        prefixes.append("AWS_")
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith(tuple(prefixes))}}


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


def _python_env() -> dict[str, str]:
    """Lets Python services import the project's packages even when it is not installed."""
    path = os.environ.get("PYTHONPATH")
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


def _dask_scheduler_spec(cfg: StackConfig) -> ServiceSpec:
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
        env=_python_env(),
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


def _dask_worker_spec(cfg: StackConfig, name: str) -> ServiceSpec:
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
        env=stack_env(cfg) | _python_env(),  # tasks reach S3 with the stack's credentials
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
        env=_python_env(),
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


def _prefect_worker_spec(cfg: StackConfig, worker: PrefectWorker) -> ServiceSpec:
    """Flow runs are child processes of this worker: they inherit the stack env and cwd."""
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
        env=stack_env(cfg) | _python_env(),
        ready_check=_prefect_worker_online(cfg, worker),
    )


def _specs(cfg: StackConfig) -> list[ServiceSpec]:
    """Every service in dependency order."""
    database = [postgres_spec(cfg.postgres)] if cfg.prefect_db == POSTGRES else []
    return [
        s3_spec(cfg),
        *database,
        prefect_server_spec(cfg),
        _dask_scheduler_spec(cfg),
        *(_dask_worker_spec(cfg, name) for name in _dask_names(cfg)),
        anvil_spec(cfg.services_dir, cfg.anvil_port),
        gateway_spec(cfg),
        *(_prefect_worker_spec(cfg, w) for w in prefect_workers(cfg)),
    ]


def _start(spec: ServiceSpec) -> bool:
    """Start one service unless it runs; True if it was started now."""
    was_running = read_pid(spec.pid_file) is not None
    t0 = time.monotonic()
    pid = start(spec)
    state = "already running" if was_running else "started"
    log.info("%s %s (pid %d), ready in %.1fs", spec.name, state, pid, time.monotonic() - t0)
    return not was_running


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


def _compute(cfg: StackConfig) -> None:
    _start(_dask_scheduler_spec(cfg))
    with ThreadPoolExecutor(cfg.dask_workers) as pool:
        list(pool.map(_start, (_dask_worker_spec(cfg, n) for n in _dask_names(cfg))))


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


def up(cfg: StackConfig, *, worker: bool = True) -> dict[str, str]:
    """Start whatever is not running yet, in dependency order; the stack's env."""
    t0 = time.monotonic()
    save_config(cfg)
    lanes = [_storage, start_orchestration, _compute, _demo]  # independent of each other
    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [pool.submit(lane, cfg) for lane in lanes]
    for future in futures:
        future.result()  # the first failure, after every lane has finished
    env = stack_env(cfg)
    (cfg.home / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    if worker:
        with ThreadPoolExecutor() as pool:
            specs = [_prefect_worker_spec(cfg, w) for w in prefect_workers(cfg)]
            list(pool.map(_start, specs))
    log.info("stack up in %.1fs", time.monotonic() - t0)
    return env


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
