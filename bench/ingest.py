"""Ingest beside img2dataset, in one run on this machine; prints JSON.

Starts a private local stack (free ports, temporary home) holding the first
``--tokens`` Moonbirds, warms the two Dask workers up on a few tokens, then for
each added gateway latency (``--latencies``, in ms) restarts the stack's gateway
with that latency and, against it:

1. the project ingests the tokens on the stack's Dask cluster (two worker
   processes) as the flow does: tokenURIs from the chain, metadata and image as
   verified CARs, both stored in S3 (SeaweedFS), one manifest per block, under an
   S3 prefix of its own;
2. img2dataset (its own virtual environment, ``bench/img2dataset_env.py``; two
   processes of 64 threads, no resize, no re-encoding) downloads the same images
   from the same gateway as plain files (``bench/img2dataset_run.py``).

The project meets the restarted gateway's caches cold; img2dataset then finds
the images' paths resolved, so the order favours the baseline.

CPU per item is the CPU of every process of a side over its run divided by its
items (``bench/cpu_tree.py``): for the project each Dask worker, the scheduler,
SeaweedFS, the gateway, anvil and this process (the Dask client); for
img2dataset its whole process tree and the gateway. ``machine`` per run gives
how many cores the whole machine kept busy meanwhile, anyone's work: far above
``cores_busy_measured`` means the run was not alone.

    python -m bench.ingest [--tokens 10000] [--latencies 0,50]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distributed import Client

from bench import img2dataset_run
from bench.cpu_tree import machine_busy_seconds, snapshot, spent
from bench.img2dataset_env import VERSION, ensure_img2dataset
from bench.measure import Meter
from infra import stack
from infra.demo_content import build_moonbirds
from infra.process import ServiceSpec, start, stop
from tasks.core.settings import Settings, load_settings
from tasks.ingest.blocks import BlockSpec, IngestResult, ingest_block, plan_blocks
from tasks.ingest.registry import load_registry

MAX_TOKENS = 10_000  # the demo's Moonbirds
WARMUP_TOKENS = 20  # per Dask worker, under a prefix of its own: imports, connections
CPU_AIM_MS = 3.0  # CPU per token, every process of the project
RATE_AIM = 1.0  # tokens/s over img2dataset's images/s
IMG2DATASET_TIMEOUT_S = 900.0
# The stack's services the project's ingest runs through, by role.
PROJECT_SERVICES = {
    "dask-worker-0": "dask-worker-0",
    "dask-worker-1": "dask-worker-1",
    "dask-scheduler": "dask-scheduler",
    "seaweedfs": "s3",
    "gateway": "gateway",
    "anvil": "anvil",
}
CLIENT = "bench-client"

log = logging.getLogger("bench.ingest")


def gateway_spec(cfg: stack.StackConfig, latency_ms: float) -> ServiceSpec:
    """The stack's gateway with an added latency (same PID file: `stack.down` stops it)."""
    base = stack.gateway_spec(cfg)
    return dataclasses.replace(base, argv=[*base.argv, "--latency-ms", str(latency_ms)])


def restart_gateway(cfg: stack.StackConfig, latency_ms: float) -> None:
    spec = gateway_spec(cfg, latency_ms)
    stop(spec)
    start(spec)


def roles(cfg: stack.StackConfig, wanted: Mapping[str, str]) -> dict[str, int]:
    """Role -> PID of the running services named by `wanted` (role -> service)."""
    running = stack.status(cfg)
    pids = {role: running.get(service) for role, service in wanted.items()}
    found = {role: pid for role, pid in pids.items() if pid is not None}
    if len(found) < len(pids):
        raise RuntimeError(f"services not running: {', '.join(pids.keys() - found.keys())}")
    return found


def per_item_ms(cpu: Mapping[str, float], items: int) -> dict[str, float]:
    """CPU milliseconds per item, by role."""
    return {role: round(1000 * seconds / max(items, 1), 3) for role, seconds in cpu.items()}


def machine_share(measured_s: float, busy_s: float, wall_s: float) -> dict[str, float]:
    """Cores kept busy during a run: by the measured processes, and by anyone."""
    return {
        "cores_busy_measured": round(measured_s / wall_s, 2),
        "cores_busy_all": round(busy_s / wall_s, 2),
    }


def aims(project: Mapping[str, Any], ratio: float) -> dict[str, bool]:
    """Whether the project's run meets issue 14's aims: CPU per token, and rate."""
    return {"cpu": project["cpu_ms_per_token"] <= CPU_AIM_MS, "rate": ratio >= RATE_AIM}


def warm_up(client: Client, env: Mapping[str, str], address: str) -> None:
    """A few tokens on every Dask worker, each under its own prefix, before measuring."""
    spec = plan_blocks("Moonbirds", address, range(WARMUP_TOKENS), 1000)[0]
    workers = sorted(client.scheduler_info()["workers"])
    futures = [
        client.submit(
            ingest_block, spec, _settings(env, f"bench-warmup-{n}/"), workers=[w], pure=False
        )
        for n, w in enumerate(workers)
    ]
    client.gather(futures)


def _settings(env: Mapping[str, str], prefix: str) -> Settings:
    return load_settings(dict(env)).replace(s3_prefix=prefix)


def run_project(
    cfg: stack.StackConfig, client: Client, settings: Settings, specs: list[BlockSpec]
) -> dict[str, Any]:
    """Ingest the shards on the Dask cluster; rate and CPU of every process involved."""
    pids = roles(cfg, PROJECT_SERVICES)
    before, busy = snapshot(pids), machine_busy_seconds()
    meter = Meter()
    results = client.gather(client.map(ingest_block, specs, settings=settings, pure=False))
    wall = meter.seconds()
    cpu = {**spent(before, snapshot(pids)), CLIENT: meter.cpu_seconds()}
    busy = machine_busy_seconds() - busy
    total = IngestResult("all", "-")
    for r in results:
        total.merge(r)
    cpu_s = sum(cpu.values())
    return {
        "tokens": total.tokens,
        "ok": total.ok,
        "failed": dict(total.failed),
        "seconds": round(wall, 2),
        "tokens_per_s": round(total.tokens / wall, 1),
        "cpu_ms_per_token": round(1000 * cpu_s / max(total.tokens, 1), 2),
        "cpu_ms_per_token_by_process": per_item_ms(cpu, total.tokens),
        "http_requests_per_token": round(total.http_requests / max(total.tokens, 1), 3),
        "rpc_round_trips_per_token": round(total.rpc_round_trips / max(total.tokens, 1), 4),
        "machine": machine_share(cpu_s, busy, wall),
    }


def run_img2dataset(
    cfg: stack.StackConfig, exe: Path, urls: list[str], workdir: Path
) -> dict[str, Any]:
    """img2dataset over the image URLs; rate and CPU of its process tree and the gateway."""
    gateway = roles(cfg, {"gateway": "gateway"})
    before, busy = snapshot(gateway), machine_busy_seconds()
    done = img2dataset_run.run(exe, urls, workdir, timeout_s=IMG2DATASET_TIMEOUT_S)
    wall = done.measured.wall_seconds
    cpu = {"img2dataset": done.measured.cpu_seconds, **spent(before, snapshot(gateway))}
    busy = machine_busy_seconds() - busy
    images = done.counts.images
    cpu_s = sum(cpu.values())
    return {
        "images": images,
        "ok": done.counts.ok,
        "seconds": round(wall, 2),
        "images_per_s": round(images / wall, 1),
        "cpu_ms_per_image": round(1000 * cpu_s / max(images, 1), 2),
        "cpu_ms_per_image_by_process": per_item_ms(cpu, images),
        "machine": machine_share(cpu_s, busy, wall),
    }


def _latencies(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("latencies are milliseconds >= 0, comma-separated")
    return values


def _tokens(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_TOKENS:
        raise argparse.ArgumentTypeError(f"tokens lie in 1..{MAX_TOKENS} (the demo's Moonbirds)")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=_tokens, default=MAX_TOKENS)
    parser.add_argument("--latencies", type=_latencies, default=[0.0, 50.0], help="ms, e.g. 0,50")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=img2dataset_run.THREADS,
        help="tokens in flight per shard (one shard per worker: img2dataset's threads)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load_at_start = os.getloadavg()[0]
    exe = ensure_img2dataset()

    with tempfile.TemporaryDirectory(prefix="nft1000-bench-") as tmp:
        cfg = stack.StackConfig.with_free_ports(
            Path(tmp) / "stack", moonbirds_count=args.tokens, loot_count=0
        )
        meter = Meter()
        env = stack.up(cfg, worker=False)
        stack_seconds = meter.seconds()
        runs = []
        try:
            address = load_registry([cfg.registry_path])["moonbirds"][1]
            content = build_moonbirds(cfg.moonbirds_archive, cfg.home / "ipfs", cfg.moonbirds_count)
            token_ids = range(args.tokens)
            specs = plan_blocks("Moonbirds", address, token_ids, 1000)
            gateway = env["NFT1000_IPFS_GATEWAYS"].split(",")[0]
            urls = img2dataset_run.image_urls(gateway, content.images_cid, token_ids)
            with Client(cfg.dask_address) as client:
                warm_up(client, env, address)
                for ms in args.latencies:
                    log.info("gateway latency %g ms: the project, then img2dataset", ms)
                    restart_gateway(cfg, ms)
                    settings = _settings(env, f"bench-ingest-{ms:g}ms/").replace(
                        concurrency=args.concurrency
                    )
                    project = run_project(cfg, client, settings, specs)
                    workdir = Path(tmp) / f"img2dataset-{ms:g}ms"
                    workdir.mkdir()
                    baseline = run_img2dataset(cfg, exe, urls, workdir)
                    ratio = project["tokens_per_s"] / baseline["images_per_s"]
                    runs.append(
                        {
                            "latency_ms": ms,
                            "project": project,
                            "img2dataset": baseline,
                            "ratio_tokens_per_s_over_images_per_s": round(ratio, 3),
                            "aims_met": aims(project, ratio),
                        }
                    )
        finally:
            stack.down(cfg)

    print(
        json.dumps(
            {
                "benchmark": "ingest beside img2dataset",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "loadavg_1m_at_start": round(load_at_start, 2),
                },
                "tokens": args.tokens,
                "stack_up_seconds": round(stack_seconds, 1),
                "dask_workers": cfg.dask_workers,
                "concurrency_per_shard": args.concurrency,
                "img2dataset": {
                    "version": VERSION,
                    "processes": img2dataset_run.PROCESSES,
                    "threads_per_process": img2dataset_run.THREADS,
                },
                "aims": {"cpu_ms_per_token_at_most": CPU_AIM_MS, "ratio_at_least": RATE_AIM},
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
