"""The whole local stack, up and down, as `nft1000 stack up` runs it (small demo, free ports)."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from distributed import Client

from infra.demo_content import build_moonbirds
from infra.process import port_open
from infra.stack import StackConfig, down, port_fields, status, up
from tasks.chain import ChainReader
from tasks.settings import load_settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def get_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def token_uri_0(rpc_url: str, address: str) -> str | object:
    async with ChainReader(rpc_url) as reader:
        return (await reader.token_uris(address, [0]))[0]


def check_services(cfg: StackConfig, env: dict[str, str]) -> None:
    s3 = boto3.client("s3", endpoint_url=env["NFT1000_S3_ENDPOINT_URL"])
    s3.head_bucket(Bucket=cfg.bucket)
    s3.put_object(Bucket=cfg.bucket, Key="probe", Body=b"hello")
    assert s3.get_object(Bucket=cfg.bucket, Key="probe")["Body"].read() == b"hello"

    api = env["PREFECT_API_URL"]
    assert get_json(f"{api}/health") is True
    assert get_json(f"{api}/work_pools/{cfg.work_pool}")["type"] == "process"
    workers = get_json(f"{api}/work_pools/{cfg.work_pool}/workers/filter", {})
    assert [w["name"] for w in workers] == ["nft1000-local"]

    with Client(env["NFT1000_DASK_ADDRESS"], timeout=10) as client:  # type: ignore[no-untyped-call]
        worker_pids = set(client.run(os.getpid).values())
        worker_keys = set(client.run(os.environ.get, "AWS_ACCESS_KEY_ID").values())
    assert worker_keys == {env["AWS_ACCESS_KEY_ID"]}
    pids = status(cfg)
    assert worker_pids == {pids["dask-worker-0"], pids["dask-worker-1"]}
    assert os.getpid() not in worker_pids

    registry = json.loads(Path(env["NFT1000_REGISTRIES"]).read_text())["collections"]
    assert {n: c["total_supply"] for n, c in registry.items()} == {"Moonbirds": 20, "Loot": 5}
    cid = build_moonbirds(cfg.moonbirds_archive, cfg.home / "ipfs", limit=20).metadata_cid
    address = registry["Moonbirds"]["contract_address"]
    chain_id = get_json(
        env["NFT1000_RPC_URL"], {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    )
    assert int(chain_id["result"], 16) > 0
    assert asyncio.run(token_uri_0(env["NFT1000_RPC_URL"], address)) == f"ipfs://{cid}/0"

    metadata = get_json(f"{env['NFT1000_IPFS_GATEWAYS']}/ipfs/{cid}/0")
    assert metadata["image"].startswith("ipfs://")


@pytest.mark.services
def test_stack_up_and_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = StackConfig.with_free_ports(
        tmp_path / "home",
        moonbirds_count=20,
        loot_count=5,
        moonbirds_archive=DATA / "moonbirds.tar.gz",
        loot_archive=DATA / "loot.tar.gz",
    )
    try:
        env = up(cfg)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(env)
        assert settings.dask_address == env["NFT1000_DASK_ADDRESS"]
        assert settings.registries == (cfg.home / "demo" / "registry.json",)
        assert (cfg.home / "stack.env").read_text().splitlines() == [
            f"{k}={v}" for k, v in env.items()
        ]
        pids = status(cfg)
        assert None not in pids.values()
        assert len(set(pids.values())) == len(pids)

        check_services(cfg, env)

        assert up(cfg) == env
        assert status(cfg) == pids  # nothing new started
    finally:
        stopped = down(cfg)

    assert sorted(stopped) == sorted(pids)
    assert set(status(cfg).values()) == {None}
    for pid in pids.values():
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for name in port_fields():
        assert not port_open(getattr(cfg, name)), name
