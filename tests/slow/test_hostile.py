"""The hostile corpus (tests/data/hostile): every tested case holds.

The categories run in child processes (a crash or hang costs one case, not this
test run), two groups side by side; each category is then its own test, failing
with the cases that did not hold. The whole corpus, the tables category complete,
is ``python -m bench.hostile``. The runner's own handling of crashes, aborts and
hangs is checked too.
"""

from __future__ import annotations

import pytest

from tests.data.hostile.catalog import TESTED
from tests.data.hostile.runner import CaseResult, run_categories, run_groups

CATEGORIES = [category for group in TESTED for category in group]
# Two children share CI's two cores with whatever else runs: CPU-heavy cases (deep
# JSON, the tables build) ran up to 10% past their bounds at load 10. Hangs are
# still caught (10 s and more); bench.hostile holds the stated bounds.
TIME_SCALE = 2.0


@pytest.fixture(scope="module")
def results() -> list[CaseResult]:
    return run_groups(TESTED, time_scale=TIME_SCALE)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_case_holds(results: list[CaseResult], category: str) -> None:
    mine = [r for r in results if r.category == category]
    assert len(mine) >= (3 if category == "tables_core" else 40)
    missed = [f"{r.name}: {r.status} {r.outcome} {r.why[:160]}" for r in mine if not r.held]
    assert missed == []


def test_the_runner_survives_crashes_and_hangs() -> None:
    found = {r.name: r for r in run_categories(["selftest"])}
    assert {name: r.status for name, r in found.items()} == {
        "holds": "held",
        "segfault": "crash",
        "wrong kind": "failed",
        "abort": "crash",
        "too slow": "failed",
        "hang": "hang",
        "ok result": "held",
    }
    assert found["segfault"].outcome == "signal:11"
    assert found["abort"].outcome == "signal:6"
