"""bench/tables: build the dataset tables for 1,000,000 synthetic tokens; print JSON.

Tokens are composed from the HashLips layers in real metadata shapes
(tests/data/synthetic.py) and go through the pipeline's own tokens step. Then, each
in a fresh process so peak memory is its own: our DuckDB build of every table
(tasks/tables/build.py), the same build on a quarter of the tokens (memory must not
grow with the count), and the named baseline "pandas" (bench/pandas_captions.py),
a plain pandas build of the captions alone. The comparison is captions against
captions: ours is the CLIP counting and captions steps of the full build.

    python -m bench.tables [--tokens N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import pandas_captions
from bench.measure import Meter
from tasks.core.duck import connect
from tasks.core.folders import LocalFolder
from tasks.tables.build import build_tables
from tasks.tables.splits import load_split_rules
from tests.data import synthetic

MEMORY_LIMIT = "1GB"  # DuckDB spills past this, so memory need not grow with tokens


def build(tokens: Path, out: Path) -> dict[str, Any]:
    """Our full build in this process: step times and peak RSS."""
    meter = Meter()
    con = connect(memory_limit=MEMORY_LIMIT)
    con.execute(f"SET temp_directory = '{out / 'spill'}'")
    result = build_tables(
        con, f"{tokens}/*/*.parquet", LocalFolder(out), load_split_rules(None, ())
    )
    seconds = meter.seconds()
    return {
        "tokens": result.tokens,
        "rows": result.rows,
        "seconds": round(seconds, 2),
        "steps": result.seconds,
        # The caption build proper: counting CLIP tokens (words step) and the captions.
        "caption_seconds": round(result.seconds["words"] + result.seconds["captions"], 2),
        "peak_rss_mib": meter.peak_rss_mib(),
    }


def _write_block(col: synthetic.SyntheticCollection, number: int, root: Path) -> int:
    return synthetic.write_tokens([col.block(number)], root)


def _write_tokens(cols: list[synthetic.SyntheticCollection], root: Path) -> int:
    """The tokens step on every core, a block per task, as Dask workers run it."""
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        jobs = [pool.submit(_write_block, c, n, root) for c in cols for n in c.block_numbers]
        return sum(job.result() for job in jobs)


def _in_process(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, *args], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--build", nargs=2, type=Path, metavar=("TOKENS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(*args.build)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cols = synthetic.collections(args.tokens, args.seed)
        meter = Meter()
        count = _write_tokens(cols, root / "tokens")
        tokens_seconds = meter.seconds()
        _write_tokens(synthetic.collections(args.tokens // 4, args.seed), root / "quarter")

        ours = _in_process("-m", "bench.tables", "--build", str(root / "tokens"), str(root / "out"))
        small = _in_process("-m", "bench.tables", "--build", str(root / "quarter"), str(root / "q"))
        baseline = _in_process(
            *pandas_captions.command(root / "tokens", root / "pandas.parquet")[1:]
        )
    pandas_seconds = baseline["build_seconds"] + baseline["read_seconds"]
    print(
        json.dumps(
            {
                "benchmark": "tables",
                "tokens": count,
                "collections": len(cols),
                "tokens_step": {
                    "seconds": round(tokens_seconds, 2),
                    "tokens_per_s": round(count / tokens_seconds),
                    "processes": os.cpu_count(),
                },
                "duckdb": ours,
                "duckdb_quarter": small,
                "baseline": {"name": "pandas", **baseline},
                "caption_speedup_vs_pandas": round(pandas_seconds / ours["caption_seconds"], 1),
                "memory_ratio_full_vs_quarter": round(
                    ours["peak_rss_mib"] / small["peak_rss_mib"], 2
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
