"""A shard killed mid-run resumes from its checkpoints: nothing checkpointed is fetched
again, nothing is stored twice, and the final manifest holds each token once. Runs over
other ranges or with another shard_size extend the same block manifests.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings, load_settings
from tasks.ingest.blocks import (
    BlockSpec,
    ingest_block,
    load_rows,
    manifest_key,
    parts_prefix,
    plan_blocks,
)
from tasks.ingest.manifest import from_parquet, to_parquet
from tests.support import REPO
from tests.support.servers import GatewayProxy
from tests.support.stack import MOONBIRDS, Services, object_of, stored_objects

CHILD = """
import sys
from tasks.core.settings import load_settings
from tasks.ingest.blocks import BlockSpec, ingest_block
ingest_block(BlockSpec("Moonbirds", sys.argv[1], 0, int(sys.argv[2])), load_settings())
"""
KILL_AFTER_PARTS = 4
WAIT_S = 60.0


def settings_env(settings: Settings) -> dict[str, str]:
    """NFT1000_* variables that load_settings turns back into exactly these settings."""
    env: dict[str, str] = {}
    for fld in dataclasses.fields(Settings):
        value = getattr(settings, fld.name)
        if isinstance(value, tuple):
            text = ",".join(str(v) for v in value)
        elif value is None:
            text = ""
        else:
            text = str(value)
        env[f"NFT1000_{fld.name.upper()}"] = text
    return env


def test_killed_run_resumes_from_checkpoints(services: Services, settings: Settings) -> None:
    store = ObjectStore(settings)
    spec = BlockSpec("Moonbirds", services.moonbirds_address, 0, MOONBIRDS)
    parts = parts_prefix(store, spec)
    # The killed run goes through a slow gateway, two downloads at a time, checkpointing
    # every 0.3 s: it is killed after its fourth checkpoint, far from done.
    slow = GatewayProxy(services.gateway, delay_s=0.02).start()
    child_settings = settings.replace(
        ipfs_gateways=(slow.url,),
        allow_hosts=(slow.host_port,),
        concurrency=2,
        per_host_concurrency=2,
        checkpoint_interval_s=0.3,
    )
    env = settings_env(child_settings)
    assert load_settings(env) == child_settings
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NFT1000_")}
    log = services.home / f"{spec.name}-killed.log"
    try:
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, spec.contract, str(MOONBIRDS)],
                cwd=REPO,
                env={**environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + WAIT_S
            while len(store.list_keys(parts)) < KILL_AFTER_PARTS:
                assert child.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
    finally:
        slow.stop()
    time.sleep(0.3)  # let S3 finish any upload that was in flight at the kill

    assert store.get(manifest_key(store, spec)) is None, "killed too late: shard finished"
    checkpointed = load_rows(store, spec).rows
    assert 0 < len(checkpointed) < MOONBIRDS
    assert all(r.status == "ok" for r in checkpointed.values())
    blobs_at_kill = {k: size for k, (_, size, _) in stored_objects(store).items()}

    result = ingest_block(spec, settings)

    missing = MOONBIRDS - len(checkpointed)
    assert result.skipped == len(checkpointed)
    assert result.http_requests == 2 * missing  # metadata and image, for unfinished ones only
    assert result.rpc_round_trips == 1
    assert (result.tokens, result.ok, sum(result.failed.values())) == (MOONBIRDS, MOONBIRDS, 0)

    final = store.get(manifest_key(store, spec))
    assert final is not None
    rows = from_parquet(final)
    assert sorted(int(r.token_id) for r in rows) == list(range(MOONBIRDS))
    assert all(r.status == "ok" for r in rows)
    for row in rows:
        if int(row.token_id) in checkpointed:
            assert row == checkpointed[int(row.token_id)]  # kept, not fetched again
    assert store.list_keys(parts) == []

    blobs = {k: size for k, (_, size, _) in stored_objects(store).items()}
    refs = {k for r in rows for k in (r.metadata_key, r.image_key) if k}
    # Packs the killed run wrote that no checkpoint named are gone: nothing stored twice.
    assert set(blobs) == {object_of(k) for k in refs}
    assert len(refs) == len({d for r in rows for d in (r.metadata_sha256, r.sha256) if d})
    # The resumed run stored exactly the bytes missing after the kill, in new packs.
    assert result.new_bytes == sum(size for k, size in blobs.items() if k not in blobs_at_kill)
    assert result.new_bytes == sum(size for k, size in blobs.items() if k not in blobs_at_kill)


def test_resume_when_every_token_was_checkpointed(services: Services, settings: Settings) -> None:
    """Killed between the last checkpoint and the manifest: the rerun must still write it."""
    store = ObjectStore(settings)
    spec = BlockSpec("Loot", services.loot_address, 1, 11)
    first = ingest_block(spec, settings)
    assert first.ok == 10
    key = manifest_key(store, spec)
    data = store.get(key)
    assert data is not None
    # The state such a kill leaves: every row in checkpoint parts, no manifest.
    rows = from_parquet(data)
    store.put(parts_prefix(store, spec) + "00000000000000000001-aaaaaaaa.parquet", to_parquet(rows))
    store.delete([key])
    assert store.get(key) is None

    again = ingest_block(spec, settings)
    assert (again.skipped, again.ok, again.http_requests) == (10, 10, 0)
    final = store.get(key)
    assert final is not None, "no manifest after the resumed run"
    assert from_parquet(final) == rows
    assert store.list_keys(parts_prefix(store, spec)) == []


def test_other_ranges_and_shard_sizes_extend_one_manifest(
    services: Services, settings: Settings
) -> None:
    store = ObjectStore(settings)
    address = services.moonbirds_address
    small = plan_blocks("Moonbirds", address, range(0, 50), 25)
    assert small == [BlockSpec("Moonbirds", address, 0, 50, step=25)]
    first = ingest_block(small[0], settings)
    assert (first.tokens, first.ok, first.http_requests, first.rpc_round_trips) == (50, 50, 100, 2)

    full = plan_blocks("Moonbirds", address, range(MOONBIRDS), settings.shard_size)
    assert [s.name for s in full] == [small[0].name]
    second = ingest_block(full[0], settings)
    assert (second.tokens, second.ok, second.skipped) == (MOONBIRDS, MOONBIRDS, 50)
    assert second.http_requests == 2 * (MOONBIRDS - 50)  # metadata and image, new ids only

    key = manifest_key(store, full[0])
    before = store.get(key)
    inner = ingest_block(BlockSpec("Moonbirds", address, 10, 20), settings)
    assert (inner.tokens, inner.skipped, inner.http_requests, inner.rpc_round_trips) == (
        10,
        10,
        0,
        0,
    )
    assert store.get(key) == before  # a finished block is not rewritten

    keys = store.list_keys(store.key("manifests", address) + "/")
    assert keys == [key]
    counts: Counter[int] = Counter()
    for k in keys:
        data = store.get(k)
        assert data is not None
        counts.update(int(r.token_id) for r in from_parquet(data))
    assert counts == Counter(range(MOONBIRDS))  # every token in exactly one manifest row


def checkpointed_ids(store: ObjectStore, spec: BlockSpec) -> set[int]:
    ids: set[int] = set()
    for key in store.list_keys(parts_prefix(store, spec)):
        data = store.get(key)
        if data is not None:
            ids.update(int(r.token_id) for r in from_parquet(data))
    return ids


def test_checkpoints_on_a_timer_behind_a_slow_token(services: Services, settings: Settings) -> None:
    """Tokens finished early are checkpointed while a slow one is still downloading."""
    slow = GatewayProxy(services.gateway, delay_s=1.0).start()
    try:
        fast = services.loot_uris[:5]  # data: URIs, no request
        address = services.deploy_on_chain(
            "SlowTail", [*fast, f"ipfs://{services.moonbirds.metadata_cid}/0"]
        )
        settings = settings.replace(
            ipfs_gateways=(slow.url,),
            allow_hosts=(*settings.allow_hosts, slow.host_port),
            checkpoint_interval_s=0.2,
        )
        store = ObjectStore(settings)
        spec = BlockSpec("SlowTail", address, 1, 7)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(ingest_block, spec, settings)
            early: set[int] = set()
            deadline = time.monotonic() + WAIT_S
            while len(early) < len(fast):
                assert not running.done(), "the shard ended before the early checkpoints"
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.05)
                early = checkpointed_ids(store, spec)
            assert store.get(manifest_key(store, spec)) is None
            result = running.result(WAIT_S)
    finally:
        slow.stop()
    assert early == set(range(1, 6))  # the slow token was still in flight
    assert (result.ok, result.http_requests) == (6, 2)
    assert store.list_keys(parts_prefix(store, spec)) == []


def test_a_store_failure_stops_the_shard_at_once(
    services: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One token's object-store error cancels the slow others; the retry then finishes."""
    slow = GatewayProxy(services.gateway, delay_s=1.5).start()
    try:
        ipfs = [f"ipfs://{services.moonbirds.metadata_cid}/{i}" for i in range(5)]
        address = services.deploy_on_chain("StoreDown", [services.loot_uris[0], *ipfs])
        settings = settings.replace(
            ipfs_gateways=(slow.url,), allow_hosts=(*settings.allow_hosts, slow.host_port)
        )
        spec = BlockSpec("StoreDown", address, 1, 7)
        settings = settings.replace(checkpoint_interval_s=0.2)
        put = ObjectStore.put

        def failing_packs(store: ObjectStore, key: str, data: bytes, *args: Any) -> None:
            if "/packs/" in f"/{key}":
                raise ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")
            put(store, key, data, *args)

        monkeypatch.setattr(ObjectStore, "put", failing_packs)
        started = time.monotonic()
        with pytest.raises(ClientError, match="SlowDown"):
            ingest_block(spec, settings)
        assert time.monotonic() - started < 1.5  # no metadata download was waited for
        monkeypatch.undo()

        result = ingest_block(spec, settings)
    finally:
        slow.stop()
    assert (result.ok, result.skipped) == (6, 0)
