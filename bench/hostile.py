"""Run the whole hostile corpus and print a JSON summary.

``python -m bench.hostile [CATEGORY ...]``: every case of every category (or those
named) in child processes (tests/data/hostile/runner.py), then per category and in
total: cases, held, failed, crashes, hangs, memory kills, peak memory and seconds,
and each case that did not hold with what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from tests.data.hostile.catalog import CORPUS, MODULES
from tests.data.hostile.runner import HARD_MEMORY_MB, run_categories, summarize

MEMORY_NOTE = (
    "peak_memory_mb: per case, the child's peak resident set during the case over its size "
    "before it (VmHWM reset through /proc/self/clear_refs), or a sandbox child's peak if larger; "
    f"a child over {HARD_MEMORY_MB:.0f} MiB is killed and its case counted as a memory kill"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("categories", nargs="*", help=f"any of {', '.join(MODULES)}")
    args = parser.parse_args()
    unknown = set(args.categories) - set(MODULES)
    if unknown:
        parser.error(f"unknown categories: {sorted(unknown)}")
    categories = tuple(args.categories) or CORPUS
    started = time.monotonic()
    summary = summarize(run_categories(categories))
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    summary["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    summary["memory"] = MEMORY_NOTE
    print(json.dumps(summary, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
