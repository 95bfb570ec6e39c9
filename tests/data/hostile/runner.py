"""Run categories of hostile cases in child processes that may crash, hang or bloat.

The parent watches one child at a time (``child``): it reads the child's JSON
lines, kills its process group with SIGKILL when a case runs past its hang limit
or the child's resident set passes ``hard_memory_mb``, and when the child dies
(SIGSEGV, SIGABRT, a kill) records the case it was on and starts a new child at
the next case. So every case gets a verdict and the run always finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
HARD_MEMORY_MB = 2048.0  # a child over this is killed: the case "exhausts" the machine
POLL_S = 0.05


@dataclass(frozen=True)
class CaseResult:
    category: str
    name: str
    status: str  # held, failed, crash, hang, memory
    outcome: str  # ok, error:<kind>, raised:<type>, violation, signal:<n>, killed
    why: str
    seconds: float
    memory_mb: float

    @property
    def held(self) -> bool:
        return self.status == "held"


@dataclass
class _Current:
    category: str
    index: int
    name: str
    deadline: float
    started: float


def run_groups(
    groups: Sequence[Sequence[str]],
    *,
    hard_memory_mb: float = HARD_MEMORY_MB,
    time_scale: float = 1.0,
) -> list[CaseResult]:
    """``run_categories`` of each group at once, one child per group, results in order.

    Categories that mostly wait on deadlines (HTTP, JSON-RPC) overlap with those
    that compute, so the corpus takes about as long as its slowest group.
    """
    with ThreadPoolExecutor(len(groups)) as pool:
        runs = pool.map(
            lambda g: run_categories(g, hard_memory_mb=hard_memory_mb, time_scale=time_scale),
            groups,
        )
        return [result for run in runs for result in run]


def run_categories(
    categories: Sequence[str],
    *,
    hard_memory_mb: float = HARD_MEMORY_MB,
    time_scale: float = 1.0,
) -> list[CaseResult]:
    """Every case of these categories, each with its verdict, in order.

    ``time_scale`` multiplies every case's time bound (and so its hang limit):
    bench.hostile holds the stated bounds, a shared test machine gets slack.
    """
    results: list[CaseResult] = []
    plan = [(c, 0) for c in categories]
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        while plan:
            plan = _one_child(plan, {"scratch": scratch, "time_scale": time_scale},
                              hard_memory_mb, results)  # fmt: skip
    return results


def _one_child(
    plan: list[tuple[str, int]],
    options: dict[str, Any],
    hard_memory_mb: float,
    results: list[CaseResult],
) -> list[tuple[str, int]]:
    """Run a child over ``plan`` until it finishes or dies; what is left to run."""
    spec = json.dumps({"plan": plan, **options})
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.data.hostile.child", spec],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own group: a kill reaches a sandbox it started
        )
        assert proc.stdout is not None
        counts: dict[str, int] = {}
        current: _Current | None = None
        killed: tuple[str, str] | None = None  # (status, why)
        buffer = b""
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        eof = False
        while not eof:
            if selector.select(POLL_S):
                chunk = os.read(proc.stdout.fileno(), 65536)
                eof = not chunk
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    if event["event"] == "category":
                        counts[event["category"]] = event["cases"]
                    elif event["event"] == "start":
                        now = time.monotonic()
                        current = _Current(
                            event["category"], event["index"], event["name"],
                            now + event["hang_s"], now,
                        )  # fmt: skip
                    elif event["event"] == "end":
                        results.append(_ended(event))
                        current = None
            if current is not None and not eof:
                if time.monotonic() > current.deadline:
                    killed = (
                        "hang",
                        f"no verdict after {current.deadline - current.started:.0f} s",
                    )
                elif (rss := _rss_mb(proc.pid)) > hard_memory_mb:
                    killed = ("memory", f"child resident set {rss:.0f} MiB > {hard_memory_mb:.0f}")
                if killed is not None:
                    _kill_group(proc)
                    eof = True
        if killed is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        _kill_group(proc)  # also any process the child left behind
        code = proc.wait()
        stderr.seek(0)
        tail = stderr.read()[-600:].decode("utf-8", "replace")
    selector.close()
    proc.stdout.close()
    if code == 0 and current is None:
        return []
    if current is None:
        # Died between cases (startup, or generating a category's cases): no case to
        # blame, so stop instead of restarting forever.
        raise RuntimeError(f"hostile child exited {code} outside any case: {tail}")
    status, why = killed or ("crash", f"child died with {_signal_name(code)}: {tail[-300:]}")
    outcome = "killed" if killed else f"signal:{-code}" if code < 0 else f"exit:{code}"
    seconds = time.monotonic() - current.started
    results.append(CaseResult(current.category, current.name, status, outcome, why, seconds, 0.0))
    return _rest(plan, (current.category, current.index + 1), counts)


def _ended(event: dict[str, Any]) -> CaseResult:
    return CaseResult(
        event["category"],
        event["name"],
        "held" if event["held"] else "failed",
        event["outcome"],
        event["why"],
        event["seconds"],
        event["memory_mb"],
    )


def _rest(
    plan: list[tuple[str, int]], next_case: tuple[str, int], counts: dict[str, int]
) -> list[tuple[str, int]]:
    """The plan from ``next_case`` on: the rest of its category, then later categories."""
    names = [c for c, _ in plan]
    category, index = next_case
    later = [(c, 0) for c in names[names.index(category) + 1 :]]
    if index < counts.get(category, 0):
        return [(category, index), *later]
    return later


def _rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    return int(match[1]) / 1024 if match else 0.0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's own process group (it and any sandbox it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Counts per category and in total, and every case that did not hold."""

    def counts(rows: Sequence[CaseResult]) -> dict[str, Any]:
        return {
            "cases": len(rows),
            "held": sum(r.held for r in rows),
            "failed": sum(r.status == "failed" for r in rows),
            "crashes": sum(r.status == "crash" for r in rows),
            "hangs": sum(r.status == "hang" for r in rows),
            "memory_kills": sum(r.status == "memory" for r in rows),
            "peak_memory_mb": max((r.memory_mb for r in rows), default=0.0),
            "seconds": round(sum(r.seconds for r in rows), 2),
        }

    categories = list(dict.fromkeys(r.category for r in results))
    return {
        "categories": {c: counts([r for r in results if r.category == c]) for c in categories},
        "total": counts(results),
        "did_not_hold": [
            {k: v for k, v in asdict(r).items() if k not in ("memory_mb",)}
            | {"memory_mb": r.memory_mb}
            for r in results
            if not r.held
        ],
    }
