"""The ``tokens`` table: one row per token, from its manifest row and metadata JSON.

This is the one step that parses token JSON, so it is done in Python, where
``tasks.tables.traits`` turns whatever a collection wrote into clean traits and
recorded reasons. It runs per manifest block (1,000 ids), as one Dask task,
and writes ``tables/tokens/<contract>/<block>.parquet``; every other table is
SQL over these files. A block whose manifest has not changed since its tokens
file was written (the manifest's ETag is stored with it) is skipped.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from tasks.core import paths
from tasks.core.content import parse_metadata
from tasks.core.duck import connect
from tasks.core.errors import ItemError
from tasks.core.s3 import ObjectStore
from tasks.core.sql import run_sql
from tasks.ingest.manifest import ManifestRow, from_parquet, valid_text
from tasks.tables.traits import READ_FACTOR, Trait, clean_capped, is_visual, normalise_traits

MAX_NAME = 256  # characters kept of a token's name
MAX_DESCRIPTION = 2000  # and of its description; captions use far less
MAX_COLLECTION = 200  # and of a collection's name (registry names are under 60)
# Characters kept of a token id or contract: more than either has (78 and 42), so one cut
# here is still malformed, and the tables build leaves it out as such.
MAX_ID = 100
_ETAG = "source-etag"  # S3 user metadata of a tokens file: its manifest's ETag
# S3 user metadata of a tokens file: the version of sql/tables/tokens.sql it was written
# with. A file of an older version is rebuilt, so every tokens file has every column.
_SCHEMA = "tokens-schema"
SCHEMA_VERSION = "3"  # 2: fetched_at, names cleaned; 3: trait key by content, number-like
# values visual, count pseudo-traits left out


@dataclass(frozen=True)
class TokenRecord:
    """One row of ``tokens`` (schema: sql/tables/tokens.sql)."""

    collection: str
    contract: str
    token_id: str
    fetched_at: datetime  # the manifest row's: which of two rows for a token is newer
    name: str | None
    description: str | None
    status: str
    error_kind: str | None
    metadata_key: str | None
    image_key: str | None
    image_mime: str | None
    image_sha256: str | None
    width: int | None
    height: int | None
    traits: tuple[Trait, ...]
    problems: tuple[str, ...]


def token_record(row: ManifestRow, metadata: bytes | None) -> TokenRecord:
    """The token's row; metadata that cannot be read leaves a problem, never an error."""
    name = description = None
    traits: tuple[Trait, ...] = ()
    problems: list[str] = []
    if metadata is not None:
        try:
            parsed = parse_metadata(metadata)
        except ItemError as e:
            problems.append(f"metadata: {e.message}")
        else:
            name = _field(parsed, "name", MAX_NAME, problems)
            description = _field(parsed, "description", MAX_DESCRIPTION, problems)
            found = normalise_traits(parsed)
            traits, problems = found.traits, problems + list(found.problems)
    elif row.metadata_key is not None:
        problems.append("metadata: stored blob is missing")
    collection, renamed = collection_name(row.collection, row.contract)
    if renamed is not None:
        problems.append(f"collection: {renamed}")
    ok = row.status == "ok"
    return TokenRecord(
        collection=collection,
        contract=row.contract[:MAX_ID],
        token_id=row.token_id[:MAX_ID],
        fetched_at=row.fetched_at,
        name=name,
        description=description,
        status=row.status,
        error_kind=row.error_kind,
        metadata_key=row.metadata_key,
        image_key=row.image_key if ok else None,
        image_mime=row.mime if ok else None,
        image_sha256=row.sha256 if ok else None,
        width=row.width if ok else None,
        height=row.height if ok else None,
        traits=traits,
        problems=tuple(problems),
    )


def _field(metadata: dict[str, Any], key: str, limit: int, problems: list[str]) -> str | None:
    """A clean text field; numbers become text, anything else is a recorded problem."""
    raw = metadata.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        problems.append(f"{key}: not text, ignored")
        return None
    text, cut = clean_capped(valid_text(str(raw)[: READ_FACTOR * limit + 1]), limit)
    if cut:
        problems.append(f"{key}: cut to {limit} characters")
    return text or None


def collection_name(raw: str, contract: str) -> tuple[str, str | None]:
    """A collection's name as the tables show it: cleaned as trait text is and cut to
    MAX_COLLECTION characters, else (nothing left) the contract address; and what was
    done to it, if anything more than cleaning."""
    name, cut = clean_capped(valid_text(raw), MAX_COLLECTION)
    if not name:
        return contract, "name is empty once cleaned, the contract address is used"
    return name, f"name cut to {MAX_COLLECTION} characters" if cut else None


def _jsonable(record: TokenRecord) -> dict[str, Any]:
    return {
        **{
            k: v
            for k, v in record.__dict__.items()
            if k not in ("traits", "problems", "fetched_at")
        },
        "fetched_at": record.fetched_at.isoformat(),
        "traits": [
            {
                "trait_type": t.trait_type,
                "value": t.value,
                "display_type": t.display_type,
                "visual": is_visual(t),
            }
            for t in record.traits
        ],
        "problems": list(record.problems),
    }


def write_parquet(records: Iterable[TokenRecord], path: Path) -> int:
    """Write records as one tokens parquet file (through JSON lines, as manifests are)."""
    con = connect()
    try:
        run_sql(con, "tables/tokens")
        with tempfile.TemporaryDirectory() as tmp:
            lines = Path(tmp) / "tokens.jsonl"
            count = 0
            with lines.open("w", encoding="utf-8") as out:
                for record in records:
                    out.write(json.dumps(_jsonable(record), ensure_ascii=False) + "\n")
                    count += 1
            if count:
                con.execute(
                    "INSERT INTO tokens BY NAME SELECT * FROM read_json(?, "
                    "format = 'newline_delimited', columns = ?)",
                    [str(lines), _json_columns(con)],
                )
        con.execute(f"COPY tokens TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
        return count
    finally:
        con.close()


def _json_columns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """read_json column types: the tokens table's own, so nothing is guessed."""
    return {name: kind for name, kind, *_ in con.execute("DESCRIBE tokens").fetchall()}


@dataclass(frozen=True)
class BlockResult:
    manifest_key: str
    tokens: int
    skipped: bool  # the tokens file was already up to date
    problems: int  # tokens with at least one recorded problem


def tokens_key(store: ObjectStore, manifest_key: str) -> str:
    """``tables/tokens/<contract>/<block>.parquet`` for ``manifests/<contract>/<block>.parquet``."""
    return store.key(paths.tokens_file(manifest_key))


def build_block(
    store: ObjectStore, manifest_key: str, *, force: bool = False, threads: int = 16
) -> BlockResult:
    """Write the block's tokens file unless it is up to date with its manifest."""
    target = tokens_key(store, manifest_key)
    head = store.head(manifest_key)
    if head is None:
        raise FileNotFoundError(f"manifest {manifest_key} is gone")
    etag = head.etag
    built = store.head(target)
    stamp = {_ETAG: etag, _SCHEMA: SCHEMA_VERSION}
    if (
        not force
        and built is not None
        and all(built.metadata.get(k) == v for k, v in stamp.items())
    ):
        return BlockResult(manifest_key, 0, skipped=True, problems=0)
    body = store.get(manifest_key, if_match=etag)
    if body is None:
        raise FileNotFoundError(f"manifest {manifest_key} is gone")
    rows = from_parquet(body)
    with ThreadPoolExecutor(threads) as pool:
        blobs = list(pool.map(_loader(store), rows))
    records = [token_record(row, blob) for row, blob in zip(rows, blobs, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.parquet"
        write_parquet(records, path)
        store.put(target, path.read_bytes(), metadata=stamp)
    return BlockResult(
        manifest_key, len(records), skipped=False, problems=sum(1 for r in records if r.problems)
    )


def _loader(store: ObjectStore) -> Callable[[ManifestRow], bytes | None]:
    def load(row: ManifestRow) -> bytes | None:
        return None if row.metadata_key is None else store.read_blob(row.metadata_key)

    return load


def prune_tokens(store: ObjectStore, manifests: Sequence[str]) -> int:
    """Delete tokens files whose manifest is gone, so no table counts a token twice."""
    wanted = {tokens_key(store, key) for key in manifests}
    stale = [k for k in store.list_keys(store.key(paths.TOKENS) + "/") if k not in wanted]
    store.delete(stale)
    return len(stale)
