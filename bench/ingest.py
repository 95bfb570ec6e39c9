"""Benchmark the demo ingest on this machine; prints JSON.

Starts a private local stack (free ports, temporary home), then ingests the demo
collections through the same shard code the flow runs, on the stack's Dask
cluster of two worker processes. The baseline, run in the same process on a
subset, is the same code with batching and concurrency turned off
(`rpc_batch_size=1`, `concurrency=1`): one eth_call per request and one
download at a time, as a naive per-token script would do.

    python -m bench.ingest [--moonbirds 10000] [--loot 1000] [--baseline-tokens 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from distributed import Client

from bench.measure import Meter
from infra import stack
from tasks.core.settings import Settings, load_settings
from tasks.ingest.blocks import IngestResult, ingest_block, plan_blocks
from tasks.ingest.registry import load_registry
from tests.data.local_s3 import signing_as


def _settings(env: dict[str, str], prefix: str, **changes: Any) -> Settings:
    return load_settings(env).replace(s3_prefix=prefix, **changes)


def _measure(client: Client | None, settings: Settings, specs: list[Any]) -> dict[str, Any]:
    """Run shards (on Dask when a client is given) and sum their counters."""
    meter = Meter()
    if client is None:
        results = [ingest_block(s, settings) for s in specs]
    else:
        results = client.gather(client.map(ingest_block, specs, settings=settings, pure=False))
    seconds = meter.seconds()
    total = IngestResult("all", "-")
    for r in results:
        total.merge(r)
    return {
        "tokens": total.tokens,
        "ok": total.ok,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(total.tokens / seconds, 1),
        "http_requests_per_token": round(total.http_requests / total.tokens, 3),
        "rpc_round_trips_per_token": round(total.rpc_round_trips / total.tokens, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moonbirds", type=int, default=10_000)
    parser.add_argument("--loot", type=int, default=1_000)
    parser.add_argument("--baseline-tokens", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nft1000-bench-") as tmp:
        cfg = stack.StackConfig.with_free_ports(
            Path(tmp), moonbirds_count=args.moonbirds, loot_count=args.loot
        )
        meter = Meter()
        env = stack.up(cfg, worker=False)
        stack_seconds = meter.seconds()
        try:
            # boto3 in this process (the serial baseline) signs as the stack's S3 identity.
            with signing_as(
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]
            ):
                registry = load_registry([cfg.registry_path])
                moonbirds, loot = registry["moonbirds"][1], registry["loot"][1]
                base = _settings(env, "bench-base/")
                ids = {moonbirds: range(0, args.moonbirds), loot: range(1, args.loot + 1)}
                specs = [
                    spec
                    for name, address in (("Moonbirds", moonbirds), ("Loot", loot))
                    for spec in plan_blocks(name, address, ids[address], base.shard_size)
                ]
                with Client(cfg.dask_address) as client:
                    pipeline = _measure(client, _settings(env, "bench-pipeline/"), specs)
                serial = _settings(env, "bench-serial/", rpc_batch_size=1, concurrency=1)
                subset = plan_blocks("Moonbirds", moonbirds, range(0, args.baseline_tokens), 1000)
                baseline = _measure(None, serial, subset)
        finally:
            stack.down(cfg)

    print(
        json.dumps(
            {
                "benchmark": "ingest",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "stack_up_seconds": round(stack_seconds, 1),
                "pipeline": {"dask_workers": cfg.dask_workers, **pipeline},
                "baseline": {"name": "serial (rpc_batch_size=1, concurrency=1)", **baseline},
                "speedup_tokens_per_s": round(
                    pipeline["tokens_per_s"] / baseline["tokens_per_s"], 1
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
