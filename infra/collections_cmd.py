"""``nft1000 collections [TEXT] [--split S]``: the collections a name can mean.

Searches every registry a collection name is looked up in (NFT1000_REGISTRIES
first, the built-in NFT1000 registry last; the first that knows a name wins) and
shows each collection's contract, total supply, the split nft1000/tables gives it
and its registry. It reads local files only, so it needs no running service; when
`nft1000 stack up` ran in the home, the stack's demo registry counts too, as it
does for the pipeline.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

from infra import stack
from tasks.core.settings import Settings, load_settings
from tasks.ingest.registry import BUILTIN_REGISTRY, load_registry, read_registry, registry_files
from tasks.tables.splits import SHARES, load_split_rules, published_split, split_for

SHOWN = 20  # rows printed unless --limit says otherwise
COLUMNS = ("name", "address", "supply", "split", "registry")


@dataclass(frozen=True)
class Row:
    name: str
    address: str
    supply: int | None
    split: str
    published: bool  # False: not in NFT1000's split, so hashed from the name
    registry: str
    shadowed: bool  # an earlier registry knows the name, so this entry is never used

    def cells(self) -> tuple[str, ...]:
        supply = "?" if self.supply is None else str(self.supply)
        registry = f"{self.registry} (shadowed)" if self.shadowed else self.registry
        split = self.split if self.published else f"{self.split}*"
        return (self.name, self.address, supply, split, registry)


def configure(parser: argparse.ArgumentParser) -> None:
    """The search's own arguments (the CLI adds --home, whose demo registry counts)."""
    parser.add_argument(
        "text", nargs="?", default="", help="part of a name or address, any case (default: all)"
    )
    parser.add_argument("--split", choices=[split for split, _ in SHARES], help="only this split")
    parser.add_argument("--limit", type=int, default=SHOWN, help="rows shown (0: all)")


def run(args: argparse.Namespace) -> int:
    try:
        rows = collection_rows(load_settings(stack.pipeline_env(args.home)))
    except (OSError, ValueError) as e:
        print(f"cannot read the registries: {e}", file=sys.stderr)
        return 1
    text = args.text.strip().casefold()
    found = [r for r in rows if _matches(r, text) and args.split in (None, r.split)]
    if not found:
        hint = "nft1000/ingest also takes any contract address (0x...)"
        print(f"no collection{_criteria(args)}; {hint}", file=sys.stderr)
        return 1
    shown = found[: args.limit] if args.limit > 0 else found
    _print_table([COLUMNS, *(r.cells() for r in shown)])
    for line in _footer(found, shown, len(rows), args):
        print(line)
    return 0


def collection_rows(settings: Settings) -> list[Row]:
    """Every registry entry, by name, with the split nft1000/tables would give it."""
    paths = registry_files(settings.registries)
    rules = load_split_rules(settings.partitioning, settings.registries)
    winners = load_registry(paths)
    keyed: list[tuple[str, int, Row]] = []
    for index, path in enumerate(paths):
        label = "built-in" if path == BUILTIN_REGISTRY else str(path)
        for entry in read_registry(path):
            row = Row(
                entry.name,
                entry.address,
                entry.total_supply,
                split_for(entry.name, rules),
                published_split(entry.name, rules) is not None,
                label,
                winners.get(entry.name.lower()) != (entry.name, entry.address),
            )
            keyed.append((entry.name.casefold(), index, row))
    return [row for _, _, row in sorted(keyed, key=lambda k: k[:2])]


def _matches(row: Row, text: str) -> bool:
    return text in row.name.casefold() or text in row.address


def _criteria(args: argparse.Namespace) -> str:
    """What was asked for, in words; empty when everything was."""
    text = f" matching {args.text.strip()!r}" if args.text.strip() else ""
    return text + (f" in {args.split}" if args.split else "")


def _print_table(lines: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _footer(found: list[Row], shown: list[Row], total: int, args: argparse.Namespace) -> list[str]:
    """How many matched and per split, and what the marks in the table mean."""
    counts = Counter(r.split for r in found)
    per_split = ", ".join(f"{split} {counts[split]}" for split, _ in SHARES if counts[split])
    criteria = _criteria(args)
    head = f"{total} collections"
    if criteria:
        head = f"{len(found)} of {head}{criteria}"
    lines = [f"{head} ({per_split})"]
    if len(shown) < len(found):
        lines.append(f"showing the first {len(shown)}: search for more, or --limit 0 for all")
    if not all(r.published for r in shown):
        lines.append("*: not in NFT1000's split; nft1000/tables hashes a split from the name")
    if any(r.shadowed for r in shown):
        lines.append("(shadowed): an earlier registry knows this name, so that one is used")
    return lines
