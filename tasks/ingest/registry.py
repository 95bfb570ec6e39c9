"""Which contract a collection name means, and how a user names collections.

A collection is named by its NFT1000 registry name (``Moonbirds``) or by its
contract address, optionally with an inclusive token id range:
``Moonbirds``, ``Moonbirds:0-99``, ``0x2358...a68b:1-500``. Registries are JSON
files in the shape of NFT1000's ``collections.json``; the first that knows a
name wins, so a local registry can shadow mainnet addresses for the demo. The
NFT1000 registry is built in (``registry_data/``, made by infra/build_registry.py)
and consulted last, so NFT1000's names resolve with no settings at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.ingest.chain import ADDRESS, CollectionFacts

_RANGE = re.compile(r"(?P<first>\d+)-(?P<last>\d+)")
# Facts only (name, address, supply, split) from NFT1000's own files; see its SOURCE note.
BUILTIN_REGISTRY = Path(__file__).resolve().parent / "registry_data" / "nft1000.json"


@dataclass(frozen=True)
class CollectionTarget:
    name: str  # registry name, or the address when named by address
    address: str  # lowercase 0x address
    ids: tuple[int, int] | None  # explicit (first, end-exclusive), else discovered on chain


@dataclass(frozen=True)
class RegistryEntry:
    name: str  # the registry's key
    project_name: str  # the entry's own project_name, else the key
    address: str  # lowercase 0x address
    total_supply: int | None


def registry_files(extra: Sequence[Path]) -> tuple[Path, ...]:
    """Where names are looked up: the user's registries first, the built-in one last."""
    return (*extra, BUILTIN_REGISTRY)


def read_registry(path: Path) -> list[RegistryEntry]:
    """The collections of one registry file that have a valid contract address."""
    data = json.loads(Path(path).read_text())
    entries = []
    for key, entry in data.get("collections", {}).items():
        address = str(entry.get("contract_address", ""))
        if not ADDRESS.fullmatch(address):
            continue
        supply = entry.get("total_supply")
        entries.append(
            RegistryEntry(
                key,
                str(entry.get("project_name") or key),
                address.lower(),
                supply if isinstance(supply, int) else None,
            )
        )
    return entries


def load_registry(paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    """Lowercased name -> (name, address), earlier files taking precedence."""
    known: dict[str, tuple[str, str]] = {}
    for path in paths:
        for entry in read_registry(path):
            for name in {entry.name, entry.project_name}:
                known.setdefault(name.lower(), (entry.name, entry.address))
    return known


def parse_target(spec: str, registry: dict[str, tuple[str, str]]) -> CollectionTarget:
    """Turn one user-written collection spec into a target; ValueError says what is wrong."""
    text = spec.strip()
    ids: tuple[int, int] | None = None
    head, sep, tail = text.rpartition(":")
    if sep and _RANGE.fullmatch(tail.strip()):
        match = _RANGE.fullmatch(tail.strip())
        assert match is not None
        first, last = int(match["first"]), int(match["last"])
        if last < first:
            raise ValueError(f"{spec!r}: range {first}-{last} ends before it starts")
        ids, text = (first, last + 1), head.strip()
    if ADDRESS.fullmatch(text):
        return CollectionTarget(text.lower(), text.lower(), ids)
    found = registry.get(text.lower())
    if found is None:
        raise ValueError(
            f"unknown collection {text!r}: give a contract address (0x...) or a collection "
            "name (`nft1000 collections TEXT` searches them: NFT1000's and those of the "
            "registries in NFT1000_REGISTRIES)"
        )
    name, address = found
    return CollectionTarget(name, address, ids)


MAX_NAME_CHARS = 100


def collection_name(target: CollectionTarget, facts: CollectionFacts) -> str:
    """The registry name, else the contract's own name() (clipped: the contract chose
    it), else the address."""
    if target.name != target.address:
        return target.name
    chosen = " ".join((facts.name or "").split())[:MAX_NAME_CHARS]
    # Printable only: no terminal escapes, bidi overrides or lone surrogates.
    return "".join(c for c in chosen if c.isprintable()) or target.address
