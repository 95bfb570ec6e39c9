"""Ingest: read collections from Ethereum and store each token's metadata and image.

Reads a contract's ``tokenURI`` of every id over JSON-RPC, fetches what it
names (HTTP, IPFS as verified CARs, Arweave, data: URIs) with caps and checks,
and writes ``blobs/sha256/<aa>/<sha256>`` (bytes, stored once) and
``manifests/<contract>/<block>.parquet`` (one row per token id: where its
metadata and image are, or why it failed) (keys in tasks.core.paths).

Entry points: ``parse_target``/``load_registry``/``registry_files`` (which
contract a name means), ``plan_collection`` (facts, id range, blocks) and
``ingest_block`` (one block of ids, end to end, resumable); ``manifest_keys`` and
``summarize`` read what is stored.
"""

from tasks.ingest.blocks import BLOCK, BlockSpec, IngestResult, ingest_block, plan_blocks
from tasks.ingest.manifest import ManifestRow, manifest_keys
from tasks.ingest.plan import CollectionPlan, plan_collection
from tasks.ingest.registry import (
    CollectionTarget,
    collection_name,
    load_registry,
    parse_target,
    registry_files,
)
from tasks.ingest.summary import summarize

__all__ = [
    "BLOCK",
    "BlockSpec",
    "CollectionPlan",
    "CollectionTarget",
    "IngestResult",
    "ManifestRow",
    "collection_name",
    "ingest_block",
    "load_registry",
    "manifest_keys",
    "parse_target",
    "plan_blocks",
    "plan_collection",
    "registry_files",
    "summarize",
]
