"""The whole local stack, up and down, as `nft1000 stack up` runs it (small demo, free ports)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from distributed import Client

from flows.runner import artifact_key
from infra import deployments
from infra.demo import (
    DEMO_FINETUNE,
    REPORTS,
    Stage,
    exported_samples,
    report_failure,
    summary_table,
)
from infra.demo_content import build_moonbirds
from infra.process import alive, port_open
from infra.sql_shell import open_views
from infra.stack import (
    LOOT_ARCHIVE,
    MOONBIRDS_ARCHIVE,
    MOONBIRDS_LAYERS,
    StackConfig,
    down,
    model_env,
    port_fields,
    status,
    up,
)
from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.s3 import ObjectStore
from tasks.core.settings import load_settings
from tasks.evaluate.retrieval import KS, POOLS
from tasks.ingest.chain import ChainReader
from tasks.ingest.summary import summarize
from tasks.train.model_configs import TINY_ARCHITECTURE, training_defaults
from tests.support.listeners import listeners


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
    for pool, worker in [
        (cfg.work_pool, "nft1000-local"),
        (cfg.gpu_work_pool, "nft1000-local-gpu"),
    ]:
        assert get_json(f"{api}/work_pools/{pool}")["type"] == "process"
        workers = get_json(f"{api}/work_pools/{pool}/workers/filter", {})
        assert [w["name"] for w in workers] == [worker]

    with Client(env["NFT1000_DASK_ADDRESS"], timeout=10) as client:  # type: ignore[no-untyped-call]
        worker_pids = set(client.run(os.getpid).values())
        worker_keys = set(client.run(os.environ.get, "AWS_ACCESS_KEY_ID").values())
        worker_hosts = set(client.run(os.environ.get, "NFT1000_ALLOW_HOSTS").values())
    assert worker_keys == {env["AWS_ACCESS_KEY_ID"]}
    # The shell's export reached the workers, with the stack's gateway kept in the list.
    allowed = f"{EXPORTED_ALLOW_HOSTS},127.0.0.1:{cfg.gateway_port}"
    assert worker_hosts == {allowed} and env["NFT1000_ALLOW_HOSTS"] == allowed
    pids = status(cfg)
    assert worker_pids == {pids["dask-worker-0"], pids["dask-worker-1"]}
    assert os.getpid() not in worker_pids
    # The Prefect workers too: their flow runs are child processes with their environment.
    for service in ("prefect-worker", "prefect-gpu-worker", "dask-scheduler"):
        environ = Path(f"/proc/{pids[service]}/environ").read_bytes().split(b"\0")
        assert f"NFT1000_ALLOW_HOSTS={allowed}".encode() in environ, service

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


# Exported before `up`, as a user would: the stack's processes must see it.
EXPORTED_ALLOW_HOSTS = "example.org:443"


@pytest.fixture(scope="module")
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StackConfig, dict[str, str]]]:
    """One small stack for the module; the last test takes it down and checks that."""
    cfg = StackConfig.with_free_ports(
        tmp_path_factory.mktemp("stack") / "home",
        moonbirds_count=20,
        loot_count=5,
        moonbirds_archive=MOONBIRDS_ARCHIVE,
        loot_archive=LOOT_ARCHIVE,
    )
    saved = dict(os.environ)
    os.environ["NFT1000_ALLOW_HOSTS"] = EXPORTED_ALLOW_HOSTS
    try:
        env = up(cfg)
        os.environ.update(env)
        yield cfg, env
    finally:
        down(cfg)
        os.environ.clear()
        os.environ.update(saved)


def test_the_stack_trains_the_tiny_model_unless_the_environment_names_another() -> None:
    assert TINY_ARCHITECTURE.startswith("local-dir:")
    assert model_env({})["NFT1000_MODEL"] == TINY_ARCHITECTURE
    assert model_env({})["NFT1000_PRETRAINED"] == ""
    layers = {"NFT1000_TRAIT_LAYERS": f"Moonbirds={MOONBIRDS_LAYERS}"}
    assert model_env({}).get("NFT1000_TRAIT_LAYERS") == layers["NFT1000_TRAIT_LAYERS"]
    mine = {"NFT1000_MODEL": "ViT-B-32", "NFT1000_PRETRAINED": "openai", "NFT1000_TRAIT_LAYERS": ""}
    assert model_env({**mine, "NFT1000_SEED": "3"}) == mine


def test_stack_up_is_complete_and_idempotent(
    running_stack: tuple[StackConfig, dict[str, str]],
) -> None:
    cfg, env = running_stack
    settings = load_settings(env)
    assert settings.dask_address == env["NFT1000_DASK_ADDRESS"]
    assert (settings.model, settings.pretrained) == (TINY_ARCHITECTURE, "")
    assert settings.trait_layers == (f"Moonbirds={MOONBIRDS_LAYERS}",)
    assert settings.registries == (cfg.home / "demo" / "registry.json",)
    assert (cfg.home / "stack.env").read_text().splitlines() == [f"{k}={v}" for k, v in env.items()]
    pids = status(cfg)
    assert None not in pids.values()
    assert len(set(pids.values())) == len(pids)

    check_services(cfg, env)

    assert up(cfg) == env
    assert status(cfg) == pids  # nothing new started


def summary_artifact(env: dict[str, str], flow_run_id: str) -> list[dict[str, Any]]:
    api = env["PREFECT_API_URL"]
    found = get_json(
        f"{api}/artifacts/filter",
        {
            "artifacts": {
                "key": {"any_": ["ingest-summary"]},
                "flow_run_id": {"any_": [flow_run_id]},
            }
        },
    )
    assert len(found) == 1
    rows: list[dict[str, Any]] = json.loads(found[0]["data"])
    return rows


def test_ingest_deployment_end_to_end(running_stack: tuple[StackConfig, dict[str, str]]) -> None:
    """`prefect deployment run nft1000/ingest` through the real worker, Dask cluster and S3."""
    _, env = running_stack
    deployments.register(env)
    first = deployments.run(env, "nft1000/ingest", {"shard_size": "8"})
    assert first.completed and first.flow_run_id
    rows = {r["collection"]: r for r in summary_artifact(env, first.flow_run_id)}
    assert rows["Moonbirds"]["ok"] == 20 and rows["Loot"]["ok"] == 5
    assert rows["Moonbirds"]["http_requests"] == 40  # metadata + image per token
    assert rows["Loot"]["http_requests"] == 0  # data: URIs only
    assert rows["all collections"]["tokens"] == 25
    assert rows["all collections"]["failed_by_reason"] == "-"

    settings = load_settings(env)
    summary = {r["collection"]: r for r in summarize(ObjectStore(settings))}
    assert (summary["Moonbirds"]["tokens"], summary["Moonbirds"]["ok"]) == (20, 20)
    assert (summary["Loot"]["tokens"], summary["Loot"]["ok"]) == (5, 5)
    store = ObjectStore(settings)
    moonbirds = rows["Moonbirds"]["contract"]
    assert len(store.list_keys(f"manifests/{moonbirds}/")) == 1  # ids 0-19: one block
    blobs_before = store.list_keys("blobs/")

    again = deployments.run(env, "nft1000/ingest", {"shard_size": "8"})
    assert again.completed and again.flow_run_id
    for row in summary_artifact(env, again.flow_run_id):
        assert row["http_requests"] == 0 and row["rpc_round_trips"] == 0
        assert row["already_done"] == row["tokens"]
    assert store.list_keys("blobs/") == blobs_before


def flow_runs_of(env: dict[str, str], deployment: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = get_json(
        f"{env['PREFECT_API_URL']}/flow_runs/filter",
        {"deployments": {"name": {"any_": [deployment]}}},
    )
    return runs


def test_tables_and_export_deployments_end_to_end(
    running_stack: tuple[StackConfig, dict[str, str]],
) -> None:
    """The completed ingest triggered nft1000/tables; run it and nft1000/export by hand too."""
    _, env = running_stack
    deadline = time.monotonic() + 120
    while not any(r["state_type"] == "COMPLETED" for r in flow_runs_of(env, "tables")):
        assert time.monotonic() < deadline, "no nft1000/tables run triggered by the ingest"
        time.sleep(2)

    tables = deployments.run(env, "nft1000/tables")
    assert tables.completed
    settings = load_settings(env)
    con = connect(settings)
    root = paths.tables_root(settings)
    captions = dict(
        con.execute(
            f"SELECT collection, any_value(method) FROM '{root}/captions.parquet' "
            "WHERE preferred GROUP BY collection"
        ).fetchall()
    )
    assert captions == {"Moonbirds": "visual_template", "Loot": "name_description"}
    counts = con.execute(f"SELECT count(*) FROM '{root}/splits.parquet'").fetchone()
    assert counts == (25,)

    params = {"samples_per_shard": "10", "holdout": str(HELD_OUT)}
    export = deployments.run(env, "nft1000/export", params)
    assert export.completed
    # Both demo collections are NFT1000 training collections: no test split, and the
    # token-level holdout the demo evaluates on.
    assert exported_samples(settings) == {
        "holdout": {"Loot": HELD_OUT, "Moonbirds": HELD_OUT},
        "train": {"Loot": 5 - HELD_OUT, "Moonbirds": 20 - HELD_OUT},
    }
    assert REPORTS["export"](settings) == (
        f"holdout {2 * HELD_OUT} samples (0 failed), train {25 - 2 * HELD_OUT} samples (0 failed)"
    )


HELD_OUT = 2  # tokens per collection the export holds out of training


def latest_contract(store: ObjectStore, collection: str) -> str:
    """The contract of a collection, from the manifests in S3."""
    (row,) = [r for r in summarize(store) if r["collection"] == collection]
    return str(row["contract"])


def artifact_keys(env: dict[str, str], keys: list[str]) -> set[str]:
    """Which of these artifact keys the Prefect API has artifacts for."""
    found = get_json(
        f"{env['PREFECT_API_URL']}/artifacts/filter", {"artifacts": {"key": {"any_": keys}}}
    )
    return {artifact["key"] for artifact in found}


def registered_schedules(env: dict[str, str], name: str) -> list[tuple[str, str, bool]]:
    deployment = get_json(f"{env['PREFECT_API_URL']}/deployments/name/nft1000/{name}")
    return [
        (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
        for s in deployment["schedules"]
    ]


def test_finetune_and_evaluate_deployments_end_to_end(
    running_stack: tuple[StackConfig, dict[str, str]],
) -> None:
    """nft1000/finetune on the exported shards, through the real gpu worker (the tiny
    CLIP from random weights on the CPU, with the demo's budget but dynamic masking),
    then the nft1000/evaluate run its trigger starts, on the held-out tokens."""
    cfg, env = running_stack
    assert registered_schedules(env, "finetune") == [("0 2 * * *", "UTC", True)]
    assert registered_schedules(env, "evaluate") == [("0 8 * * *", "UTC", True)]

    since = datetime.now(UTC)
    params = {**DEMO_FINETUNE, "mode": "dynamic-mask"}
    finetune = deployments.run(env, "nft1000/finetune", params)
    assert finetune.completed and finetune.flow_run_id
    api = env["PREFECT_API_URL"]
    run = get_json(f"{api}/flow_runs/{finetune.flow_run_id}")
    assert run["work_pool_name"] == cfg.gpu_work_pool
    settings = load_settings(env)
    store = ObjectStore(settings)
    pointer = store.get("models/latest.json")
    assert pointer is not None
    latest = json.loads(pointer)
    assert latest["architecture"] == TINY_ARCHITECTURE
    assert latest["config"]["pretrained"] == ""
    # what was not given comes from the tiny model's measured defaults
    assert latest["config"]["epochs"] == training_defaults(TINY_ARCHITECTURE)["epochs"]
    run_folder = f"models/{latest['name']}/{latest['run_id']}/"
    assert {"model.pt", "done.json", "log.jsonl"} <= {
        k.removeprefix(run_folder) for k in store.list_keys(run_folder)
    }
    assert store.list_keys("masks/")  # the Moonbirds masks, from the official layers
    moonbirds_masks = json.loads(store.get(f"masks/{latest_contract(store, 'Moonbirds')}.json"))
    # derived beside the official ones for their IoU, from train tokens less the held out
    assert moonbirds_masks["tokens"] == 20 - HELD_OUT

    # The completed finetune triggered nft1000/evaluate; with no test split exported it
    # scores the held-out tokens.
    triggered = deployments.triggered_run(env, "nft1000/evaluate", since)
    assert triggered is not None
    assert deployments.watch(env, triggered).completed
    held_out = paths.url(settings, "exports", "webdataset", "holdout")
    assert [k for k in store.list_keys("tables/retrieval_results/") if k.endswith(".parquet")]
    con = open_views(settings)
    try:
        rows = con.execute(
            "SELECT pool, k, collection, queries FROM retrieval_results WHERE data = ?",
            [held_out],
        ).fetchall()
    finally:
        con.close()
    assert {(pool, k) for pool, k, _, _ in rows} == {(p, k) for p in POOLS for k in KS}
    assert {(c, q) for _, _, c, q in rows} == {
        ("all", 2 * HELD_OUT),
        ("Moonbirds", HELD_OUT),
        ("Loot", HELD_OUT),
    }
    label = f"{latest['name']}/{latest['run_id']}"
    assert REPORTS["evaluate"](settings).startswith(f"{2 * HELD_OUT} held-out captions (holdout)")

    run_key = artifact_key("finetune", latest["name"])
    evaluated = artifact_key("evaluate", label)
    keys = ["trait-masks", run_key, f"{run_key}-epochs", f"{run_key}-progress", evaluated]
    keys += [f"{evaluated}-plot", f"{evaluated}-summary"]
    assert artifact_keys(env, keys) == set(keys)


def test_cvi_deployment_end_to_end(running_stack: tuple[StackConfig, dict[str, str]]) -> None:
    """nft1000/cvi on the exported shards through the gpu worker: embeddings in S3, the
    cvi view with CVI beside top-1 per collection and split, plots and artifacts."""
    _, env = running_stack
    assert registered_schedules(env, "cvi") == [("0 9 * * *", "UTC", True)]
    run = deployments.run(env, "nft1000/cvi", {"workers": "1"})
    assert run.completed
    settings = load_settings(env)
    store = ObjectStore(settings)
    embeddings = [k for k in store.list_keys("embeddings/") if k.endswith(".parquet")]
    assert {k.split("/")[2] for k in embeddings} == {"train", "holdout"}
    con = open_views(settings)
    try:
        rows = con.execute(
            "SELECT level, collection, split, pairs, cvi, top1 FROM cvi ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    assert [(level, c, s, n) for level, c, s, n, _, _ in rows] == [
        ("collection", "Loot", None, 5),
        ("collection", "Moonbirds", None, 20),
        ("split", "Loot", "holdout", HELD_OUT),
        ("split", "Loot", "train", 5 - HELD_OUT),
        ("split", "Moonbirds", "holdout", HELD_OUT),
        ("split", "Moonbirds", "train", 20 - HELD_OUT),
    ]
    assert all(cvi is not None and 0 <= top1 <= 1 for *_, cvi, top1 in rows)
    assert re.fullmatch(r"\w+ CVI \S+, \w+ CVI \S+", REPORTS["cvi"](settings))
    model = json.loads(store.get("models/latest.json") or b"{}")
    label = f"{model['name']}/{model['run_id']}"
    reports = store.list_keys("reports/cvi/")
    # bars, and a scatter of collections, of the train and of the holdout split
    assert sum(k.endswith(".png") for k in reports) == 4
    key = artifact_key("cvi", label)
    keys = [key, f"{key}-embed", f"{key}-summary", f"{key}-bars"]
    keys += [f"{key}-scatter-collection", f"{key}-scatter-train", f"{key}-scatter-holdout"]
    assert artifact_keys(env, keys) == set(keys)

    # make demo's closing table: a row per collection, from ingest to CVI.
    table = summary_table(settings, exported_samples(settings)).splitlines()
    assert table[0].split() == [
        "collection", "tokens", "ok", "failed", "captions", "trained", "on", "held", "out",
        "top-1", "top-10", "CVI",
    ]  # fmt: skip
    moonbirds = table[2].split()
    assert moonbirds[:7] == ["Moonbirds", "20", "20", "0", "20", str(20 - HELD_OUT), str(HELD_OUT)]
    assert all(float(x) >= -1 for x in moonbirds[7:])


def test_a_failing_stage_is_reported_with_its_link_and_errors(
    running_stack: tuple[StackConfig, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What make demo prints when a stage fails: its name, its run's link, its error lines."""
    _, env = running_stack
    stage = Stage("evaluate", {"model": "no-such-run"})
    log = tmp_path / "demo.log"
    with log.open("w") as fh:
        outcome = deployments.run(env, "nft1000/evaluate", stage.params, fh)
    assert not outcome.completed and outcome.flow_run_id
    report_failure(stage, env, outcome, log)
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:4] == [
        "nft1000/evaluate did not complete.",
        f"flow run: {deployments.flow_run_url(env, outcome.flow_run_id)}",
        "its last error lines:",
    ]
    assert any("no-such-run" in line for line in printed[4:])


def test_stack_down_stops_everything(running_stack: tuple[StackConfig, dict[str, str]]) -> None:
    cfg, _ = running_stack
    pids = status(cfg)
    stopped = down(cfg)
    assert sorted(stopped) == sorted(pids)
    assert set(status(cfg).values()) == {None}
    for pid in pids.values():
        assert pid is not None
        assert not alive(pid)
    for name in port_fields():
        port = getattr(cfg, name)
        if port_open(port):
            # Another program may take a port the moment the stack frees it; a listener
            # fails the test only when it is the stack's (its home in its command or env).
            ours = [pid for pid, about in listeners(port).items() if str(cfg.home) in about]
            assert ours == [], (name, port, ours)
