"""How every bench measures: wall and CPU seconds, and peak resident memory (RSS).

A ``Meter`` starts when it is made:

- ``seconds()``: wall time since then (``time.perf_counter``); ``lap()``: wall time
  since the previous lap (or the start), for a run in steps;
- ``cpu_seconds()``: this process's CPU time since then, user and system, all
  threads; ``children_cpu_seconds()``: that of child processes that ended and
  were waited for since then;
- ``peak_rss_mib()``: this process's resident-set high-water mark, in MiB: Linux's
  ``VmHWM`` from ``/proc/self/status``, the figure ``getrusage``'s ``ru_maxrss``
  gives. It covers the whole life of the process, unless the meter was made with
  ``reset_peak=True``: then the mark is first reset to the current RSS (``5`` into
  ``/proc/self/clear_refs``), so that a forked child, which starts with its
  parent's pages resident, measures its own work; ``start_rss_mib`` says where it
  began. ``children_peak_rss_mib()``: the largest peak of any child waited for.

So a bench measures a step's peak memory in a fresh process (a subprocess that
prints its own ``peak_rss_mib``, or a forked child with ``reset_peak=True``), never
by differences within one long-lived process. Off Linux, ``getrusage`` stands in
for the peak, and neither a reset nor ``start_rss_mib`` is available.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class Meter:
    """Wall time, CPU time and peak RSS since it was made (see the module docstring)."""

    def __init__(self, reset_peak: bool = False) -> None:
        if reset_peak:
            _CLEAR_REFS.write_text("5")  # Linux: the high-water mark becomes the current RSS
        start = _status_kib("VmRSS")
        self.start_rss_mib: float | None = None if start is None else _mib(start)
        self._started = self._lapped = time.perf_counter()
        self._cpu = time.process_time()
        self._children_cpu = _children_cpu()

    def seconds(self) -> float:
        """Wall seconds since the meter was made."""
        return time.perf_counter() - self._started

    def lap(self) -> float:
        """Wall seconds since the previous lap, or since the meter was made."""
        now = time.perf_counter()
        seconds, self._lapped = now - self._lapped, now
        return seconds

    def cpu_seconds(self) -> float:
        """CPU seconds (user and system, every thread) of this process since it was made."""
        return time.process_time() - self._cpu

    def children_cpu_seconds(self) -> float:
        """CPU seconds of the child processes that ended and were waited for since then."""
        return _children_cpu() - self._children_cpu

    def peak_rss_mib(self) -> float:
        """This process's peak RSS in MiB: since the reset, or in its whole life."""
        peak = _status_kib("VmHWM")
        return _mib(peak if peak is not None else _rusage_peak_kib(resource.RUSAGE_SELF))

    def children_peak_rss_mib(self) -> float:
        """The largest peak RSS, in MiB, of any child process waited for so far."""
        return _mib(_rusage_peak_kib(resource.RUSAGE_CHILDREN))


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (the file's "kB"); None off Linux."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {_STATUS}")


def _rusage_peak_kib(who: int) -> int:
    peak = resource.getrusage(who).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)
