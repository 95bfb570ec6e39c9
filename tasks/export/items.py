"""What an export writes per token, read from the tables (``sql/export/items.sql``).

Both export formats (the NFT1000 folder layout and WebDataset shards) take the
same items; only tokens whose image was stored are exported, and unrevealed
placeholders only when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import duckdb

from tasks.core.sql import sql_text

# Characters kept in folder and file names; NFT1000's own names use only these.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class ExportItem:
    collection: str
    contract: str
    token_id: str
    split: str
    in_mini: bool
    metadata_key: str
    image_key: str
    image_mime: str
    caption: str  # the preferred caption (tables: captions.preferred)
    prompt: str  # the preferred prompt
    folder: str  # the collection's folder name in exports (safe_names)
    caption_method: str = ""  # captions.method of the caption
    # The (trait_type, value) pairs the caption names, in its order: visual_template
    # captions only, what dynamic masking may hide; empty for other methods.
    traits: tuple[tuple[str, str], ...] = ()


def safe_names(collections: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A file-system and WebDataset safe folder name per (collection, contract).

    Names are attacker-controlled (contracts name themselves): anything outside
    ``[A-Za-z0-9_-]`` becomes ``_``, so names cannot climb folders or hold the
    dots WebDataset splits keys on. Two collections that end up with one name
    get their contract's first hex digits appended, so none is merged.
    """
    base = {
        pair: _UNSAFE.sub("_", pair[0]).strip("_")[:100] or "collection" for pair in collections
    }
    taken: dict[str, int] = {}
    for name in base.values():
        taken[name] = taken.get(name, 0) + 1
    return {
        pair: name if taken[name] == 1 else f"{name}-{pair[1].removeprefix('0x')[:8]}"
        for pair, name in base.items()
    }


SPLITS = ("train", "validation", "test")
# Where every collection is a training collection (the demo), a token-level held-out
# set: ``holdout`` tokens per collection drawn out of its train split.
HOLDOUT = "holdout"


def export_items(
    con: duckdb.DuckDBPyConnection,
    tables: str,
    *,
    splits: Sequence[str] = SPLITS,
    mini_only: bool = False,
    shuffled: bool = False,
    seed: int = 0,
    holdout: int = 0,
    include_unrevealed: bool = False,
    batch: int = 10_000,
) -> Iterator[ExportItem]:
    """Stream the items of an export from the tables under ``tables`` (S3 URL or folder).

    ``holdout`` tokens of each collection's train split (a seeded draw) come as split
    ``holdout`` instead: ask for that split to get them. Unrevealed placeholders (one
    image standing for many tokens, ``splits.unrevealed``) are left out unless
    ``include_unrevealed``.
    """
    unknown = set(splits) - {*SPLITS, HOLDOUT}
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}: use {', '.join((*SPLITS, HOLDOUT))}")
    if holdout < 0:
        raise ValueError(f"holdout must be >= 0, not {holdout}")
    try:
        pairs = con.execute(
            "SELECT DISTINCT collection, contract FROM read_parquet(? || '/tokens/*/*.parquet')",
            [tables],
        ).fetchall()
    except duckdb.IOException as e:
        raise ValueError(f"no tables under {tables}: run nft1000/tables first ({e})") from e
    folders = safe_names(sorted((str(c), str(a)) for c, a in pairs))
    for name, value in {
        "tables": tables,
        "splits": list(splits),
        "mini_only": mini_only,
        "shuffled": shuffled,
        "seed": str(seed),
        "holdout": holdout,
        "include_unrevealed": include_unrevealed,
    }.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])
    try:
        cursor = con.execute(sql_text("export/items"))
    except duckdb.BinderException as e:  # splits.parquet without its unrevealed column
        raise ValueError(f"tables under {tables} are older than this export: rerun "
                         f"nft1000/tables ({e})") from e  # fmt: skip
    while rows := cursor.fetchmany(batch):
        for (
            collection,
            contract,
            token_id,
            split,
            in_mini,
            metadata_key,
            image_key,
            mime,
            caption,
            prompt,
            caption_method,
            traits,
        ) in rows:
            yield ExportItem(
                collection,
                contract,
                token_id,
                split,
                in_mini,
                metadata_key,
                image_key,
                mime,
                caption,
                prompt,
                folder=folders[(collection, contract)],
                caption_method=caption_method,
                traits=tuple((str(t), str(v)) for t, v in traits),
            )
