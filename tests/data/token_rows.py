"""Tokens-file rows as build_block makes them, and parquet rows read back, for tables tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from tasks.ingest.manifest import ManifestRow
from tasks.tables.tokens import TokenRecord, token_record


def record(
    collection: str,
    contract: str,
    token_id: int | str,
    metadata: bytes | None,
    fetched_at: datetime | None = None,
) -> TokenRecord:
    """A token's row; no metadata means its fetch failed (as an HTTP error)."""
    row = ManifestRow(
        collection,
        contract,
        str(token_id),
        metadata_key=None if metadata is None else f"blobs/meta-{contract}-{token_id}",
        image_key=None if metadata is None else f"blobs/image-{contract}-{token_id}",
        mime=None if metadata is None else "image/png",
        status="ok" if metadata is not None else "failed",
        error_kind=None if metadata is not None else "http_status",
    )
    return token_record(
        row if fetched_at is None else replace(row, fetched_at=fetched_at), metadata
    )


Row = dict[str, Any]


def parquet_rows(path: Path, where: str = "true") -> list[Row]:
    """A parquet table's rows as dicts, in a fixed order."""
    with duckdb.connect() as con:
        cursor = con.execute(
            f"SELECT * FROM read_parquet(?) WHERE {where} ORDER BY ALL", [str(path)]
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
