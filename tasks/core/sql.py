"""The SQL files under ``sql/<stage>/``, found through the installed ``sql`` package.

Statements are named ``"<stage>/<name>"`` (``"tables/traits"`` is
``sql/tables/traits.sql``). Reading them through ``importlib.resources`` rather
than a path beside the source tree is what lets a wheel installed anywhere run.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import duckdb


def sql_text(name: str) -> str:
    """The text of ``sql/<name>.sql``; ``name`` is ``"<stage>/<file>"``."""
    return files("sql").joinpath(f"{name}.sql").read_text()


def run_sql(
    con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any] | None = None
) -> None:
    """Execute ``sql/<name>.sql`` (one or more statements) with named parameters."""
    text = sql_text(name)
    if params:
        con.execute(text, dict(params))
    else:
        con.execute(text)


def quote(text: str) -> str:
    """A SQL string literal, for paths in statements that take no parameters (COPY TO)."""
    return "'" + text.replace("'", "''") + "'"
