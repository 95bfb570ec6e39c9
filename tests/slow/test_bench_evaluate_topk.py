"""bench.evaluate_topk, run as a user runs it: its blocked ranks agree with the dense baseline."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_bench_prints_agreeing_ranks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.evaluate_topk", "--pairs", "3000", "--collections", "3",
         "--dim", "64", "--pooled-pairs", "2000", "--query-block", "300",
         "--candidate-block", "700", "--repeats", "1"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    for pool in ("within", "pooled"):
        assert report[pool]["baseline"]["name"] == "dense_torch"
        # Ours and dense differ by float rounding at near-ties only: rarely, and by little.
        assert report[pool]["ranks_differing"] <= report[pool]["queries"] // 100
        assert report[pool]["max_rank_difference"] <= 2
        assert report[pool]["ours"]["queries_per_s"] > 0
    assert report["device"] == "cpu" or report["device"].startswith("cuda")
