"""Which processes listen on a TCP port, read from /proc (Linux), for tests that check
that a stopped stack left nothing behind: a port a stack freed may be taken at once by
any other program on the machine, which is not the stack's fault."""

from __future__ import annotations

import os
from pathlib import Path

LISTEN = "0A"  # the TCP state column of /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listeners(port: int) -> dict[int, str]:
    """pid -> command line and environment (NUL-separated, as text) of every process with
    a listening socket on ``port``; processes that end while being read are skipped."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found: dict[int, str] = {}
    if not inodes:
        return found
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
            if links & inodes:
                about = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
                found[int(proc.name)] = about.decode(errors="replace")
        except OSError:
            continue
    return found
