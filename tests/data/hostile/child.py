"""Run cases of some categories in this process, one JSON line per event on stdout.

Started by ``runner`` as ``python -m tests.data.hostile.child SPEC`` (SPEC: a JSON
list of ``[category, first case index]`` and the scratch folder). Everything else
the code under test prints goes to stderr, so stdout carries only the protocol.
Memory per case: the peak resident set of this process during the case over its
size before it (Linux: VmHWM reset through /proc/self/clear_refs), or the peak of a
finished child process (a sandboxed renderer) if larger.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import resource
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from tasks.core.errors import ItemError
from tests.data.hostile.case import Case, Env, Violation
from tests.data.hostile.catalog import cases_of
from tests.data.hostile.servers import RawServer


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints, Python's or C's, go to stderr
    origin, sentinel = RawServer().start(), RawServer().start()
    env = Env(origin, sentinel, Path(spec["scratch"]))
    scale = float(spec["time_scale"])
    for category, start in spec["plan"]:
        cases = cases_of(category)
        gc.collect()
        gc.freeze()  # imports and generated cases stay put: per-case collections are cheap
        _emit(proto, event="category", category=category, cases=len(cases))
        for index in range(start, len(cases)):
            case = cases[index]
            if scale != 1.0:
                case = replace(case, time_s=case.time_s * scale, hang_after_s=case.hang_s * scale)
            _run(proto, env, category, index, case)
    _emit(proto, event="done")
    origin.stop()
    sentinel.stop()
    return 0


def _run(proto: IO[str], env: Env, category: str, index: int, case: Case) -> None:
    where = {"category": category, "index": index, "name": case.name}
    try:
        data = case.make() if case.make is not None else None
    except Exception as e:  # a broken generator is this case's failure, not the run's
        why = f"making the input raised {type(e).__name__}: {str(e)[:200]}"
        _emit(proto, event="start", hang_s=case.hang_s, **where)
        _emit(proto, event="end", outcome="make failed", held=False, why=why, seconds=0.0,
              memory_mb=0.0, **where)  # fmt: skip
        return
    gc.collect()
    before = _rss_kib()
    own_reset = _reset_peak()
    kids_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    _emit(proto, event="start", hang_s=case.hang_s, **where)  # the hang clock starts here
    started = time.perf_counter()
    outcome, held, why = _outcome(case, env, data)
    seconds = time.perf_counter() - started
    peak = _peak_kib() if own_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    memory_mb = max(peak - before, kids if kids > kids_before else 0) / 1024
    if held and seconds > case.time_s:
        held, why = False, f"took {seconds:.2f} s, over {case.time_s} s"
    if held and memory_mb > case.memory_mb:
        held, why = False, f"used {memory_mb:.0f} MiB, over {case.memory_mb} MiB"
    del data
    _emit(
        proto,
        event="end",
        outcome=outcome,
        held=held,
        why=why,
        seconds=round(seconds, 3),
        memory_mb=round(memory_mb, 1),
        **where,
    )


def _outcome(case: Case, env: Env, data: Any) -> tuple[str, bool, str]:
    """(what happened, whether it holds, why not)."""
    try:
        result = case.run(env, data)
    except ItemError as e:
        outcome = f"error:{e.kind}"
        if e.kind in case.kinds:
            return outcome, True, ""
        return outcome, False, f"{e.kind} is not one of {sorted(case.kinds)}: {e.message[:200]}"
    except Violation as e:
        return "violation", False, str(e)[:300]
    except Exception as e:  # RecursionError and MemoryError included
        where = traceback.extract_tb(e.__traceback__)[-1]
        at = f"{Path(where.filename).name}:{where.lineno}"
        return f"raised:{type(e).__name__}", False, f"{type(e).__name__} at {at}: {str(e)[:200]}"
    finally:
        _drop_loop()
    if case.check is None:
        return "ok", False, f"returned a result; expected one of {sorted(case.kinds)}"
    problem = case.check(result)
    return "ok", problem is None, problem or ""


def _drop_loop() -> None:
    """A case that left an event loop set (asyncio.run does not) must not leak it."""
    asyncio.set_event_loop(None)


def _emit(proto: IO[str], **fields: Any) -> None:
    proto.write(json.dumps(fields) + "\n")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
    return int(match[1]) if match else 0


def _rss_kib() -> int:
    return _status_kib("VmRSS")


def _peak_kib() -> int:
    return _status_kib("VmHWM")


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS; False where Linux does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
