"""Tables: the dataset as DuckDB tables (parquet), from what ingest or import stored.

Reads ``manifests/`` and the metadata ``blobs/``; writes
``tables/tokens/<contract>/<block>.parquet`` (one row per token, traits cleaned)
and ``tables/<table>.parquet`` (traits, rarity, captions, prompts, splits...)
plus ``tables/dashboards/<contract>.json`` (keys in tasks.core.paths). The SQL
is in ``sql/tables/``.

Entry points: ``build_block`` (one manifest block's tokens file), ``prune_tokens``
and ``build_run_tables`` (every other table, in DuckDB).
"""

from tasks.tables.build import TablesResult, build_run_tables, build_tables
from tasks.tables.splits import load_split_rules
from tasks.tables.tokens import BlockResult, build_block, prune_tokens

__all__ = [
    "BlockResult",
    "TablesResult",
    "build_block",
    "build_run_tables",
    "build_tables",
    "load_split_rules",
    "prune_tokens",
]
