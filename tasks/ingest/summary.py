"""What the object store holds: per-collection counts read from the shard manifests,
and whether a collection looks unrevealed (one placeholder image for most tokens)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from tasks.core.s3 import ObjectStore
from tasks.core.sql import sql_text
from tasks.ingest.manifest import manifest_keys

# A collection is unrevealed when one image is shown by at least this share of its
# stored tokens: revealed art repeats an image a handful of times at most, a collection
# minted before its reveal shows one placeholder everywhere (the tables build also
# wants the image's holders to have nothing else to tell them apart, or placeholder
# words: sql/tables/unrevealed.sql).
PLACEHOLDER_SHARE = 0.5
# Or partly: one image fills a run of at least this many consecutive stored tokens, and
# no other image is shown that often. A reveal in waves leaves its unrevealed ids as one
# run; 1-of-1s with copies repeat an image a few times, and editions repeat several.
PLACEHOLDER_RUN = 20


def summarize(store: ObjectStore, contracts: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per collection (of ``contracts``, else all): tokens, ok, failed, failure
    kinds, distinct images, bytes, and ``reveal`` ('unrevealed: re-ingest', 'partly: N
    tokens' or '', from image digests: sql/ingest/summary.sql)."""
    keys = manifest_keys(store, contracts)
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
            return summary_rows(con)
        finally:
            con.close()


def summary_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The summary of the manifest rows in ``con``'s view ``manifest``."""
    result = con.execute(
        sql_text("ingest/summary"),
        {"placeholder_share": PLACEHOLDER_SHARE, "placeholder_run": PLACEHOLDER_RUN},
    )
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
