"""What the object store holds: per-collection counts read from the shard manifests."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import duckdb

from tasks.core.s3 import ObjectStore
from tasks.core.sql import sql_text
from tasks.ingest.manifest import manifest_keys


def summarize(store: ObjectStore) -> list[dict[str, Any]]:
    """One row per collection: tokens, ok, failed, failure kinds, distinct images, bytes."""
    keys = manifest_keys(store)
    if not keys:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        for n, key in enumerate(keys):
            data = store.get(key)
            if data is not None:
                (Path(tmp) / f"{n:06d}.parquet").write_bytes(data)
        con = duckdb.connect()
        try:
            con.execute(f"CREATE VIEW manifest AS SELECT * FROM read_parquet('{tmp}/*.parquet')")
            result = con.execute(sql_text("ingest/summary"))
            columns = [d[0] for d in result.description]
            return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
        finally:
            con.close()
