"""The sandboxed SVG rasteriser: a child process that renders one request at a time.

Started by ``tasks/export/svg_sandbox.py`` as ``python -I svg_worker.py MEMORY CPU``.
It limits its own address space (RLIMIT_AS) before loading resvg, and before each
render gives itself CPU seconds for that render only (RLIMIT_CPU past what it has
used). A crash, abort or overrun ends this process; the parent sees the signal.

Protocol on stdin/stdout, big-endian: the worker first writes READY once resvg
is loaded (the parent's time limits then cover rendering, not starting). A
request is ``width height length`` (three uint32; 0 for a side resvg derives
from the other) and ``length`` bytes of UTF-8 SVG; a reply is a status byte (0
PNG, 1 refused by resvg, 2 out of memory), a uint32 length and that many bytes
(the PNG, or a message). Imports nothing from the project, so it runs isolated (``-I``).
"""

from __future__ import annotations

import resource
import struct
import sys
from typing import BinaryIO

REQUEST = struct.Struct(">III")
REPLY = struct.Struct(">BI")
OK, REFUSED, OUT_OF_MEMORY = 0, 1, 2
READY = b"R"


def main() -> None:
    memory, cpu_s = int(sys.argv[1]), int(sys.argv[2])
    memory = _lowered(resource.RLIMIT_AS, memory)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    import resvg_py  # after the memory limit: its allocations count against it

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(READY)
    stdout.flush()
    while True:
        header = _read(stdin, REQUEST.size)
        if header is None:
            return  # the parent closed the pipe or exited
        width, height, length = REQUEST.unpack(header)
        body = _read(stdin, length)
        if body is None:
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime) + 1
        resource.setrlimit(
            resource.RLIMIT_CPU, (_lowered(resource.RLIMIT_CPU, spent + cpu_s), cpu_hard)
        )
        try:
            png = bytes(
                resvg_py.svg_to_bytes(
                    svg_string=body.decode("utf-8"),
                    width=width or None,
                    height=height or None,
                    dpi=96.0,  # absolute units (mm, in, pt) as the checker reads them
                    # resvg's default fonts are absent on Debian: text would not render.
                    font_family="DejaVu Sans",
                    serif_family="DejaVu Serif",
                    sans_serif_family="DejaVu Sans",
                    monospace_family="DejaVu Sans Mono",
                )
            )
            reply = REPLY.pack(OK, len(png)) + png
        except MemoryError:
            reply = REPLY.pack(OUT_OF_MEMORY, 0)
        except (ValueError, RuntimeError, OverflowError) as e:
            message = str(e)[:200].encode("utf-8", "replace")
            reply = REPLY.pack(REFUSED, len(message)) + message
        stdout.write(reply)
        stdout.flush()
        if reply[0] == OUT_OF_MEMORY:
            return  # its heap may be in any state: the parent starts a fresh one


def _lowered(limit: int, value: int) -> int:
    """``value``, or the limit's hard value where that is lower (it cannot be raised)."""
    _, hard = resource.getrlimit(limit)
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


if __name__ == "__main__":
    main()
