"""DuckDB connections that read and write the pipeline's tables where they live.

Tables are parquet under one root: an ``s3://bucket/prefix/tables`` URL in a
run (DuckDB's own httpfs reads and writes S3, streaming, so no table passes
through Python memory), or a local folder in benchmarks and exports. S3
credentials come from tasks.core.s3's boto3 session, so whatever boto3 uses, DuckDB uses.
The SQL itself lives in ``sql/`` (tasks.core.sql).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

from tasks.core.s3 import boto3_session
from tasks.core.settings import Settings


def _httpfs_extension() -> Path:
    """The httpfs build shipped in the duckdb-extension-httpfs wheel (INSTALL downloads)."""
    spec = importlib.util.find_spec("duckdb_extension_httpfs")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("duckdb-extension-httpfs is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not path.exists():
        raise RuntimeError(f"no httpfs extension for DuckDB {duckdb.__version__} at {path}")
    return path


def connect(
    settings: Settings | None = None,
    *,
    database: str = ":memory:",
    memory_limit: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A connection with S3 access for ``settings`` (None: local files only)."""
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # it draws on stdout: JSON and logs break
    # Insertion order is not needed for our tables; dropping it lets large
    # sorts and COPYs stream instead of holding everything to keep order.
    con.execute("SET preserve_insertion_order = false")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if settings is not None:
        configure_s3(con, settings)
    return con


def configure_s3(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Load httpfs and give DuckDB the endpoint and boto3's current credentials."""
    con.execute(f"LOAD '{_httpfs_extension()}'")
    options: dict[str, Any] = {"TYPE": "s3", "REGION": settings.s3_region, "URL_STYLE": "path"}
    if settings.s3_endpoint_url:
        endpoint = urlsplit(settings.s3_endpoint_url)
        options["ENDPOINT"] = endpoint.netloc
        options["USE_SSL"] = endpoint.scheme == "https"
    credentials = boto3_session().get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options["KEY_ID"] = frozen.access_key
        options["SECRET"] = frozen.secret_key
        if frozen.token:
            options["SESSION_TOKEN"] = frozen.token
    body = ", ".join(f"{k} {_literal(v)}" for k, v in options.items())
    con.execute(f"CREATE OR REPLACE SECRET nft1000_s3 ({body})")


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"
