"""Train/validation/test splits by collection, and the seeded "mini" subset.

NFT1000 splits by collection so no collection is seen in two splits; its
collections keep their published split, any other collection gets one from a
stable hash of its name. The published split ships in the built-in registry
(infra/build_registry.py resolves its quirks with load_partitioning, once);
``NFT1000_PARTITIONING`` names another split file to use instead. The mini
subset (at most 1,000 tokens per collection) is drawn in DuckDB
(``sql/tables/splits.sql``) so it scales to millions of tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import duckdb

from tasks.core.sql import sql_text
from tasks.ingest.registry import BUILTIN_REGISTRY, registry_files
from tasks.tables.normalise import bounded_normalize

Split = Literal["train", "validation", "test"]

# Published shares of the 1000 NFT1000 collections, reused for hashed splits.
SHARES: tuple[tuple[Split, int], ...] = (("train", 800), ("validation", 50), ("test", 150))
LISTS: tuple[tuple[str, Split], ...] = (
    ("training_list", "train"),
    ("validation_list", "validation"),
    ("test_list", "test"),
)
# Split-file spellings that no normalisation can match to the registry name.
ALIASES = {"Etherbananas": "Etherbanullas"}
# Listed in the split but absent from the published counts of docs/method.md section 1.
OUTSIDE_PUBLISHED_COUNTS = {"BanaCat": "train 800 collections / 6,178,249 pairs"}
# Characters of a name that _key reads: registry names and addresses are far shorter.
MAX_KEY_CHARS = 1024


@dataclass(frozen=True)
class Partitioning:
    splits: Mapping[str, Split]  # registry name -> split
    # _key() of each registry name, split spelling and contract address -> registry name
    aliases: Mapping[str, str]
    notes: tuple[str, ...]  # one line per quirk found, and how it was handled


def _key(name: str) -> str:
    """Case-, width- and whitespace-blind form, to match names that differ only so; of the
    first MAX_KEY_CHARS characters only, so a hostile name costs no more than that."""
    return "".join(bounded_normalize("NFKC", name, MAX_KEY_CHARS).casefold().split())


def _resolve(
    name: str, registry: Mapping[str, object], by_key: Mapping[str, list[str]]
) -> tuple[str, str | None]:
    """Registry name for a split name, with a note when it was not an exact match."""
    if name in registry:
        return name, None
    near = by_key.get(_key(name), [])
    if len(near) == 1:
        return near[0], f"{name!r} matched registry name {near[0]!r} ignoring case and spaces"
    alias = ALIASES.get(name)
    if alias is not None and alias in registry:
        return alias, f"{name!r} is not in the registry; mapped to its spelling there, {alias!r}"
    raise ValueError(f"split name {name!r} is not in the registry and has no known alias")


def _names_by_key(collections: Mapping[str, object]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for name in collections:
        by_key.setdefault(_key(name), []).append(name)
    return by_key


def registry_aliases(collections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """_key() of each unambiguous registry name and of each contract address -> registry name."""
    by_key = _names_by_key(collections)
    aliases = {key: names[0] for key, names in by_key.items() if len(names) == 1}
    for name, entry in collections.items():
        if entry.get("contract_address"):
            aliases[_key(entry["contract_address"])] = name
    return aliases


def load_partitioning(partitioning: Path, registry: Path) -> Partitioning:
    """The published split keyed by registry name; ValueError where the files cannot agree."""
    lists = json.loads(partitioning.read_text())
    reg_data = json.loads(registry.read_text())
    collections: dict[str, dict[str, Any]] = reg_data["collections"]
    by_key = _names_by_key(collections)
    aliases = registry_aliases(collections)

    notes: list[str] = []
    total = reg_data.get("total")
    if total is not None and total != len(collections):
        notes.append(
            f"registry header says total {total} but lists {len(collections)} collections; "
            "the listed ones are used"
        )
    embedded = reg_data.get("data_partitioning")
    if embedded is not None and embedded != lists:
        notes.append(
            f"{registry.name}'s data_partitioning differs from {partitioning.name}; "
            f"{partitioning.name} is used"
        )

    splits: dict[str, Split] = {}
    for list_name, split in LISTS:
        for name in lists[list_name]:
            resolved, note = _resolve(name, collections, by_key)
            if note is not None:
                notes.append(f"{list_name}: {note}")
                aliases[_key(name)] = resolved
            if splits.get(resolved) == split:
                notes.append(f"{list_name}: {name!r} is listed twice; the duplicate was dropped")
                continue
            if resolved in splits:
                raise ValueError(f"{resolved!r} is in both {splits[resolved]} and {split}")
            splits[resolved] = split
            if resolved in OUTSIDE_PUBLISHED_COUNTS:
                pairs = collections[resolved].get("actual_collected_quantity")
                counted = f" ({pairs:,} pairs)" if isinstance(pairs, int) else ""
                notes.append(
                    f"{list_name}: {resolved!r}{counted} is not in the published "
                    f"{OUTSIDE_PUBLISHED_COUNTS[resolved]}; kept in {split} as listed"
                )
    notes.extend(
        f"registry name {name!r} is in no split; it gets a hashed split"
        for name in collections
        if name not in splits
    )
    return Partitioning(MappingProxyType(splits), MappingProxyType(aliases), tuple(notes))


def registry_partitioning(registry: Path) -> Partitioning:
    """The split a generated registry carries (infra/build_registry.py): each collection's
    ``split``, the split file's spellings in ``aliases`` and the quirks' ``notes``, as
    load_partitioning found them in NFT1000's own files."""
    data = json.loads(registry.read_text())
    collections: dict[str, dict[str, Any]] = data["collections"]
    known = {split for split, _ in SHARES}
    splits: dict[str, Split] = {}
    for name, entry in collections.items():
        split = entry.get("split")
        if split is None:
            continue
        if split not in known:
            raise ValueError(f"{registry.name}: {name!r} has split {split!r}, not one of {known}")
        splits[name] = split
    aliases = {**registry_aliases(collections), **data.get("aliases", {})}
    notes = tuple(str(note) for note in data.get("notes", ()))
    return Partitioning(MappingProxyType(splits), MappingProxyType(aliases), notes)


def load_split_rules(partitioning: Path | None, registries: tuple[Path, ...]) -> Partitioning:
    """NFT1000's published split, from the built-in registry unless a partitioning file is
    configured; that file's names are resolved through the first registry (the built-in
    one when NFT1000_REGISTRIES is empty)."""
    if partitioning is None:
        return registry_partitioning(BUILTIN_REGISTRY)
    return load_partitioning(partitioning, registry_files(registries)[0])


def hashed_split(name: str) -> Split:
    """A split from sha256 of the name: the same on every machine, run and Python process."""
    total = sum(share for _, share in SHARES)
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % total
    for split, share in SHARES[:-1]:
        if bucket < share:
            return split
        bucket -= share
    return SHARES[-1][0]


def _registry_name(name: str, partitioning: Partitioning) -> str:
    """An NFT1000 collection is also found by its split spelling, its contract address
    or its name in other case or spacing, so it never leaks into a hashed split."""
    if name in partitioning.splits:
        return name
    return partitioning.aliases.get(_key(name), name)


def published_split(name: str, partitioning: Partitioning) -> Split | None:
    """NFT1000's split of a collection; None when it is not in the split."""
    return partitioning.splits.get(_registry_name(name, partitioning))


def split_for(name: str, partitioning: Partitioning) -> Split:
    """Published split for NFT1000 collections, else hashed."""
    registry_name = _registry_name(name, partitioning)
    found = partitioning.splits.get(registry_name)
    return found if found is not None else hashed_split(registry_name)


def register_collection_splits(con: duckdb.DuckDBPyConnection, partitioning: Partitioning) -> None:
    """Create ``collection_splits`` for the collections present in ``tokens``."""
    names = sorted(row[0] for row in con.table("tokens").unique("collection").fetchall())
    con.execute(
        sql_text("tables/split_collections"),
        {"collections": names, "splits": [split_for(n, partitioning) for n in names]},
    )


def build_splits(con: duckdb.DuckDBPyConnection, seed: int, per_collection: int = 1000) -> None:
    """Create ``splits(collection, contract, token_id, split, in_mini, unrevealed)`` from
    ``tokens`` and ``collection_splits``; the same seed always picks the same mini subset,
    which never holds an unrevealed placeholder."""
    if per_collection < 0:
        raise ValueError(f"per_collection must be >= 0, not {per_collection}")
    con.execute(
        sql_text("tables/splits"),
        {"seed": str(seed), "per_collection": per_collection},
    )
