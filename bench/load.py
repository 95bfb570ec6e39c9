"""Load on the Prefect server: one big ingest through nft1000/ingest on Postgres and on SQLite.

For each backend a private stack starts (free ports, its own home, every service
of `nft1000 stack up`, the Prefect server's database chosen by ``prefect_db``),
the deployments are registered, and one collection of ``--tokens`` tokens is
ingested through the real deployment: the process worker runs the flow, its block
tasks run on the stack's Dask workers, and every task run, state change, log line
and artifact goes through the Prefect server under test.

The collection is on-chain (a DemoOnChain contract): token i's URI is a data: URI
of JSON naming it and pointing at one of ``--images`` demo Moonbirds images on the
demo IPFS gateway, so every token is real work through the same code (the chain
read, the JSON checks, an IPFS fetch verified against its CID, S3 writes).

Per backend it reports tokens, tokens/s, wall time, the flow run's end state, task
runs by state, the server's HTTP answers from its access log (5xx, and the 429/5xx
that Prefect's clients retry), its 'database is locked' lines, and the peak memory
of the Prefect server (and of Postgres). Every process the bench started is
stopped by PID, also on failure.

    python -m bench.load [--tokens 100000] [--backends postgres,sqlite] [--shard-size N]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench.measure import Meter
from bench.stack_run import api, copy_logs
from infra import deployments, stack
from infra.demo_chain import (
    LOOT_BYTES_PER_TX,
    compile_contracts,
    deploy_contract,
    rpc,
    send_transaction,
)
from infra.demo_content import build_moonbirds
from infra.process import alive, read_pid
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.ingest.chain import encode_call
from tasks.ingest.summary import summarize
from tests.data.local_s3 import signing_as

# The server logs one access line per request at INFO (its default is WARNING), and
# SQLite's retryable lock errors only when asked to.
SERVER_LOGGING = {
    "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
    "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",
}
_ACCESS = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) \S+ HTTP/[\d.]+" (\d{3})')
_LOCKED = "database is locked"
# Answers Prefect's client retries (prefect.client.base; it logs the retry at DEBUG only,
# so the server's access log is where they show).
RETRIED_BY_CLIENTS = frozenset({"429", "502", "503", "504"})
SAMPLE_EVERY_S = 1.0


def token_uri(token_id: int, images_cid: str, images: int) -> str:
    """Token ``token_id``'s on-chain URI: JSON naming it, its image one of the demo's."""
    image = token_id % images
    metadata = {
        "name": f"Load #{token_id}",
        "description": f"Load test token {token_id}, drawn as Moonbird {image}.",
        "image": f"ipfs://{images_cid}/{image}.png",
        "attributes": [{"trait_type": "Moonbird", "value": str(image)}],
    }
    encoded = base64.b64encode(json.dumps(metadata, separators=(",", ":")).encode())
    return "data:application/json;base64," + encoded.decode()


def _batches(
    first_id: int, count: int, uri: Callable[[int], str]
) -> Iterator[tuple[int, list[str]]]:
    """(first id, URIs) slices whose calldata stays under the demo's per-transaction cap."""
    batch: list[str] = []
    start = size = 0
    for token_id in range(first_id, first_id + count):
        text = uri(token_id)
        cost = len(text) + 96  # string bytes plus offset, length and padding
        if batch and size + cost > LOOT_BYTES_PER_TX:
            yield start, batch
            batch, size = [], 0
        if not batch:
            start = token_id
        batch.append(text)
        size += cost
    if batch:
        yield start, batch


def deploy_load_collection(cfg: stack.StackConfig, tokens: int) -> str:
    """Deploy the load collection (ids 1..tokens) on the stack's chain; its address."""
    content = build_moonbirds(cfg.moonbirds_archive, cfg.home / "ipfs", cfg.moonbirds_count)
    artifacts = compile_contracts(cfg.home / "chain" / "artifacts.json")
    rpc_url = stack.stack_env(cfg)["NFT1000_RPC_URL"]
    sender = str(rpc(rpc_url, "eth_accounts", [])[0])
    address = deploy_contract(
        rpc_url, sender, artifacts["DemoOnChain"], ["string", "string"], ["Load", "LOAD"]
    )
    for first, uris in _batches(
        1, tokens, lambda i: token_uri(i, content.images_cid, content.count)
    ):
        data = encode_call(
            "mintWithURIs(address,uint256,string[])",
            ["address", "uint256", "string[]"],
            [sender, first, uris],
        )
        send_transaction(rpc_url, sender, data, to=address)
    return address.lower()


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            found.append((int(entry.name), int(fields[1]), int(fields[2])))
    return found


def _group_pids(pgid: int) -> list[int]:
    """The processes of one process group (a service and whatever it forked)."""
    return [pid for pid, _, group in _processes() if group == pgid]


def _memory_kb(pids: Sequence[int], field: str) -> int:
    """Sum of one /proc/<pid>/smaps_rollup field (Rss or Pss) over processes, in kB."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        total += int(match[1]) if match else 0
    return total


class PeakMemory:
    """Samples the memory of service process groups every second; keeps the peaks.

    Postgres is many processes sharing its buffers, so it is summed as PSS (shared
    pages split among their users); the Prefect server's process group as RSS.
    """

    def __init__(self, groups: dict[str, tuple[int, str]]) -> None:
        self.groups = groups  # name -> (process group id, Rss or Pss)
        self.peak_kb = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            for name, (pgid, field) in self.groups.items():
                now = _memory_kb(_group_pids(pgid), field)
                self.peak_kb[name] = max(self.peak_kb[name], now)


def server_log_counts(log_path: Path) -> dict[str, Any]:
    """The server's answers by status class, its 5xx, those its clients retry, and its
    'database is locked' lines."""
    codes: Counter[str] = Counter()
    locked = 0
    with log_path.open(errors="replace") as log:
        for line in log:
            match = _ACCESS.search(line)
            if match:
                codes[match[1]] += 1
            locked += _LOCKED in line
    classes: Counter[str] = Counter()
    for code, count in codes.items():
        classes[code[0] + "xx"] += count
    return {
        "requests": codes.total(),
        "by_status": dict(sorted(classes.items())),
        "http_5xx": classes["5xx"],
        "retried_by_clients": sum(codes[c] for c in RETRIED_BY_CLIENTS),
        "database_locked_lines": locked,
    }


def flow_run_report(env: Mapping[str, str], flow_run_id: str) -> dict[str, Any]:
    """The run's end state and seconds by the server's clock, and its task runs by state."""
    run = api(env, f"/flow_runs/{flow_run_id}")
    by_state: dict[str, int] = {}
    for state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING"):
        count = api(
            env,
            "/task_runs/count",
            {
                "flow_runs": {"id": {"any_": [flow_run_id]}},
                "task_runs": {"state": {"type": {"any_": [state]}}},
            },
        )
        if count:
            by_state[state.lower()] = int(count)
    return {
        "state": run["state_type"],
        "run_seconds": round(float(run.get("total_run_time") or 0.0), 1),
        "task_runs": by_state,
    }


def _descendants(roots: Sequence[int]) -> list[int]:
    """Every live process below ``roots`` (flow runs the worker started, their children)."""
    children: dict[int, list[int]] = {}
    for pid, parent, _ in _processes():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_everything(cfg: stack.StackConfig) -> None:
    """``stack.down``, then SIGKILL by PID whatever the services had started and left."""
    pids = [pid for pid in stack.status(cfg).values() if pid is not None]
    below = _descendants(pids)
    stack.down(cfg)
    for pid in below:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """os.environ with ``changes`` for the block (the services inherit it)."""
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_backend(backend: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """One private stack on ``backend``, one ingest of ``args.tokens``; its report."""
    home = Path(tempfile.mkdtemp(prefix=f"nft1000-load-{backend}-"))
    home.chmod(0o755)  # postgres's own OS user passes through it
    cfg = stack.StackConfig.with_free_ports(
        home, moonbirds_count=args.images, loot_count=1, prefect_db=backend
    )
    log_path = log_dir / f"{backend}.log"
    try:
        with environment(SERVER_LOGGING), log_path.open("w") as log:
            meter = Meter()
            env = stack.up(cfg)
            stack_seconds = meter.seconds()
            meter = Meter()
            address = deploy_load_collection(cfg, args.tokens)
            deploy_seconds = meter.seconds()
            deployments.register(env, log)
            groups = {"prefect_server": (_pid(cfg, "prefect-server"), "Rss")}
            if backend == stack.POSTGRES:
                groups["postgres"] = (_pid(cfg, "postgres"), "Pss")
            params = {"collections": json.dumps([f"{address}:1-{args.tokens}"])}
            if args.shard_size:
                params["shard_size"] = str(args.shard_size)
            with PeakMemory(groups) as memory:
                meter = Meter()
                outcome = deployments.run(env, "nft1000/ingest", params, log)
                wall = meter.seconds()
        report: dict[str, Any] = {
            "backend": backend,
            "stack_up_seconds": round(stack_seconds, 1),
            "mint_seconds": round(deploy_seconds, 1),
            "completed": outcome.completed,
        }
        if outcome.flow_run_id is not None:
            report["flow_run"] = flow_run_report(env, outcome.flow_run_id)
        with signing_as(stack.AWS_KEY, stack.AWS_KEY, stack.AWS_REGION):
            rows = summarize(ObjectStore(load_settings(env)))
        tokens = sum(int(r["tokens"]) for r in rows)
        report |= {
            "tokens": tokens,
            "ok": sum(int(r["ok"]) for r in rows),
            "failed": sum(int(r["failed"]) for r in rows),
            # From `prefect deployment run` until the run ended: flow-run startup included.
            "wall_seconds": round(wall, 1),
            "tokens_per_s": round(tokens / wall, 1),
            "server": server_log_counts(cfg.services_dir / "prefect-server.log"),
            "peak_memory_mb": {k: round(v / 1024) for k, v in memory.peak_kb.items()},
        }
        return report
    finally:
        stop_everything(cfg)
        copy_logs(cfg, log_dir / backend)
        shutil.rmtree(home, ignore_errors=True)


def _pid(cfg: stack.StackConfig, service: str) -> int:
    pid = read_pid(cfg.services_dir / f"{service}.pid")
    if pid is None:
        raise RuntimeError(f"{service} is not running")
    return pid


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A terminated bench unwinds through its finally blocks, which stop the stacks."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--backends", default="postgres,sqlite", help="comma-separated")
    parser.add_argument("--images", type=int, default=1_000, help="demo images drawn from")
    parser.add_argument(
        "--shard-size", type=int, default=0, help="tokens per block task (0: the flow's)"
    )
    parser.add_argument("--logs", type=Path, default=Path(".nft1000/bench-load"))
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args.logs.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for backend in backends:
        try:
            results.append(run_backend(backend, args, args.logs.resolve()))
        except Exception as e:  # the other backend still runs; the report says what broke
            results.append({"backend": backend, "completed": False, "error": repr(e)[:2000]})
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "load",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tokens_requested": args.tokens,
        "shard_size": args.shard_size or Settings().shard_size,
        "logs": str(args.logs),
        "backends": results,
    }
    (args.logs / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    sys.exit(0 if all(r["completed"] for r in results) else 1)


if __name__ == "__main__":
    main()
