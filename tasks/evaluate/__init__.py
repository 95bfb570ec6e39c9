"""Evaluate: how well a CLIP model finds each NFT by its caption, and how varied each
collection is (CVI).

Reads ``exports/webdataset/<split>/`` and ``models/`` (through tasks.train);
writes ``tables/retrieval_results/<id>.parquet``, ``tables/cvi/<id>.parquet``,
``embeddings/<id>/<split>/*.parquet`` and ``reports/{retrieval,cvi}/`` (keys in
tasks.core.paths).

Entry points: ``embed_shards`` and ``embed_split`` (CLIP vectors of exported
pairs), ``evaluate`` (top-K accuracy), ``measure_cvi`` (CVI beside top-1), and
the plots.
"""

from tasks.evaluate.cvi import CviRow, correlations, cvi_run_id, measure_cvi
from tasks.evaluate.data import exported_splits, held_out_split, split_listing
from tasks.evaluate.embed import embed_shards, embed_split
from tasks.evaluate.embedding_files import read_files
from tasks.evaluate.plots import CviPoint, cvi_bars, cvi_scatter, topk_plot
from tasks.evaluate.retrieval import (
    ALL,
    KS,
    POOLS,
    evaluate,
    result_rows,
    retrieval_result_id,
    save_results,
)

__all__ = [
    "ALL",
    "KS",
    "POOLS",
    "CviPoint",
    "CviRow",
    "correlations",
    "cvi_bars",
    "cvi_run_id",
    "cvi_scatter",
    "embed_shards",
    "embed_split",
    "evaluate",
    "exported_splits",
    "held_out_split",
    "measure_cvi",
    "read_files",
    "result_rows",
    "retrieval_result_id",
    "save_results",
    "split_listing",
    "topk_plot",
]
