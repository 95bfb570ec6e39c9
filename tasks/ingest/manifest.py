"""Manifest rows and their parquet encoding.

The schema lives in ``sql/ingest/manifest.sql``; DuckDB turns rows into parquet and
back, so the files are exactly what users later query with DuckDB.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from tasks.core import paths
from tasks.core.s3 import ObjectStore
from tasks.core.sql import sql_text

MAX_URI_CHARS = 4096  # data: URIs can be megabytes; their content is in the stored blob
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class ManifestRow:
    collection: str
    contract: str
    token_id: str
    token_uri: str | None = None
    metadata_key: str | None = None
    metadata_sha256: str | None = None
    metadata_cid: str | None = None
    image_uri: str | None = None
    image_key: str | None = None
    mime: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    cid: str | None = None
    width: int | None = None
    height: int | None = None
    status: str = "ok"
    error_kind: str | None = None
    error: str | None = None
    retryable: bool = False
    fetched_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    @property
    def done(self) -> bool:
        """Finished for good: stored, or failed in a way a retry cannot fix."""
        return self.status == "ok" or not self.retryable


COLUMNS = tuple(f.name for f in dataclasses.fields(ManifestRow))


def valid_text(text: str) -> str:
    """Text DuckDB can store: JSON lets lone surrogates into strings, UTF-8 does not."""
    return text.encode("utf-8", "replace").decode("utf-8")


def error_text(message: str) -> str:
    """An error message fit for a manifest cell and a terminal: cut to MAX_ERROR_CHARS,
    then every non-printable character (raw revert bytes, escapes, bidi controls,
    lone surrogates) written as a Python escape, so stored errors are plain text."""
    text = message[:MAX_ERROR_CHARS]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def clip_uri(uri: str | None) -> str | None:
    """Keep manifest cells small and valid: long (data:) URIs are cut, with an ellipsis."""
    if uri is None:
        return None
    return valid_text(uri if len(uri) <= MAX_URI_CHARS else uri[:MAX_URI_CHARS] + "…")


# Column types for read_json, all as text so no value is guessed at; the INSERT casts.
_JSON_COLUMNS = dict.fromkeys(COLUMNS, "VARCHAR")


def _jsonable(row: ManifestRow) -> dict[str, object]:
    # Field by field: dataclasses.asdict deep-copies every value, a tenth of a
    # checkpoint's cost for nothing (the values are strings, numbers and one datetime).
    values: dict[str, object] = {name: getattr(row, name) for name in COLUMNS}
    values["fetched_at"] = row.fetched_at.isoformat()
    return values


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(sql_text("ingest/manifest"))
    return con


def to_parquet(rows: list[ManifestRow]) -> bytes:
    """Encode rows as one parquet file."""
    con = _connect()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Rows go in through a JSON-lines file: binding Python values
            # (executemany, list parameters) is 100x slower for a 1,000-row shard.
            lines = Path(tmp) / "rows.jsonl"
            lines.write_text("".join(json.dumps(_jsonable(r)) + "\n" for r in rows))
            if rows:
                con.execute(
                    "INSERT INTO manifest BY NAME SELECT * FROM read_json(?, "
                    "format = 'newline_delimited', columns = ?)",
                    [str(lines), _JSON_COLUMNS],
                )
            path = Path(tmp) / "manifest.parquet"
            con.execute(f"COPY manifest TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
            return path.read_bytes()
    finally:
        con.close()


def from_parquet(data: bytes) -> list[ManifestRow]:
    """Decode a parquet file written by to_parquet."""
    con = _connect()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.parquet"
            path.write_bytes(data)
            cols = ", ".join(COLUMNS)
            result = con.execute(f"SELECT {cols} FROM read_parquet('{path}')").fetchall()
        return [ManifestRow(*r) for r in result]
    finally:
        con.close()


def manifest_keys(store: ObjectStore, contracts: Sequence[str] | None = None) -> list[str]:
    """Every finished block manifest (checkpoint parts excluded), optionally per contract."""
    prefixes = (
        [paths.MANIFESTS + "/"] if not contracts else [f"{paths.MANIFESTS}/{c}/" for c in contracts]
    )
    keys = [k for p in prefixes for k in store.list_keys(store.key(p))]
    return sorted(k for k in keys if paths.is_manifest(k))
