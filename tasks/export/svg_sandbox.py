"""Rasterise SVG only in child processes with memory, CPU and wall-clock limits.

resvg is native code given attacker-controlled documents: even a checked one
(``tasks/core/svg_check.py``) may crash it, exhaust memory or run long. Each
render goes to a child (``tasks/export/svg_worker.py``) limited to MEMORY_LIMIT
bytes of address space and CPU_LIMIT_S CPU seconds per render, and the parent
kills it after WALL_LIMIT_S seconds. A child that dies costs its one item an
``ItemError`` (``render_crashed`` or ``render_timeout``, naming the signal or the
limit) and is replaced; nothing propagates into the export. Children are reused
between items (starting one costs about 50 ms), one per thread rendering at once,
so threads never wait for each other. The parent does not trust the reply either:
it is size-capped and must be a PNG of the asked size.
"""

from __future__ import annotations

import atexit
import io
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from tasks.core.errors import ItemError
from tasks.export.svg_worker import OK, OUT_OF_MEMORY, READY, REFUSED, REPLY, REQUEST

MEMORY_LIMIT = 1024**3  # address space of a child: 1 GiB (Loot needs under 100 MB)
CPU_LIMIT_S = 5  # CPU seconds per render (Loot: about 10 ms)
WALL_LIMIT_S = 15.0  # per render, including time waiting for a CPU on a busy machine
START_LIMIT_S = 30.0  # for a child to load resvg, outside the per-render limits
MAX_REPLY_BYTES = 32 * 1024 * 1024  # a PNG of the largest raster asked for is under this
_WORKER = Path(__file__).with_name("svg_worker.py")
_STDERR_TAIL = 300  # bytes of a dead child's stderr quoted in its item's message


class SvgSandbox:
    """A pool of sandboxed renderers, safe to share between threads."""

    def __init__(
        self,
        memory_limit: int = MEMORY_LIMIT,
        cpu_limit_s: int = CPU_LIMIT_S,
        wall_limit_s: float = WALL_LIMIT_S,
        max_idle: int | None = None,
    ) -> None:
        self.memory_limit = memory_limit
        self.cpu_limit_s = cpu_limit_s
        self.wall_limit_s = wall_limit_s
        self._max_idle = max_idle or os.cpu_count() or 1
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def render(self, text: str, width: int, height: int) -> bytes:
        """PNG bytes of the SVG at ``width`` x ``height`` pixels, or the item's ItemError.

        resvg is given the shorter side and derives the other from the canvas;
        the reply must match the asked size within a pixel of rounding.
        """
        body = text.encode("utf-8")
        request = REQUEST.pack(width if width <= height else 0, height if height < width else 0,
                               len(body)) + body  # fmt: skip
        child = self._acquire()
        try:
            png = child.exchange(request, self.wall_limit_s)
        finally:
            self._release(child)
        return _checked_png(png, width, height)

    def close(self) -> None:
        """Stop the idle children (a render in progress keeps its own)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for child in idle:
            child.stop()

    def _acquire(self) -> _Child:
        with self._lock:
            if self._pid != os.getpid():  # forked: those children belong to the parent
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return _Child(self.memory_limit, self.cpu_limit_s)

    def _release(self, child: _Child) -> None:
        with self._lock:
            if child.alive() and len(self._idle) < self._max_idle:
                self._idle.append(child)
                return
        child.stop()


_default: SvgSandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> SvgSandbox:
    """The process-wide sandbox, started on first use and stopped at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SvgSandbox()
            atexit.register(_default.close)
        return _default


class _Child:
    """One worker process and its pipes; ``exchange`` turns every failure into an ItemError."""

    def __init__(self, memory_limit: int, cpu_limit_s: int) -> None:
        self.memory_limit = memory_limit
        self.cpu_limit_s = cpu_limit_s
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER), str(memory_limit), str(cpu_limit_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,
            close_fds=True,
            env={**os.environ, "RUST_BACKTRACE": "0"},  # a failed allocation's one line
        )
        self.usable = True
        self.started = False

    def alive(self) -> bool:
        return self.usable and self.proc.poll() is None

    def exchange(self, request: bytes, wall_limit_s: float) -> bytes:
        if not self.started:
            self._start()
        deadline = time.monotonic() + wall_limit_s
        try:
            assert self.proc.stdin is not None
            view = memoryview(request)
            while view:
                view = view[self.proc.stdin.write(view) or 0 :]
            header = self._read(REPLY.size, deadline)
            if header is None:
                raise self._died()
            status, length = REPLY.unpack(header)
            if length > MAX_REPLY_BYTES:
                raise self._fail("render_crashed", f"renderer replied with {length:,} bytes")
            body = self._read(length, deadline) if length else b""
            if body is None:
                raise self._died()
        except TimeoutError:
            raise self._fail(
                "render_timeout", f"renderer ran past its {wall_limit_s:g} s wall-clock limit"
            ) from None
        except (BrokenPipeError, ConnectionResetError):
            raise self._died() from None
        if status == OK:
            return body
        if status == REFUSED:
            raise ItemError("bad_svg", f"SVG cannot be rendered: {body.decode('utf-8', 'replace')}")
        if status == OUT_OF_MEMORY:
            raise self._fail("render_crashed", f"renderer ran out of its {self._memory()} limit")
        raise self._fail("render_crashed", f"renderer replied with unknown status {status}")

    def _start(self) -> None:
        """Wait until the child has loaded resvg: its limits then time rendering alone."""
        try:
            ready = self._read(len(READY), time.monotonic() + START_LIMIT_S)
        except TimeoutError:
            raise self._fail("render_crashed", "renderer did not start") from None
        if ready is None:
            raise self._died()
        if ready != READY:
            raise self._fail("render_crashed", "renderer started with a malformed greeting")
        self.started = True

    def _read(self, size: int, deadline: float) -> bytes | None:
        """``size`` bytes of the reply; None at end of file; TimeoutError past the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        got = 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _died(self) -> ItemError:
        """Why the child ended, from its exit status and the end of its stderr."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return self._fail("render_crashed", "renderer closed its output and hung")
        self.usable = False
        detail = self._stderr_tail()
        if code == -signal.SIGXCPU:
            return ItemError(
                "render_timeout", f"renderer ran past its {self.cpu_limit_s} s CPU limit (SIGXCPU)"
            )
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            why = f"renderer was killed by {name}"
            if "memory allocation" in detail:
                why += f" after an allocation over its {self._memory()} limit failed"
            elif code == -signal.SIGSEGV:
                why += " (a crash, such as a stack overflow)"
        else:
            why = f"renderer exited with status {code}"
        return ItemError("render_crashed", f"{why}: {detail}" if detail else why)

    def _fail(self, kind: str, message: str) -> ItemError:
        self.stop()
        return ItemError(kind, message)

    def _memory(self) -> str:
        return f"{self.memory_limit / 1024**2:g} MiB memory"

    def _stderr_tail(self) -> str:
        self.stderr.seek(0, io.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - _STDERR_TAIL))
        tail = self.stderr.read().decode("utf-8", "replace")
        return " ".join(tail.split())

    def stop(self) -> None:
        self.usable = False
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            if stream is not None:
                stream.close()


def _checked_png(png: bytes, width: int, height: int) -> bytes:
    """The reply, if it is a PNG of the asked size (the derived side may round either way)."""
    try:
        with Image.open(io.BytesIO(png), formats=("PNG",)) as im:
            got = im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise ItemError("render_crashed", "renderer replied with something not a PNG") from e
    if abs(got[0] - width) > 1 or abs(got[1] - height) > 1 or min(got) < min(width, height):
        raise ItemError(
            "bad_svg", f"renderer made {got[0]}x{got[1]} pixels, not the {width}x{height} asked"
        )
    return png
