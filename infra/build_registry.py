"""Make the built-in NFT1000 registry (tasks/ingest/registry_data) from NFT1000's files.

    python -m infra.build_registry PATH/collections.json PATH/partitioning.json [--output FILE]

It keeps facts only: each collection's name, contract address, total supply and
split, with the split's quirks resolved by tasks.tables.splits.load_partitioning (the code
nft1000/tables ran on the two files before the registry was built in) and its notes
on them. Descriptions, URLs, checksums and every other text of the files stay out.
One collection per line, sorted, so a new NFT1000 release reads as a small diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.ingest.chain import ADDRESS
from tasks.ingest.registry import BUILTIN_REGISTRY
from tasks.tables.splits import load_partitioning, registry_aliases

SOURCE = (
    "Facts from NFT1000's collections.json and partitioning.json (the NFT1000 authors' "
    "public hub repository; Wang et al., ACM Multimedia 2024, arXiv:2402.16872), made by "
    "infra/build_registry.py; see nft1000.SOURCE.txt"
)


def build(collections: Path, partitioning: Path) -> dict[str, Any]:
    """The registry document: source, notes, the split file's extra spellings, collections."""
    rules = load_partitioning(partitioning, collections)
    listed: dict[str, dict[str, Any]] = json.loads(collections.read_text())["collections"]
    facts = {name: _facts(name, listed[name], rules.splits.get(name)) for name in sorted(listed)}
    derived = registry_aliases(listed)  # what a reader derives again from the collections
    return {
        "source": SOURCE,
        "notes": list(rules.notes),
        "aliases": {k: v for k, v in sorted(rules.aliases.items()) if derived.get(k) != v},
        "collections": facts,
    }


def _facts(name: str, entry: dict[str, Any], split: str | None) -> dict[str, Any]:
    address, supply = str(entry.get("contract_address", "")), entry.get("total_supply")
    if not ADDRESS.fullmatch(address):
        raise ValueError(f"{name!r}: contract_address {address!r} is not a 0x address")
    if not isinstance(supply, int) or isinstance(supply, bool):
        raise ValueError(f"{name!r}: total_supply {supply!r} is not an integer")
    return {"contract_address": address.lower(), "total_supply": supply, "split": split}


def render(document: dict[str, Any]) -> str:
    """JSON with one note and one collection per line (ASCII only: any locale reads it)."""
    notes = [json.dumps(note) for note in document["notes"]]
    rows = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in document["collections"].items()]
    return (
        "{\n"
        f'  "source": {json.dumps(document["source"])},\n'
        f'  "notes": {_block(notes, "[]")},\n'
        f'  "aliases": {json.dumps(document["aliases"])},\n'
        f'  "collections": {_block(rows, "{}")}\n'
        "}\n"
    )


def _block(items: list[str], brackets: str) -> str:
    if not items:
        return brackets
    return brackets[0] + "\n" + ",\n".join(f"    {item}" for item in items) + "\n  " + brackets[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.build_registry", description=__doc__)
    parser.add_argument("collections", type=Path, help="NFT1000's collections.json")
    parser.add_argument("partitioning", type=Path, help="NFT1000's partitioning.json")
    parser.add_argument("--output", type=Path, default=BUILTIN_REGISTRY)
    args = parser.parse_args(argv)
    document = build(args.collections, args.partitioning)
    args.output.write_text(render(document))
    collections, notes = len(document["collections"]), len(document["notes"])
    print(f"{collections} collections and {notes} notes written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
