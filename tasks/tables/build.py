"""Build the dataset tables from the tokens files, in DuckDB, and write them out.

Every table is SQL in ``sql/`` over ``tokens`` (tasks/tables/tokens.py wrote one
parquet file per manifest block). The only Python in the loop counts CLIP
tokens of each distinct word (tasks/tables/clip_tokens.py). Per-token tables are
views that stream from the tokens files into their parquet output, so memory
stays bounded by DuckDB's limit however many tokens there are.

A contract is one collection, whatever names its manifest rows carry (a rename,
or one run by registry name and one by address): its name is the registry's for
its address (user registries first, as ingest looks names up), else the name its
rows give (sql/tables/token_rows.sql says which), cleaned and capped as trait
text is. Every row named otherwise, every row left out (a second row of a token,
a malformed id) and every metadata problem is a row of ``problems``, never a
failed build.

Unrevealed placeholders (one image and "will be revealed" metadata for many tokens,
sql/tables/unrevealed.sql) stay in ``tokens``, ``splits`` (flagged ``unrevealed``),
captions and prompts, but not in trait counts, rarity or the mini subset; their
collection gets an ``unrevealed`` or ``partly_unrevealed`` problem.

Outputs under the root (an s3:// URL or a local folder):
``traits``, ``rarity``, ``captions``, ``prompts``, ``splits``,
``collection_splits``, ``problems`` (each ``<name>.parquet``) and
``dashboards/<contract>.json`` (each collection's metadata_dashboard.json).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.folders import Folder, open_folder
from tasks.core.settings import Settings
from tasks.core.sql import quote, run_sql, sql_text
from tasks.ingest.registry import read_registry, registry_files
from tasks.ingest.summary import PLACEHOLDER_RUN, PLACEHOLDER_SHARE
from tasks.tables import clip_tokens
from tasks.tables.splits import (
    Partitioning,
    build_splits,
    load_split_rules,
    register_collection_splits,
)
from tasks.tables.tokens import collection_name

# Table name -> the query whose rows it holds.
OUTPUTS = {
    "traits": "SELECT collection, contract, trait_type, value, display_type, count, frequency "
    "FROM trait_counts ORDER BY contract, trait_type, count DESC, value",
    "rarity": "SELECT * FROM rarity_scores",
    "captions": "SELECT collection, contract, token_id, method, preferred, text AS caption, "
    "clip_tokens, truncated, traits_total, traits_kept FROM texts WHERE kind = 'caption'",
    "prompts": "SELECT collection, contract, token_id, method, preferred, text AS prompt, "
    "clip_tokens, truncated, traits_total, traits_kept FROM texts WHERE kind = 'prompt'",
    "splits": "SELECT * FROM splits",
    "collection_splits": "SELECT * FROM collection_splits ORDER BY collection",
    "problems": "SELECT * FROM problems",
}

# Tables whose texts may be cut by CLIP, and the kind of text in each.
CUT_KINDS = {"captions": "caption", "prompts": "prompt"}


@dataclass
class TablesResult:
    tokens: int = 0  # tokens in the tables (one row per contract and token id)
    left_out: int = 0  # rows of the tokens files left out (problems say why)
    described: int = 0  # tokens whose metadata was read
    collections: int = 0
    words: int = 0  # distinct words whose CLIP tokens were counted
    counted_whole: int = 0  # texts counted whole instead (ftfy looks at the whole text)
    split_notes: tuple[str, ...] = ()  # how the split file's quirks were handled
    unrevealed: int = 0  # tokens that are unrevealed placeholders
    reveal_notes: tuple[str, ...] = ()  # per collection with placeholders: what to re-ingest
    rows: dict[str, int] = field(default_factory=dict)  # rows written per table
    seconds: dict[str, float] = field(default_factory=dict)  # per step


def build_tables(
    con: duckdb.DuckDBPyConnection,
    tokens_files: str | list[str],
    out: Folder,
    partitioning: Partitioning,
    *,
    seed: int = 0,
    mini_per_collection: int = 1000,
    registry_names: Mapping[str, str] | None = None,
) -> TablesResult:
    """Build every table from the tokens files and write them under ``out``;
    ``registry_names``: the registries' collection name by contract address."""
    result = TablesResult()
    if not out.url.startswith("s3://"):
        Path(out.url).mkdir(parents=True, exist_ok=True)  # COPY does not create folders
    clock = _Clock(result)
    con.execute("SET VARIABLE tokens_files = ?", [tokens_files])
    con.execute("SET VARIABLE context = ?", [clip_tokens.CONTEXT_LENGTH])
    con.execute("SET VARIABLE placeholder_share = ?", [PLACEHOLDER_SHARE])
    con.execute("SET VARIABLE placeholder_run = ?", [PLACEHOLDER_RUN])
    run_sql(con, "tables/token_rows")
    _name_contracts(con, registry_names or {})
    run_sql(con, "tables/unrevealed")
    run_sql(con, "tables/tables_inputs")
    result.left_out = _one(con, "SELECT count(*) FROM dropped")[0]
    result.tokens, result.described = _one(con, "SELECT count(*), count(metadata_key) FROM tokens")
    result.unrevealed = _one(con, "SELECT count(*) FROM placeholder_tokens")[0]
    result.reveal_notes = tuple(
        f"{collection}: {detail}"
        for collection, detail in con.execute(
            "SELECT collection, detail FROM reveal_problems ORDER BY collection, contract"
        ).fetchall()
    )
    result.collections = _one(con, "SELECT count(DISTINCT contract) FROM described")[0]
    clock.lap("read tokens")

    # Trait counts and rarity are of revealed tokens only (sql/tables/tables_inputs.sql).
    run_sql(con, "tables/traits")
    # The rarity ranks are a window over all tokens: computed once, used twice.
    con.execute("CREATE OR REPLACE TABLE rarity_scores AS SELECT * FROM rarity")
    clock.lap("traits and rarity")

    run_sql(con, "tables/texts")
    result.words = _count_words(con)
    run_sql(con, "tables/texts_counted")
    result.counted_whole = _count_whole(con)
    clock.lap("words")

    result.split_notes = partitioning.notes
    register_collection_splits(con, partitioning)
    build_splits(con, seed, mini_per_collection)
    clock.lap("splits")

    for name, query in OUTPUTS.items():
        if name in CUT_KINDS:  # only now: the other kind's cut is not this one's cost
            con.execute("SET VARIABLE cut_kind = ?", [CUT_KINDS[name]])
            run_sql(con, "tables/cut_traits")
        result.rows[name] = _copy(con, query, paths.join(out.url, f"{name}.parquet"))
        clock.lap(name)
    _write_dashboards(con, out)
    clock.lap("dashboards")
    return result


def _one(con: duckdb.DuckDBPyConnection, query: str) -> tuple[int, ...]:
    row = con.execute(query).fetchone()
    assert row is not None  # aggregates always return a row
    return tuple(int(v) for v in row)


def _name_contracts(con: duckdb.DuckDBPyConnection, registry_names: Mapping[str, str]) -> None:
    """Fill ``contract_names(contract, collection)``: each contract's one collection name."""
    rows = []
    for contract, candidate in con.execute(
        "SELECT contract, candidate FROM name_candidates"
    ).fetchall():
        name, _ = collection_name(registry_names.get(contract, candidate), contract)
        rows.append({"contract": contract, "collection": name})
    columns = {"contract": "VARCHAR", "collection": "VARCHAR"}
    _load(con, "CREATE OR REPLACE TABLE contract_names AS", rows, columns)


def registry_names(extra: Sequence[Path]) -> dict[str, str]:
    """Collection name by contract address in the registries ingest names collections
    from: the user's first, the built-in one last; the first that lists an address wins."""
    names: dict[str, str] = {}
    for path in registry_files(extra):
        for entry in read_registry(path):
            names.setdefault(entry.address, entry.name)
    return names


def _count_words(con: duckdb.DuckDBPyConnection) -> int:
    """Fill ``clip_words(word, tokens)`` for every distinct word of every text."""
    words = [w for (w,) in con.execute("SELECT word FROM words_to_count").fetchall()]
    counts = clip_tokens.word_counts(words)
    rows = [{"word": w, "tokens": n} for w, n in zip(words, counts, strict=True)]
    _load(
        con, "CREATE OR REPLACE TABLE clip_words AS", rows, {"word": "VARCHAR", "tokens": "INTEGER"}
    )
    return len(words)


def _count_whole(con: duckdb.DuckDBPyConnection) -> int:
    """Fill ``whole_counted`` for the texts CLIP's tokenizer must see whole."""
    rows = []
    cursor = con.execute(sql_text("tables/whole_count_texts"))
    while (row := cursor.fetchone()) is not None:
        kind, contract, token_id, method, head, body, traits = row
        text = f"{head} {body}" if body else head
        total = clip_tokens.count(text) + 2
        kept = len(traits or [])
        if traits and total > clip_tokens.CONTEXT_LENGTH:
            kept = _kept(head, " " if kind == "caption" else ", ", traits)
        rows.append(
            {"kind": kind, "contract": contract, "token_id": token_id, "method": method,
             "clip_tokens": total, "traits_kept": kept}
        )  # fmt: skip
    columns = dict.fromkeys(("kind", "contract", "token_id", "method"), "VARCHAR")
    columns |= {"clip_tokens": "INTEGER", "traits_kept": "BIGINT"}
    _load(con, "INSERT INTO whole_counted BY NAME", rows, columns)
    return len(rows)


def _kept(head: str, joiner: str, traits: list[str]) -> int:
    """Traits whose text fits CLIP's context: a longer text never takes fewer tokens,
    so counting stops at the first that does not (at most 76 counts of short texts)."""
    kept = 0
    while kept < len(traits):
        text = f"{head} {joiner.join(traits[: kept + 1])}"
        if clip_tokens.count(text) + 2 > clip_tokens.CONTEXT_LENGTH:
            break
        kept += 1
    return kept


def _load(
    con: duckdb.DuckDBPyConnection,
    into: str,
    rows: list[dict[str, object]],
    columns: dict[str, str],
) -> None:
    """``<into> SELECT`` the rows, through a JSON-lines file (binding lists is slow)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        con.execute(
            f"{into} SELECT * FROM read_json(?, format = 'newline_delimited', columns = ?)",
            [str(path), columns],
        )


def _copy(con: duckdb.DuckDBPyConnection, query: str, target: str) -> int:
    """COPY a query to one parquet file; the rows written."""
    row = con.execute(
        f"COPY ({query}) TO {quote(target)} (FORMAT parquet, COMPRESSION zstd)"
    ).fetchone()
    return int(row[0]) if row else 0


def _write_dashboards(con: duckdb.DuckDBPyConnection, out: Folder) -> None:
    run_sql(con, "tables/dashboard")
    cursor = con.execute("SELECT contract, dashboard FROM dashboards")
    while (row := cursor.fetchone()) is not None:
        contract, dashboard = row
        pretty = json.dumps(json.loads(dashboard), ensure_ascii=False, indent=1)
        out.put(paths.dashboard(contract), pretty.encode("utf-8"))


class _Clock:
    def __init__(self, result: TablesResult) -> None:
        self.result = result
        self.last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.result.seconds[step] = round(now - self.last, 3)
        self.last = now


def build_run_tables(settings: Settings, seed: int, mini_per_collection: int) -> TablesResult:
    """Every table from every tokens file of the configured bucket, written back beside
    them (``tables/``), with the configured split rules and DuckDB memory limit."""
    root = paths.tables_root(settings)
    con = connect(settings, memory_limit=settings.duckdb_memory_limit)
    try:
        rules = load_split_rules(settings.partitioning, settings.registries)
        return build_tables(
            con,
            paths.tokens_glob(root),
            open_folder(root, settings),
            rules,
            seed=seed,
            mini_per_collection=mini_per_collection,
            registry_names=registry_names(settings.registries),
        )
    finally:
        con.close()
