"""Export: the dataset in the formats people train on (WebDataset shards, the released
NFT1000 folder layout) and, back the other way, the NFT1000 layout as a source.

Reads the tables (``tables/*.parquet``) and ``blobs/``; writes
``exports/<format>/`` (or any folder a user names). The NFT1000 import writes
``blobs/`` and ``manifests/`` exactly where ingest would (keys in tasks.core.paths).

Entry points: ``export_items`` (what an export writes per token), ``plan_shards``
and ``write_shard``/``write_index`` (WebDataset), ``export_batch`` and
``layout_batches`` (NFT1000 layout out), ``plan_import``/``import_batch`` (in).
"""

from tasks.export.items import HOLDOUT, SPLITS, ExportItem, export_items
from tasks.export.layout_export import (
    LayoutExportResult,
    copy_dashboards,
    export_batch,
    layout_batches,
)
from tasks.export.layout_import import ImportBatch, ImportResult, import_batch, plan_import
from tasks.export.webdataset import (
    Holdout,
    ShardOptions,
    ShardPlan,
    ShardResult,
    plan_shards,
    read_holdout,
    read_index,
    write_index,
    write_shard,
)

__all__ = [
    "HOLDOUT",
    "SPLITS",
    "ExportItem",
    "Holdout",
    "ImportBatch",
    "ImportResult",
    "LayoutExportResult",
    "ShardOptions",
    "ShardPlan",
    "ShardResult",
    "copy_dashboards",
    "export_batch",
    "export_items",
    "import_batch",
    "layout_batches",
    "plan_import",
    "plan_shards",
    "read_holdout",
    "read_index",
    "write_index",
    "write_shard",
]
