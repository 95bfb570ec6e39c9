"""CPU seconds that whole process trees use: running services by role, and one command.

A process's own CPU (user + system) plus that of the children it reaped
(``children_user`` + ``children_system``: Linux adds a child's total to its
parent's when the parent waits for it) counts every process once: a child still
running is in the tree by itself, one that ended is in its parent's figures.
The sum over a process and its live descendants therefore grows by exactly the
CPU its tree used, so a service's cost over a run is that sum after the run
minus before (`snapshot`, `spent`).

A descendant orphaned before it ends (a double fork, multiprocessing's resource
tracker) is reparented away and would be lost to that sum. A command run through
`run_measured` is not: it runs under a child subreaper (Linux's
``PR_SET_CHILD_SUBREAPER``), this module run as a script, which reaps every
descendant, orphaned or not, and reports ``getrusage(RUSAGE_CHILDREN)``: the whole
tree's CPU, the subreaper's own excluded.

    python -m bench.cpu_tree --log FILE -- COMMAND [ARGS...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
ORPHAN_GRACE_S = 10.0  # how long orphans may outlive the command before they are killed


def process_cpu_seconds(proc: psutil.Process) -> float:
    """The process's CPU plus that of the children it reaped, user and system."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def tree_cpu_seconds(pid: int) -> float:
    """CPU used so far by the process and its descendants (see the module docstring)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        # One that ended meanwhile is in its parent's figures now, or in the next snapshot.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process_cpu_seconds(proc)
    return total


def snapshot(roles: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each role's process tree (role -> root PID)."""
    return {role: tree_cpu_seconds(pid) for role, pid in roles.items()}


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each role used between two snapshots."""
    return {role: after[role] - before.get(role, 0.0) for role in after}


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far, anyone's work."""
    t = psutil.cpu_times()  # Linux's guest time is inside user already; steal is not ours
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


@dataclass(frozen=True)
class MeasuredRun:
    returncode: int
    cpu_seconds: float  # the command's whole process tree
    wall_seconds: float


def run_measured(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, timeout_s: float
) -> MeasuredRun:
    """Run a command under the subreaper, its output to `log`; its tree's CPU and wall time."""
    wrapper = [sys.executable, "-m", "bench.cpu_tree", "--log", str(log), "--", *argv]
    started = time.perf_counter()
    with subprocess.Popen(
        wrapper,
        stdout=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,  # one process group: stopped as a whole on timeout
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the subreaper failed ({proc.returncode}); see {log}")
    report = json.loads(out.strip().splitlines()[-1])
    return MeasuredRun(int(report["returncode"]), float(report["cpu_seconds"]), wall)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _reap_all(grace_s: float) -> None:
    """Wait for every descendant left (orphans are ours now); kill those past the grace."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # none left
        if pid:
            continue
        if time.monotonic() > deadline:
            for child in psutil.Process().children():
                child.kill()
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a command; print its tree's CPU.")
    parser.add_argument("--log", type=Path, required=True, help="the command's output")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    _become_subreaper()
    with args.log.open("ab") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        returncode = child.wait()
    _reap_all(ORPHAN_GRACE_S)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {"returncode": returncode, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
