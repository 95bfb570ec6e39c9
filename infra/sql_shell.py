"""`nft1000 sql`: DuckDB SQL over the run's tables in S3, as views named after them.

Views: tokens, traits, rarity, captions, prompts, splits, problems, collection_splits,
manifests (sql/shell/views.sql), retrieval_results once nft1000/evaluate has run and cvi
once nft1000/cvi has.
A query given as an argument runs and prints; with none, statements are read
from standard input. Statements are split by DuckDB's own parser, so a ``;``
inside a string literal or a comment is not a break.
"""

from __future__ import annotations

import sys

import duckdb

from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.settings import Settings
from tasks.core.sql import run_sql

# Result tables that exist once a flow has written them: folder under tables/ -> views file.
RESULT_VIEWS = {
    paths.RETRIEVAL_RESULTS: "shell/retrieval_views",
    paths.CVI_RESULTS: "shell/cvi_views",
}


def open_views(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A connection with a view per table of the configured bucket and prefix."""
    con = connect(settings)
    con.execute("SET VARIABLE tables = ?", [paths.tables_root(settings)])
    con.execute("SET VARIABLE manifests = ?", [paths.url(settings, paths.MANIFESTS)])
    run_sql(con, "shell/views")
    for folder, views in RESULT_VIEWS.items():
        found = con.execute(
            "SELECT count(*) FROM glob(getvariable('tables') || ? || '/*.parquet')", [f"/{folder}"]
        ).fetchone()
        if found and found[0]:
            run_sql(con, views)
    return con


def run(settings: Settings, query: str | None, max_rows: int = 40) -> int:
    """Print each statement's result; 1 on a SQL error (after printing it)."""
    con = open_views(settings)
    text = query if query is not None else sys.stdin.read()
    try:
        for statement in con.extract_statements(text):
            relation = con.sql(statement.query)
            if relation is not None:
                relation.show(max_rows=max_rows, max_width=200)
    except duckdb.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0
