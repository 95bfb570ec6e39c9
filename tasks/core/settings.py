"""One configuration object for the whole pipeline.

Values come, in rising priority, from the embedded defaults (a single machine:
local S3 server, local anvil node, local Dask cluster), an optional TOML file
named by ``NFT1000_CONFIG``, and ``NFT1000_*`` environment variables. The object
is built once at the edge (flow or CLI) and passed down; tasks never read the
environment themselves. S3 credentials are not settings: boto3 takes them from
its usual chain (``AWS_ACCESS_KEY_ID``..., profiles, instance roles).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    # Ethereum JSON-RPC endpoint and how many eth_calls go in one batch request.
    rpc_url: str = "http://127.0.0.1:8545"
    rpc_batch_size: int = 500

    # IPFS gateways tried in order; content is fetched as verifiable CAR.
    ipfs_gateways: tuple[str, ...] = ("https://ipfs.io", "https://dweb.link")
    arweave_gateway: str = "https://arweave.net"
    # host:port pairs that may be fetched even though they are not public
    # addresses (the demo's loopback gateway). Empty in production. They are the
    # operator's own services: per-host limits do not apply to them, only concurrency.
    allow_hosts: tuple[str, ...] = ()

    # Object storage. endpoint None means AWS S3 itself.
    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    s3_bucket: str = "nft1000"
    s3_region: str = "us-east-1"
    s3_prefix: str = ""

    # Dask scheduler address; None starts a local cluster inside the flow run.
    dask_address: str | None = None

    # A contract reports its own totalSupply (up to 2**256-1); past this many tokens
    # a collection needs an explicit id range instead of planning billions of shards.
    max_tokens_per_collection: int = 1_000_000

    # Work split. A Dask task is one manifest block of 1,000 ids (tasks.ingest.blocks.BLOCK);
    # shard_size is how many of its tokens are read and downloaded together (<= 1,000).
    # Then tokens in flight per shard (each asks for its metadata, then its image), and
    # requests in flight per host.
    shard_size: int = 1000
    concurrency: int = 32
    per_host_concurrency: int = 16
    # Requests per second to one host (0: unpaced). This and per_host_concurrency hold for
    # the whole Dask cluster when ingest runs on one, else per process
    # (tasks.ingest.politeness).
    per_host_rps: float = 0.0

    # HTTP behaviour towards token-named URLs.
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    # One attempt, body included.
    request_timeout_s: float = 300.0
    # One URL, everything included: all attempts, backoff sleeps and redirect hops,
    # and for IPFS every gateway tried. A server dripping bytes, or answering each
    # hop just under the timeouts above, holds a download slot at most this long.
    url_deadline_s: float = 300.0
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_redirects: int = 5
    user_agent: str = "nft1000-ingest/0.1 (+https://github.com/nft1000)"

    # Byte caps on everything a token's metadata names.
    max_metadata_bytes: int = 4 * MiB
    max_image_bytes: int = 64 * MiB

    # Seconds between partial manifest flushes inside a shard (resume granularity).
    checkpoint_interval_s: float = 2.0

    # What `nft1000/ingest` ingests when run without parameters: registry names or
    # contract addresses, each optionally followed by ":FIRST-LAST" (inclusive ids).
    collections: tuple[str, ...] = ()

    # Extra collection registries (JSON files: NFT1000's collections.json shape), looked
    # up before the built-in NFT1000 registry (tasks/registry_data), which comes last.
    registries: tuple[Path, ...] = field(default_factory=tuple)

    # Another split file in NFT1000's partitioning.json shape; its names are resolved
    # through the first registry above (else the built-in one). None: NFT1000's published
    # split from the built-in registry; other collections get a split hashed from the name.
    partitioning: Path | None = None
    # Seed of the mini subset draw and of the WebDataset sample order.
    seed: int = 0
    # DuckDB's memory cap for table builds; it spills to disk beyond it.
    duckdb_memory_limit: str = "4GB"

    # The CLIP nft1000/finetune starts from and nft1000/evaluate falls back to: an
    # open_clip architecture and pretrained tag (or checkpoint; empty: random weights).
    # The local stack sets the tiny CPU model (tasks.train.model_configs.TINY_ARCHITECTURE).
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    # "auto": the GPU when there is one. Else "cpu", "cuda", "cuda:1"...
    device: str = "auto"
    # Official trait layer art per collection, "Collection name=path" (folder or
    # .tar.gz, Moonbirds or HashLips layout); other collections get derived masks.
    trait_layers: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests and CLI flags)."""
        return dataclasses.replace(self, **changes)


_TUPLE_FIELDS = {"ipfs_gateways", "allow_hosts", "registries", "collections", "trait_layers"}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    if name in _TUPLE_FIELDS:
        parts = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        items = [str(i).strip() for i in parts if str(i).strip()]
        return tuple(Path(i) for i in items) if name == "registries" else tuple(items)
    if name == "partitioning":
        return None if raw in (None, "", "none", "None") else Path(str(raw))
    if name in {"s3_endpoint_url", "dask_address"}:
        return None if raw in (None, "", "none", "None") else str(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from defaults, the NFT1000_CONFIG TOML file and NFT1000_* variables."""
    env = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, Any] = {}
    config = env.get("NFT1000_CONFIG")
    if config:
        with open(config, "rb") as fh:
            values.update(tomllib.load(fh))
    for fld in dataclasses.fields(Settings):
        key = "NFT1000_" + fld.name.upper()
        if key in env:
            values[fld.name] = env[key]
    unknown = set(values) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    return dataclasses.replace(defaults, **coerced)
