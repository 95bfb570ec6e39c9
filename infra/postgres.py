"""PostgreSQL for the local Prefect server: one cluster in the stack's state folder.

``NFT1000_PREFECT_DB=postgres`` puts the stack's Prefect server on this cluster
instead of SQLite. It is Debian's PostgreSQL (``apt-get install postgresql``), run
by hand like the other services: ``initdb`` once into ``<home>/postgres/data``,
then ``postgres`` started and stopped by PID through ``infra.process``. It listens
on 127.0.0.1 only (password auth) and on a unix socket in ``<home>/postgres/socket``
(trust, but that folder is open to the server's OS user alone).

PostgreSQL refuses to run as root. Run as root, the cluster belongs to the
unprivileged OS account ``nft1000-postgres``, created on first use (``useradd
--system``, no home, no login shell; an existing one is reused). That account
must be able to pass through every folder above the stack's home; a home under
``/root`` or a private temporary folder is refused with a message saying so.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from infra.process import ServiceError, ServiceSpec, as_user

HOST = "127.0.0.1"
OS_USER = "nft1000-postgres"  # the server's OS account when the stack runs as root
# Fixed local values, not secrets: the server answers on loopback only.
DB_USER = "nft1000"
DB_PASSWORD = "nft1000-local"
DB_NAME = "prefect"
DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
INSTALL_HINT = (
    "PostgreSQL's server programs (postgres, initdb) were not found on PATH or in "
    f"{DEBIAN_BINDIRS}/<version>/bin: install them (Debian/Ubuntu: `apt-get install "
    "postgresql`), or leave NFT1000_PREFECT_DB unset for SQLite"
)


@dataclass(frozen=True)
class Cluster:
    """Where one stack's cluster keeps its files, and the port it listens on."""

    root: Path  # <home>/postgres: the data and socket folders
    state_dir: Path  # PID and log files, beside the other services'
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def url(self) -> str:
        """What the Prefect server is given as PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"postgresql+asyncpg://{DB_USER}:{DB_PASSWORD}@{HOST}:{self.port}/{DB_NAME}"


def find_bindir(search: Path = DEBIAN_BINDIRS) -> Path | None:
    """The folder of ``postgres`` and ``initdb``: PATH's, else Debian's newest version."""
    on_path = shutil.which("postgres")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "initdb").exists():
            return folder
    versions = [p for p in search.glob("*/bin") if (p / "postgres").exists()]
    versions.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    return versions[-1] if versions else None


def require_bindir(search: Path = DEBIAN_BINDIRS) -> Path:
    """find_bindir, or ServiceError saying how to install PostgreSQL."""
    found = find_bindir(search)
    if found is None:
        raise ServiceError(INSTALL_HINT)
    return found


def server_user() -> str | None:
    """The OS account the server runs as: ours, unless we are root (then OS_USER)."""
    return OS_USER if os.geteuid() == 0 else None


def ensure_os_user(name: str = OS_USER) -> None:
    """Create the unprivileged system account ``name`` unless it exists (idempotent)."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        pwd.getpwnam(name)  # made now, or meanwhile by a concurrent call (useradd exit 9)
    except KeyError:
        raise ServiceError(f"could not create the OS user {name}: {done.stderr.strip()}") from None


def _as(user: str | None, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **as_user(user))


def _prepare_folders(cluster: Cluster, user: str | None) -> None:
    """The cluster's folders, owned by the server's account, which must reach them."""
    for folder in (cluster.root, cluster.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        if user is not None:
            account = pwd.getpwnam(user)
            os.chown(folder, account.pw_uid, account.pw_gid)
    reach = _as(user, ["/bin/sh", "-c", 'cd -- "$1" && test -w .', "sh", str(cluster.root)])
    if reach.returncode != 0:
        raise ServiceError(
            f"postgres runs as the OS user {user}, which cannot reach {cluster.root}: a "
            "folder above it is closed to other users (as /root or a private temporary "
            "folder are). Give the stack a home that others may pass through (--home), "
            "or leave NFT1000_PREFECT_DB unset for SQLite."
        )


def ensure_cluster(cluster: Cluster, bindir: Path) -> None:
    """Create the cluster once (initdb); a cluster already there is kept as it is."""
    user = server_user()
    if user is not None:
        ensure_os_user(user)
    _prepare_folders(cluster, user)
    if (cluster.data_dir / "PG_VERSION").exists():
        return
    pwfile = cluster.root / "initdb.password"
    pwfile.write_text(DB_PASSWORD + "\n")
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    try:
        done = _as(
            user,
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(cluster.data_dir),
                "--username",
                DB_USER,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",  # the socket folder is the server account's alone
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                # Not fsynced now (2 s less on 2 cores): the OS writes the files back
                # soon, and the server syncs from its first checkpoint on.
                "--no-sync",
            ],
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServiceError(f"initdb failed for {cluster.data_dir}:\n{done.stdout}{done.stderr}")


async def _create_database(port: int) -> None:
    conn = await asyncpg.connect(
        host=HOST, port=port, user=DB_USER, password=DB_PASSWORD, database="postgres", timeout=2
    )
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME):
            await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await conn.close()


def _database_ready(port: int) -> bool:
    """Readiness: the server takes a password login and the Prefect database exists
    (created here on the first start)."""
    try:
        asyncio.run(_create_database(port))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


def postgres_spec(cluster: Cluster) -> ServiceSpec:
    """The server on 127.0.0.1 and its socket folder; SIGINT is its fast shutdown.

    Building the spec needs no PostgreSQL (``down`` stops by PID); ``ensure_cluster``
    runs first on ``up`` and says how to install it when it is missing.
    """
    bindir = find_bindir()
    program = str(bindir / "postgres") if bindir is not None else "postgres"
    settings = {
        "listen_addresses": HOST,
        "port": cluster.port,
        "unix_socket_directories": cluster.socket_dir,
    }
    return ServiceSpec(
        name="postgres",
        argv=[
            program,
            "-D",
            str(cluster.data_dir),
            *(arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")),
        ],
        state_dir=cluster.state_dir,
        ready_port=cluster.port,
        ready_check=lambda: _database_ready(cluster.port),
        stop_signal=signal.SIGINT,
        user=server_user(),
    )
