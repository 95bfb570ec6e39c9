"""The bucket layout: every S3 key and prefix any stage reads or writes, in one place.

The layout is the contract between stages (ingest writes what tables reads,
export writes what train reads...), so it is written down once, here. Keys are
relative to the configured prefix; ``url`` makes an ``s3://`` URL of one and
``ObjectStore.key`` a bucket key; ``open_folder(url(settings))`` reads and writes
them as paths. Nothing stored names a module path, so code
may move without moving data.

    blobs/sha256/<aa>/<sha256>                    ingest: a large blob, stored alone
    packs/<contract>/<block>/<name>.pack          ingest: a block's small blobs, end to end
    manifests/<contract>/<block>.parquet          ingest: one row per token id
    manifests/<contract>/_parts/<block>/...       ingest: checkpoints of a running block
    tables/tokens/<contract>/<block>.parquet      tables: tokens per manifest block
    tables/<table>.parquet                        tables: traits, captions, splits...
    tables/dashboards/<contract>.json             tables: NFT1000's metadata_dashboard
    exports/<format>/...                          export: webdataset, nft1000 layout
    masks/<contract>.npz, masks/<contract>.json   finetune: trait masks and their report
    models/<name>/<run id>/...                    finetune: checkpoint, log, model
    models/<name>/latest.json, models/latest.json finetune: the last finished run
    embeddings/<id>/<split>/<shards>.parquet      cvi: float16 CLIP vectors
    embeddings/<id>/model.json                    cvi: the model and data they are of
    tables/retrieval_results/<id>.parquet         evaluate: top-K accuracy rows
    tables/cvi/<id>.parquet                       cvi: CVI rows
    reports/retrieval/<id>.png, reports/cvi/...   evaluate, cvi: plots and JSON
"""

from __future__ import annotations

from tasks.core.settings import Settings

BLOBS = "blobs"
PACKS = "packs"
# A blob inside a pack is named by a reference: the pack's bucket key, then
# ``#<offset>+<length>``; a plain bucket key names a blob stored alone.
_REF_SEPARATOR = "#"
MANIFESTS = "manifests"
TABLES = "tables"
TOKENS = f"{TABLES}/tokens"
DASHBOARDS = "dashboards"  # under a tables root (S3 or a local folder)
EXPORTS = "exports"
WEBDATASET = "webdataset"  # exports/webdataset: what finetune, evaluate and cvi read
MASKS = "masks"
MODELS = "models"
EMBEDDINGS = "embeddings"
REPORTS = "reports"
RETRIEVAL_RESULTS = "retrieval_results"  # under a tables root
CVI_RESULTS = "cvi"  # under a tables root
LATEST = "latest.json"
# A WebDataset export: <split>/sizes.json (samples per shard, what open_clip_train reads)
# and shards.json at its root (every split's shards and the holdout draw).
SIZES, SHARD_INDEX = "sizes.json", "shards.json"
# The files of one training run's folder (models/<name>/<run id>/).
CHECKPOINT, MODEL, DONE, LOG = "checkpoint.pt", "model.pt", "done.json", "log.jsonl"


def url(settings: Settings, *parts: str) -> str:
    """``s3://bucket/prefix/part/...`` for the configured bucket and prefix."""
    return f"s3://{settings.s3_bucket}/{settings.s3_prefix}" + "/".join(parts)


def join(root: str, *parts: str) -> str:
    """A path under a root that is an S3 URL or a local folder alike."""
    return "/".join([root.rstrip("/"), *parts])


def tables_root(settings: Settings) -> str:
    """Where a run's tables live: ``s3://bucket/prefix/tables``."""
    return url(settings, TABLES)


def blob(sha256: str) -> str:
    return f"{BLOBS}/sha256/{sha256[:2]}/{sha256}"


def pack(contract: str, block: str, name: str) -> str:
    return f"{pack_prefix(contract, block)}{name}.pack"


def pack_prefix(contract: str, block: str) -> str:
    """Where a block's packs live (ends with ``/``)."""
    return f"{PACKS}/{contract}/{block}/"


def blob_ref(pack_key: str, offset: int, length: int) -> str:
    """The reference of ``length`` bytes at ``offset`` inside the pack ``pack_key``."""
    return f"{pack_key}{_REF_SEPARATOR}{offset}+{length}"


def parse_blob_ref(ref: str) -> tuple[str, int, int] | None:
    """(pack key, offset, length) of a reference into a pack; None for a plain key."""
    key, sep, span = ref.rpartition(_REF_SEPARATOR)
    if not sep:
        return None
    offset, plus, length = span.partition("+")
    if not (plus and offset.isdigit() and length.isdigit()):
        raise ValueError(f"malformed blob reference {ref[:200]!r}")
    return key, int(offset), int(length)


def manifest(contract: str, block: str) -> str:
    return f"{MANIFESTS}/{contract}/{block}.parquet"


def manifest_parts(contract: str, block: str) -> str:
    """The prefix of a running block's checkpoint parts (ends with ``/``)."""
    return f"{MANIFESTS}/{contract}/_parts/{block}/"


def is_manifest(key: str) -> bool:
    """A finished block's manifest (not a checkpoint part)."""
    return key.endswith(".parquet") and "/_parts/" not in key


def tokens_file(manifest_key: str) -> str:
    """The tokens file of a manifest block: same contract, same block name."""
    contract, name = manifest_key.rsplit("/", 2)[-2:]
    return f"{TOKENS}/{contract}/{name}"


def tokens_glob(tables: str) -> str:
    """Every tokens file under a tables root."""
    return join(tables, "tokens", "*", "*.parquet")


def dashboard(contract: str) -> str:
    """A collection's dashboard, relative to a tables root."""
    return f"{DASHBOARDS}/{contract}.json"


def export(format: str, split: str | None = None) -> str:
    """An export (``exports/<format>``) or one of its splits."""
    return "/".join([EXPORTS, format, *([split] if split else [])])


def mask_file(contract: str) -> str:
    """A collection's masks, relative to ``masks/``."""
    return f"{contract}.npz"


def mask_report(contract: str) -> str:
    """How a collection's masks were made, relative to ``masks/``."""
    return f"{contract}.json"


def run_folder(name: str, run_id: str) -> str:
    """One training run's folder."""
    return f"{MODELS}/{name}/{run_id}"


def latest(name: str | None = None) -> str:
    """The pointer to the last finished run (of ``name``, or of any), relative to models/."""
    return f"{name}/{LATEST}" if name else LATEST


def embeddings(run_id: str) -> str:
    """One nft1000/cvi run's embeddings folder."""
    return f"{EMBEDDINGS}/{run_id}"


def embeddings_model(run_id: str) -> str:
    """Which model and data an embeddings folder holds (JSON)."""
    return f"{embeddings(run_id)}/model.json"


def retrieval_results(result_id: str) -> str:
    return f"{TABLES}/{RETRIEVAL_RESULTS}/{result_id}.parquet"


def cvi_results(run_id: str) -> str:
    return f"{TABLES}/{CVI_RESULTS}/{run_id}.parquet"


def report(kind: str, name: str) -> str:
    """``reports/<kind>/<name>`` (kind: retrieval or cvi)."""
    return f"{REPORTS}/{kind}/{name}"


def slug(*parts: str) -> str:
    """Parts joined by dashes, lowercase letters, digits and dashes only: safe as one key
    part and as a Prefect artifact key."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() and c.isascii() else "-" for c in text).strip("-")
