"""The services tier's fixtures: the real local services its tests run against.

``services`` starts SeaweedFS (S3), anvil (with the demo Moonbirds and Loot deployed)
and the demo IPFS gateway on free ports with their state in a temporary folder,
through the same spec builders as ``infra.stack``, and stops each by its PID when the
tier is done (package scope: before the e2e tier starts a stack of its own).
``origin`` is a crafted-content HTTP server that counts its hits. Each test gets its
own ``s3_prefix`` (fixture ``settings``), so tests never see each other's objects.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra import stack
from infra.demo_chain import anvil_spec, compile_contracts, deploy_demo, read_loot_uris
from infra.demo_content import build_moonbirds
from infra.process import ServiceSpec, start, stop
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tests.support.servers import Origin
from tests.support.stack import (
    AWS_KEY,
    LOOT,
    LOOT_ARCHIVE,
    MOONBIRDS,
    MOONBIRDS_ARCHIVE,
    Services,
    build_quirks_ipfs,
    prefix_for,
)


def _cache_dir(config: pytest.Config, tmp: pytest.TempPathFactory) -> Path:
    """pytest's cache folder (compiled contracts and the CAR survive sessions), else tmp."""
    cache = getattr(config, "cache", None)
    return Path(cache.mkdir("nft1000")) if cache is not None else tmp.mktemp("cache")


@pytest.fixture(scope="package")
def origin() -> Iterator[Origin]:
    server = Origin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def services(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, origin: Origin
) -> Iterator[Services]:
    cache = _cache_dir(pytestconfig, tmp_path_factory)
    home = tmp_path_factory.mktemp("stack")
    cfg = stack.StackConfig.with_free_ports(home, bucket="nft1000-tests")
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_KEY)
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)

    s3 = stack.s3_spec(cfg)
    gateway = stack.gateway_spec(cfg)
    anvil = anvil_spec(cfg.services_dir, cfg.anvil_port)
    started: list[ServiceSpec] = []
    (home / "s3").mkdir(exist_ok=True)  # weed does not create its data folder
    try:
        with ThreadPoolExecutor(2) as pool:
            s3_started = pool.submit(start, s3)
            started.append(s3)
            content = build_moonbirds(MOONBIRDS_ARCHIVE, cache / "moonbirds", limit=MOONBIRDS)
            (home / "ipfs").mkdir()
            shutil.copyfile(content.car_path, home / "ipfs" / content.car_path.name)
            quirks_cid, quirks_files = build_quirks_ipfs(home / "ipfs")
            started.append(gateway)
            gateway_started = pool.submit(start, gateway)
            artifacts = compile_contracts(cache / "artifacts.json")
            loot_uris = read_loot_uris(LOOT_ARCHIVE, LOOT)
            started.append(anvil)
            start(anvil)
            rpc_url = f"http://127.0.0.1:{cfg.anvil_port}"
            addresses = deploy_demo(rpc_url, artifacts, content.metadata_cid, MOONBIRDS, loot_uris)
            gateway_started.result()
            s3_started.result()
        gateway_url = f"http://127.0.0.1:{cfg.gateway_port}"
        settings = Settings(
            rpc_url=rpc_url,
            ipfs_gateways=(gateway_url,),
            allow_hosts=(f"127.0.0.1:{cfg.gateway_port}", origin.host_port),
            s3_endpoint_url=cfg.s3_endpoint_url,
            s3_bucket=cfg.bucket,
            concurrency=16,
            connect_timeout_s=5.0,
            read_timeout_s=15.0,
            max_retries=2,
            backoff_base_s=0.05,
            backoff_max_s=0.5,
            checkpoint_interval_s=0.5,
        )
        ObjectStore(settings).ensure_bucket()
        yield Services(
            settings=settings,
            home=home,
            rpc_url=rpc_url,
            gateway=gateway_url,
            artifacts=artifacts,
            moonbirds=content,
            moonbirds_address=addresses["Moonbirds"].lower(),
            loot_address=addresses["Loot"].lower(),
            loot_uris=loot_uris,
            quirks_ipfs_cid=quirks_cid,
            quirks_ipfs_files=quirks_files,
        )
    finally:
        for spec in reversed(started):
            # The state is thrown away: SeaweedFS need not drain (it takes seconds).
            kill = spec.name == s3.name
            stop(dataclasses.replace(spec, stop_signal=signal.SIGKILL) if kill else spec)
        mp.undo()


@pytest.fixture
def settings(services: Services, request: pytest.FixtureRequest) -> Settings:
    """The services' settings with an S3 prefix of this test's own."""
    return services.settings.replace(s3_prefix=prefix_for(request))


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return ObjectStore(settings)
