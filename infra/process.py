"""Start a long-running service as a child process, wait until it answers, stop it by PID.

Every local service (S3, Prefect, Dask, anvil, the demo gateway) goes through
here, so each has a PID file and a log file under one state folder, and tests
and the CLI stop exactly the processes they started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A service failed to start or to answer in time."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Sequence[str]
    state_dir: Path  # PID and log files go here
    env: Mapping[str, str] = field(default_factory=dict)  # set on top of the caller's
    unset: frozenset[str] = frozenset()  # the caller's variables it must not inherit
    cwd: Path | None = None
    ready_url: str | None = None  # answered with any HTTP status < 500 means ready
    ready_port: int | None = None  # accepting TCP connections means ready
    ready_check: Callable[[], bool] | None = None
    timeout_s: float = 60.0
    stop_signal: int = signal.SIGTERM
    user: str | None = None  # run as this OS user (needs root): for servers that refuse root

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def url_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except (OSError, ValueError):
        return False


def _is_ready(spec: ServiceSpec) -> bool:
    if spec.ready_port is not None and not port_open(spec.ready_port):
        return False
    if spec.ready_url is not None and not url_answers(spec.ready_url):
        return False
    return spec.ready_check is None or spec.ready_check()


def read_pid(pid_file: Path) -> int | None:
    """The PID in a PID file if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def start(spec: ServiceSpec) -> int:
    """Start the service unless its PID file names a live process; wait until ready."""
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    pid = read_pid(spec.pid_file)
    if pid is not None:
        if not _wait_ready(spec, None):
            raise ServiceError(f"{spec.name} (pid {pid}) is running but not answering")
        return pid
    env = {k: v for k, v in os.environ.items() if k not in spec.unset} | dict(spec.env)
    with open(spec.log_file, "ab") as log:
        proc = subprocess.Popen(
            list(spec.argv),
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
            **as_user(spec.user),
        )
    spec.pid_file.write_text(str(proc.pid))
    if not _wait_ready(spec, proc):
        stop(spec)
        tail = spec.log_file.read_text(errors="replace")[-2000:]
        raise ServiceError(f"{spec.name} did not become ready in {spec.timeout_s}s:\n{tail}")
    return proc.pid


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as ``user``, with its own group and none of ours."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _wait_ready(spec: ServiceSpec, proc: subprocess.Popen[bytes] | None) -> bool:
    deadline = time.monotonic() + spec.timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if _is_ready(spec):
            return True
        time.sleep(0.2)
    return False


def stop(spec: ServiceSpec, timeout_s: float = 20.0) -> bool:
    """Stop the process group named by the PID file; SIGKILL after timeout_s. True if it ran."""
    pid = read_pid(spec.pid_file)
    spec.pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, spec.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    """True while the process runs (a zombie awaiting its reaper counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that exited but was not yet reaped by its parent (not ours to wait for)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


@contextlib.contextmanager
def running(spec: ServiceSpec) -> Iterator[int]:
    """Start a service for the duration of a block (tests), then stop it by PID."""
    pid = start(spec)
    try:
        yield pid
    finally:
        stop(spec)
