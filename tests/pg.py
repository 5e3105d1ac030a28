"""A throwaway PostgreSQL cluster, for the tests (tests/conftest.py) and the benchmarks.

``pg_cluster()`` runs ``initdb`` in a new temp folder, starts ``postgres`` on a free loopback
port (127.0.0.1 only; its unix socket in the same folder), with durability off for speed
(``fsync``, ``synchronous_commit``, ``full_page_writes``), and password authentication only,
with a password made for this cluster. Leaving the ``with`` block, however it is left (an
error, Ctrl-C), stops the server and deletes the folder.

``initdb`` refuses to run as root, so as root the server runs as the system user
``robofy-pg`` (created when missing). The server is our child process, not ``pg_ctl``'s: it is
started with a parent-death signal, so even a test process that is killed outright (SIGKILL)
takes its server with it; no ``postgres`` outlives the process that started it. Start the
cluster from a thread that lives as long as the cluster (the signal follows the thread).

    with pg_cluster() as cluster:
        url = cluster.create_database("robofy")   # a sqlalchemy.URL, postgresql+psycopg://
        engine = sqlalchemy.create_engine(url)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

PG_USER = "robofy-pg"  # the system user the server runs as when we are root
SUPERUSER = "robofy"  # the cluster's superuser role
BIN_ENV = "ROBOFY_TEST_PG_BIN"  # a folder holding initdb and postgres, to pick a version
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
PORT_ATTEMPTS = 5  # a free port can be taken between finding it and binding it: try another
PREFIX = "robofy-pg-"  # the temp folder of each cluster: <tmp>/robofy-pg-XXXX
OWNER_FILE = "owner.pid"  # the process that made the folder

_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "128MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


class PgUnavailableError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True)
class PgCluster:
    """A running throwaway cluster: where it listens and how to log in."""

    host: str
    port: int
    user: str
    password: str
    root: Path
    bin_dir: Path
    version: str
    started_in_s: float
    pid: int

    def url(self, database: str = "postgres", driver: str = "psycopg") -> sqlalchemy.URL:
        """A SQLAlchemy URL of one database; ``driver="psycopg2"`` for dagster-postgres.

        ``str()`` of it hides the password; ``url.render_as_string(hide_password=False)``
        gives the full URL (for an environment variable).
        """
        return sqlalchemy.URL.create(
            f"postgresql+{driver}",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        )

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Runs one statement in autocommit (CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            autocommit=True,
        ) as conn:
            cursor = conn.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str) -> sqlalchemy.URL:
        """Creates an empty database (from template0: a file copy, milliseconds)."""
        self.execute(f'create database "{_identifier(name)}" template template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops a database, ending any session still connected to it."""
        self.execute(f'drop database if exists "{_identifier(name)}" with (force)')


def find_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: $ROBOFY_TEST_PG_BIN, PATH, or the newest
    /usr/lib/postgresql/<version>/bin (Debian and Ubuntu keep them off PATH)."""
    if os.environ.get(BIN_ENV):
        folder = Path(os.environ[BIN_ENV])
        return folder if (folder / "initdb").exists() else None
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


@contextlib.contextmanager
def pg_cluster(bin_dir: Path | None = None) -> Iterator[PgCluster]:
    """Creates, starts, yields, then stops and deletes a throwaway cluster.

    Raises:
        PgUnavailableError: no server binaries (install Debian's ``postgresql`` package).
    """
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise PgUnavailableError(
            "no PostgreSQL server binaries (initdb, postgres) found on PATH, in "
            f"/usr/lib/postgresql/*/bin or in ${BIN_ENV}: install them "
            "(apt-get install postgresql) to run the PostgreSQL tests"
        )
    started = time.monotonic()
    account = _server_account()
    _sweep_orphans()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    process: subprocess.Popen[bytes] | None = None
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        password = secrets.token_urlsafe(24)
        version = _initdb(bin_dir, root, password, account)
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            process = _start(bin_dir, root, port, account)
            if _wait_ready(process, root, port, password):
                break
            _stop(process)
            if attempt == PORT_ATTEMPTS - 1 or not _port_taken(root):
                raise RuntimeError(f"postgres did not start: {_log_tail(root)}")
        assert process is not None
        yield PgCluster(
            host="127.0.0.1",
            port=port,
            user=SUPERUSER,
            password=password,
            root=root,
            bin_dir=bin_dir,
            version=version,
            started_in_s=time.monotonic() - started,
            pid=process.pid,
        )
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _sweep_orphans() -> None:
    """Deletes the folders of clusters whose owner died without cleaning up (SIGKILL: its
    server died with it, but nothing deleted the folder)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being made right now
        if not pid_alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: ours, or robofy-pg when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER)


def _as(account: pwd.struct_passwd | None) -> dict[str, object]:
    """Popen arguments that run a command as ``account`` (what ``runuser -u`` does, without
    PAM or an extra process between us and the server)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _initdb(bin_dir: Path, root: Path, password: str, account: pwd.struct_passwd | None) -> str:
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if account is not None:
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    try:
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(root / "data"),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=root,
            **_as(account),
        )
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")
    conf = root / "data" / "postgresql.conf"
    with conf.open("a") as out:
        out.write("\n# robofy-etl test cluster: loopback only, durability off for speed\n")
        out.write(f"unix_socket_directories = '{root}'\n")
        for name, value in _SETTINGS.items():
            out.write(f"{name} = {value}\n")
    return (root / "data" / "PG_VERSION").read_text().strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGQUIT (immediate shutdown) when our process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGQUIT)


def _start(
    bin_dir: Path, root: Path, port: int, account: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    log = (root / "postgres.log").open("ab")
    try:
        return subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            # Ctrl-C in a terminal reaches our process only: our cleanup stops the server.
            start_new_session=True,
            preexec_fn=_die_with_parent,  # see _die_with_parent
            **_as(account),
        )
    finally:
        log.close()


def _wait_ready(process: subprocess.Popen[bytes], root: Path, port: int, password: str) -> bool:
    """True once the server accepts a login; False if it exited (e.g. the port was taken)."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=port,
                user=SUPERUSER,
                password=password,
                dbname="postgres",
                connect_timeout=2,
            ):
                return True
        except psycopg.OperationalError:
            time.sleep(0.02)
    raise RuntimeError(f"postgres not ready after {START_TIMEOUT_S:g} s: {_log_tail(root)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: sessions end, no waiting for clients), then harder."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)


def _port_taken(root: Path) -> bool:
    return "could not bind" in _log_tail(root) or "Address already in use" in _log_tail(root)


def _log_tail(root: Path, lines: int = 20) -> str:
    try:
        text = (root / "postgres.log").read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain lowercase database name: {name!r}")
    return name
