"""Faults injected against the real local services during `nft1000/ingest` runs; prints JSON.

One private stack (SeaweedFS S3, Prefect server and process worker, Dask scheduler
and two worker processes, anvil with the demo contracts, the demo gateway) serves
every scenario. Each scenario is a deployment run of `nft1000/ingest` over Moonbirds
0..tokens-1 under an S3 prefix of its own, with one fault put on mid-run:

- kill -9 of a Dask worker (the one running a shard), of the Prefect worker (its
  flow run lives on: Prefect starts it in a session of its own), of the Prefect
  worker together with its flow run, of SeaweedFS, of the gateway; each service is
  restarted at once by the bench (`infra.stack.up` starts whatever is not running:
  the stack has no supervisor of its own);
- 429 and 503 storms from the gateway, with and without Retry-After, and CAR
  responses cut short (infra/gateway.py's fault options), for a window mid-run.

A run that does not complete, or leaves tokens without an ok row, is run again
under the same prefix, as a user would (at most MAX_RERUNS times). Then, per
scenario: `lost`, requested tokens without an ok manifest row (all demo content is
fine, so every token should end ok); `duplicated`, token ids in more than one
manifest row, plus tokens fetched again (a clean 200 from the gateway) after the
row that was kept was made, i.e. fetched twice although already stored; blob
objects against distinct sha256 (keys are content addresses, and puts are
conditional); the flow runs' end states; `recover_s`, from the fault until the
first checkpoint or manifest written after the service is back (storms: after the
window closes); `extra_s`, the scenario's wall time (runs and reruns) minus that
of a clean run of the same size measured first, in the same bench run.

    python -m bench.faults [--tokens 2000] [--only dask_worker,gateway_429_retry_after]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.config
from distributed import Client

from bench.stack_run import IngestDeployment, RunState, private_stack
from infra import stack
from infra.demo_content import build_moonbirds
from infra.gateway import BlockStore, Faults
from infra.process import ServiceSpec, start, stop
from tasks.core.s3 import ObjectStore
from tasks.core.settings import load_settings
from tasks.ingest.ipfs.car import read_car
from tasks.ingest.ipfs.cid import CID
from tasks.ingest.manifest import ManifestRow, from_parquet
from tasks.ingest.packs import pack_key_of
from tests.data.local_s3 import signing_as

MAX_RERUNS = 2
TRIGGER = 0.3  # kills happen once this share of the run's content requests was answered
STORM = Faults(fraction=0.5, start_s=2.0, duration_s=10.0, seed=1)
TRUNCATE = Faults(truncate_fraction=0.05, start_s=2.0, duration_s=10.0, seed=1)
POLL_S = 0.25

log = logging.getLogger("bench.faults")
WARMUP_TOKENS = 50


@dataclass
class Gateway:
    """The stack's gateway run with a request log (and faults, per scenario)."""

    cfg: stack.StackConfig
    log_path: Path
    _offset: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)

    def spec(self, faults: Faults | None = None) -> ServiceSpec:
        base = stack.gateway_spec(self.cfg)
        argv = [*base.argv, "--request-log", str(self.log_path), *_fault_flags(faults)]
        return dataclasses.replace(base, argv=argv)

    def restart(self, faults: Faults | None = None) -> None:
        """Stop the running gateway (by its PID file) and start one with these faults."""
        stop(self.spec())
        start(self.spec(faults))

    def read(self) -> list[dict[str, Any]]:
        """Every logged request so far (the log is appended across restarts)."""
        with suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
            end = data.rfind(b"\n") + 1
            self._offset += end
            self.entries += [json.loads(line) for line in data[:end].splitlines()]
        return self.entries

    def clean_since(self, t: float) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["t"] >= t and e["status"] == 200 and not e["fault"]]


def _fault_flags(faults: Faults | None) -> list[str]:
    if faults is None:
        return []
    flags = {
        "--fault-status": faults.status,
        "--fault-fraction": faults.fraction,
        "--fault-retry-after": faults.retry_after,
        "--truncate-fraction": faults.truncate_fraction,
        "--fault-start-s": faults.start_s,
        "--fault-duration-s": faults.duration_s,
        "--fault-seed": faults.seed,
    }
    return [str(x) for k, v in flags.items() if v is not None for x in (k, v)]


class Progress:
    """Polls the scenario's manifest keys; when each checkpoint or manifest first showed."""

    def __init__(self, cfg: stack.StackConfig, prefix: str) -> None:
        self.client = boto3.client(
            "s3",
            endpoint_url=cfg.s3_endpoint_url,
            aws_access_key_id=stack.AWS_KEY,
            aws_secret_access_key=stack.AWS_KEY,
            region_name=stack.AWS_REGION,
            config=botocore.config.Config(
                retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2
            ),
        )
        self.bucket, self.prefix = cfg.bucket, prefix + "manifests/"
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix
                )
                keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            except Exception:  # S3 is down: that is one of the faults
                continue
            now = time.time()
            for key in keys:
                self.seen.setdefault(key, now)

    def first_after(self, t: float) -> float | None:
        later = [s for s in self.seen.values() if s > t]
        return min(later) if later else None

    @contextmanager
    def running(self) -> Iterator[Progress]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


@dataclass
class Bench:
    cfg: stack.StackConfig
    env: dict[str, str]
    deployment: IngestDeployment
    gateway: Gateway
    dask: Client
    tokens: int
    timeout_s: float
    files: dict[str, tuple[int, str]]  # (token, metadata or image) by file CID

    @property
    def collections(self) -> list[str]:
        return [f"Moonbirds:0-{self.tokens - 1}"]

    def wait_for_share(self, since: float, share: float) -> None:
        """Until `share` of the run's content requests (2 per token) was answered."""
        wanted = int(share * 2 * self.tokens)
        deadline = time.monotonic() + self.timeout_s
        while len(self.gateway.clean_since(since)) < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {wanted} gateway answers in {self.timeout_s}s")
            time.sleep(POLL_S)

    def pid(self, service: str) -> int:
        pid = stack.status(self.cfg)[service]
        if pid is None:
            raise RuntimeError(f"{service} is not running")
        return pid

    def restart_stack(self) -> None:
        stack.up(self.cfg)


@dataclass
class Fault:
    """What one injection did: when, when the service was back, and what it says."""

    at: float
    back: float
    notes: list[str] = field(default_factory=list)
    killed_run: bool = False  # the flow run's own process was killed


def _kill(pid: int) -> None:
    """kill -9 of a service's process group; reaped when it is this process's child."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill_dask_worker(bench: Bench, since: float) -> Fault:
    bench.wait_for_share(since, TRIGGER)
    workers = bench.dask.scheduler_info()["workers"]
    busy = [a for a, keys in bench.dask.processing().items() if keys and a in workers]
    name = str(workers[busy[0]]["name"]) if busy else "dask-worker-0"
    at = time.time()
    _kill(bench.pid(name))
    bench.restart_stack()
    return Fault(at, time.time(), [f"killed {name}{'' if busy else ' (none was busy)'}"])


def _kill_prefect_worker(bench: Bench, since: float, with_run: bool) -> Fault:
    bench.wait_for_share(since, TRIGGER)
    worker = bench.pid("prefect-worker")
    runs = _children(worker)
    at = time.time()
    _kill(worker)
    if with_run:
        for pid in runs:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    bench.restart_stack()
    what = f"flow run process(es) {runs} {'killed too' if with_run else 'left running'}"
    return Fault(at, time.time(), [f"killed the Prefect worker; {what}"], killed_run=with_run)


def kill_prefect_worker(bench: Bench, since: float) -> Fault:
    return _kill_prefect_worker(bench, since, with_run=False)


def kill_prefect_worker_and_run(bench: Bench, since: float) -> Fault:
    return _kill_prefect_worker(bench, since, with_run=True)


def kill_s3(bench: Bench, since: float) -> Fault:
    bench.wait_for_share(since, TRIGGER)
    at = time.time()
    _kill(bench.pid("s3"))
    bench.restart_stack()
    return Fault(at, time.time(), ["killed weed server (master, volume, filer, S3 in one)"])


def kill_gateway(bench: Bench, since: float) -> Fault:
    bench.wait_for_share(since, TRIGGER)
    at = time.time()
    _kill(bench.pid("gateway"))
    start(bench.gateway.spec())
    return Fault(at, time.time(), ["killed the gateway"])


def storm(faults: Faults) -> Callable[[Bench, float], Fault]:
    """A gateway with these faults from the run's start; its window is the fault."""

    def inject(bench: Bench, since: float) -> Fault:
        deadline = time.monotonic() + bench.timeout_s
        while not (first := [e for e in bench.gateway.read() if e["t"] >= since]):
            if time.monotonic() > deadline:
                raise TimeoutError("the run sent the gateway no request")
            time.sleep(POLL_S)
        at = first[0]["t"] + faults.start_s
        return Fault(at, at + (faults.duration_s or 0.0))

    return inject


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Bench, float], Fault] | None = None
    gateway_faults: Faults | None = None  # the gateway runs with these during the scenario


SCENARIOS = [
    Scenario("dask_worker", kill_dask_worker),
    Scenario("prefect_worker", kill_prefect_worker),
    Scenario("prefect_worker_and_flow_run", kill_prefect_worker_and_run),
    Scenario("seaweedfs", kill_s3),
    Scenario("gateway", kill_gateway),
    *(
        Scenario(f"gateway_{status}_{name}", storm(f), f)
        for status in (429, 503)
        for name, after in (("retry_after", "1"), ("no_retry_after", None))
        if (f := dataclasses.replace(STORM, status=status, retry_after=after))
    ),
    Scenario("gateway_truncated_cars", storm(TRUNCATE), TRUNCATE),
]


@dataclass
class Check:
    """The scenario's stored state: manifest rows, blobs, fetches per token."""

    lost: list[int]
    rows_twice: int
    failed: dict[str, int]  # requested tokens not ok, by error kind
    leftover_parts: int
    blob_objects: int  # packs and blobs stored alone
    blob_sha256: int  # distinct sha256 the rows name
    blob_refs: int  # distinct places the rows name: equals blob_sha256 when stored once
    orphan_blobs: int  # objects named by no row (a pack of a killed run, not yet swept)
    kept: dict[int, ManifestRow]


def check(store: ObjectStore, tokens: int) -> Check:
    keys = store.list_keys(store.key("manifests") + "/")
    rows: list[ManifestRow] = []
    for key in (k for k in keys if "/_parts/" not in k):
        data = store.get(key)
        rows += from_parquet(data) if data is not None else []
    count = Counter(int(r.token_id) for r in rows)
    kept = {int(r.token_id): r for r in rows}
    wanted = range(tokens)
    objects = {k for folder in ("blobs", "packs") for k in store.list_keys(store.key(folder) + "/")}
    refs = {k for r in rows for k in (r.metadata_key, r.image_key) if k}
    named = {pack_key_of(k) or k for k in refs}
    return Check(
        lost=[i for i in wanted if i not in kept or kept[i].status != "ok"],
        rows_twice=sum(1 for n in count.values() if n > 1),
        failed=dict(Counter(str(kept[i].error_kind) for i in wanted if kept_failed(kept, i))),
        leftover_parts=sum(1 for k in keys if "/_parts/" in k),
        blob_objects=len(objects),
        blob_sha256=len({d for r in rows for d in (r.metadata_sha256, r.sha256) if d}),
        blob_refs=len(refs),
        orphan_blobs=len(objects - named),
        kept=kept,
    )


def kept_failed(kept: dict[int, ManifestRow], token: int) -> bool:
    return token in kept and kept[token].status != "ok"


def stored_ids(store: ObjectStore) -> set[int]:
    """Tokens whose row is done in S3 right now: in a manifest or a checkpoint part."""
    ids: set[int] = set()
    for key in store.list_keys(store.key("manifests") + "/"):
        data = store.get(key)
        if data is not None:
            ids.update(int(r.token_id) for r in from_parquet(data) if r.done)
    return ids


def file_tokens(cfg: stack.StackConfig) -> dict[str, tuple[int, str]]:
    """(token, metadata or image) of every demo file's own CID: once a directory is
    verified, ingest asks for its files by their own CIDs (/ipfs/<file cid>)."""
    content = build_moonbirds(cfg.moonbirds_archive, cfg.home / "ipfs", cfg.moonbirds_count)
    _, blocks = read_car(content.car_path.read_bytes())
    files = BlockStore(blocks)
    found: dict[str, tuple[int, str]] = {}
    for i in range(content.count):
        for root, name, kind in (
            (content.metadata_cid, str(i), "metadata"),
            (content.images_cid, f"{i}.png", "image"),
        ):
            cid, _ = files.resolve(CID.parse(root), (name,))
            found[str(cid)] = (i, kind)
    return found


def fetches(
    entries: list[dict[str, Any]], files: dict[str, tuple[int, str]]
) -> dict[tuple[int, str], list[float]]:
    """Clean (200, no fault) gateway answers per (token, metadata or image): their times.
    A path is /ipfs/<directory>/<name>, or /ipfs/<file cid> (``files`` names those)."""
    found: dict[tuple[int, str], list[float]] = {}
    for e in entries:
        if e["status"] == 200 and not e["fault"]:
            parts = e["path"].strip("/").split("/")
            if len(parts) == 2:
                key = files[parts[1]]
            else:
                name = parts[-1]
                kind = "image" if name.endswith(".png") else "metadata"
                key = (int(name.removesuffix(".png")), kind)
            found.setdefault(key, []).append(e["t"])
    return found


def refetched(
    entries: list[dict[str, Any]],
    snapshots: list[tuple[float, set[int]]],
    files: dict[str, tuple[int, str]],
) -> tuple[int, int]:
    """Tokens fetched more than once; and those fetched after a snapshot had them stored:
    work redone although already stored (the resume should have skipped them)."""
    found = fetches(entries, files)
    twice = {token for (token, _), times in found.items() if len(times) > 1}
    again = {
        token
        for (token, _), times in found.items()
        for at, stored in snapshots
        if token in stored and max(times) > at
    }
    return len(twice), len(again)


def run_scenario(bench: Bench, scenario: Scenario, baseline_s: float | None) -> dict[str, Any]:
    prefix = f"faults/{scenario.name}/"
    settings = load_settings(bench.env).replace(s3_prefix=prefix)
    store = ObjectStore(settings)
    log.info("scenario %s: %d tokens under %s", scenario.name, bench.tokens, prefix)
    if scenario.gateway_faults is not None:
        bench.gateway.restart(scenario.gateway_faults)
    since = time.time()
    states: list[str] = []
    failed_first: dict[str, int] | None = None
    fault: Fault | None = None
    notes: list[str] = []
    snapshots: list[tuple[float, set[int]]] = []  # (when, tokens stored then)
    progress = Progress(bench.cfg, prefix)
    with progress.running():
        for attempt in range(1 + MAX_RERUNS):
            if attempt:
                snapshots.append((time.time(), stored_ids(store)))
            run_id = bench.deployment.start(bench.collections, prefix)
            if attempt == 0 and scenario.inject is not None:
                fault = scenario.inject(bench, since)
                log.info("scenario %s: %s", scenario.name, "; ".join(fault.notes) or "fault set")
                notes += fault.notes
                if fault.killed_run:
                    bench.deployment.mark_crashed(run_id, "its process was killed (bench)")
                snapshots.append((time.time(), stored_ids(store)))
            state = bench.deployment.wait(run_id, bench.timeout_s)
            log.info("scenario %s: run %s ended %s", scenario.name, run_id, state.name)
            if state.type != "COMPLETED":
                notes.append(f"run {attempt + 1} {state.name}: {state.message[:300]}")
            states.append(state.name if state.final else f"{state.name} (timed out)")
            result = check(store, bench.tokens)
            if failed_first is None:
                failed_first = dict(result.failed)
            if not state.final:
                bench.deployment.mark_crashed(run_id, "timed out in the faults bench")
                notes.append(f"run {run_id} never finished")
                break
            if _finished(state, result):
                break
    wall = time.time() - since
    if scenario.gateway_faults is not None:
        bench.gateway.restart()
    twice, after_stored = refetched(bench.gateway.clean_since(since), snapshots, bench.files)
    recover = None
    if fault is not None and (seen := progress.first_after(fault.back)) is not None:
        recover = round(seen - fault.at, 1)
    elif fault is not None:
        notes.append("nothing was left to store once the service was back")
    faulted = Counter(e["fault"] for e in bench.gateway.read() if e["t"] >= since and e["fault"])
    if faulted:
        notes.append(f"gateway faults answered: {dict(faulted)}")
    if len(states) > 1:
        notes.append(f"failed after the first run: {failed_first}; rerun {len(states) - 1}x")
    return {
        "tokens": bench.tokens,
        "lost": len(result.lost),
        "duplicated": result.rows_twice + after_stored,
        "end_states": states,
        "recover_s": recover,
        "extra_s": None if baseline_s is None else round(wall - baseline_s, 1),
        "notes": notes,
        "detail": {
            "wall_s": round(wall, 1),
            "down_s": None if fault is None else round(fault.back - fault.at, 1),
            "failed_first_run": failed_first,
            "failed_at_end": result.failed,
            "rows_twice": result.rows_twice,
            "fetched_again_after_stored": after_stored,
            "fetched_twice": twice,
            "blob_objects": result.blob_objects,
            "blob_distinct_sha256": result.blob_sha256,
            "blob_distinct_refs": result.blob_refs,
            "orphan_blobs": result.orphan_blobs,
            "leftover_checkpoint_parts": result.leftover_parts,
        },
    }


def _finished(state: RunState, result: Check) -> bool:
    """Done unless the run did not complete or a rerun could still fix a lost token."""
    if state.type != "COMPLETED":
        return False
    return all(i in result.kept and not result.kept[i].retryable for i in result.lost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="Moonbirds per scenario")
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per run")
    parser.add_argument("--logs", type=Path, help="keep the services' logs in this folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    names = [s.name for s in SCENARIOS]
    chosen = args.only.split(",") if args.only else names
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {names}")
    # Flow runs start within 2 s of being created (Prefect's default poll is 10 s).
    os.environ["PREFECT_WORKER_QUERY_SECONDS"] = "2"
    started = time.time()
    with private_stack(args.logs, moonbirds_count=args.tokens, loot_count=10) as (cfg, env):
        gateway = Gateway(cfg, cfg.home / "gateway-requests.jsonl")
        gateway.restart()
        deployment = IngestDeployment(env, cfg.home / "deploy.log")
        with (
            signing_as(
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]
            ),
            Client(cfg.dask_address, timeout=30) as dask,
        ):
            files = file_tokens(cfg)
            bench = Bench(cfg, env, deployment, gateway, dask, args.tokens, args.timeout_s, files)
            # Warm caches and both Dask workers (their first task imports Prefect).
            warm = dataclasses.replace(bench, tokens=min(args.tokens, WARMUP_TOKENS))
            run_scenario(warm, Scenario("warmup"), None)
            clean = run_scenario(bench, Scenario("clean"), None)
            baseline = float(clean["detail"]["wall_s"])
            results = {"clean": clean}
            for scenario in SCENARIOS:
                if scenario.name in chosen:
                    results[scenario.name] = run_scenario(bench, scenario, baseline)
    print(
        json.dumps(
            {
                "benchmark": "faults",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "tokens_per_scenario": args.tokens,
                "baseline_clean_run_s": baseline,
                "bench_s": round(time.time() - started, 1),
                "ok": all(r["lost"] == 0 and r["duplicated"] == 0 for r in results.values()),
                "scenarios": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
