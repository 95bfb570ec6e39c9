"""S3 for preparing test data: a private SeaweedFS, and boto3 signing as a stack's identity.

``seaweedfs()`` starts one on free ports for a block (tests.data.moonbird_shards puts
its blobs there) and stops it by its PID after. ``signing_as()`` makes boto3's default
session, which every client of tasks.core.s3 comes from, sign with given credentials
for a block (bench.ingest signs as the stack it started): credentials go to boto3 as a
session, and os.environ is never edited.
"""

from __future__ import annotations

import dataclasses
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import botocore.session

from infra import stack
from infra.process import start, stop
from tasks.core.settings import Settings


@contextmanager
def seaweedfs() -> Iterator[Settings]:
    """A private SeaweedFS S3 on free ports for the block; stopped by its PID after it."""
    with tempfile.TemporaryDirectory(prefix="nft1000-bench-s3-") as tmp:
        cfg = stack.StackConfig.with_free_ports(Path(tmp), bucket="bench")
        spec = stack.s3_spec(cfg)
        (cfg.home / "s3").mkdir(parents=True)  # weed does not create it
        env = stack.stack_env(cfg)  # weed's admin identity, as s3_spec gives it
        try:
            start(spec)
            with signing_as(
                env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]
            ):
                yield Settings(
                    s3_endpoint_url=cfg.s3_endpoint_url, s3_bucket=cfg.bucket, concurrency=16
                )
        finally:
            # The data is thrown away with the folder: no need to let weed drain.
            stop(dataclasses.replace(spec, stop_signal=signal.SIGKILL))


@contextmanager
def signing_as(key_id: str, secret: str, region: str) -> Iterator[None]:
    """boto3's default session, which every S3 client of tasks.core.s3 is made from, signs
    with these credentials for the block (os.environ is left alone).

    The session reads no AWS_PROFILE: with the identity's own keys it needs no profile
    (and a profile this machine lacks would be an error).
    """
    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    saved = boto3.DEFAULT_SESSION
    boto3.setup_default_session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region,
        botocore_session=core,
    )
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = saved
