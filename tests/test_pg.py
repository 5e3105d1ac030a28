"""The throwaway PostgreSQL cluster of tests/pg.py: locked down, isolated, and never left behind.

Every PostgreSQL test trusts this fixture to leave no server running and no data folder behind,
whatever happens to the test process (an error, Ctrl-C, SIGKILL): these tests prove it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from tests.pg import PgCluster, find_bin_dir, pg_cluster, pid_alive

ROOT = Path(__file__).resolve().parents[1]

# As the `postgres` fixture does: skip without server binaries, except in CI (there, fail).
needs_pg = pytest.mark.skipif(
    find_bin_dir() is None and not os.environ.get("CI"), reason="no PostgreSQL server binaries"
)


def _wait_gone(pid: int, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_cluster_takes_only_its_password_on_loopback(postgres: PgCluster) -> None:
    assert postgres.host == "127.0.0.1"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=postgres.host, port=postgres.port, user=postgres.user, password="wrong"
        ).close()
    rows = postgres.execute(
        "select current_setting('listen_addresses'), current_setting('fsync'),"
        " current_setting('synchronous_commit'), current_setting('full_page_writes')"
    )
    assert rows == [("127.0.0.1", "off", "off", "off")]
    owner = Path(f"/proc/{postgres.pid}/status").read_text()
    uid = int(next(line for line in owner.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid == os.geteuid() if os.geteuid() != 0 else uid != 0  # never the root account


def test_the_url_hides_its_password_unless_asked(postgres: PgCluster) -> None:
    url = postgres.url("postgres")
    assert postgres.password not in str(url)
    assert postgres.password in url.render_as_string(hide_password=False)
    assert url.drivername == "postgresql+psycopg"


def test_each_test_gets_a_fresh_empty_database(postgres: PgCluster, pg_url: sqlalchemy.URL) -> None:
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as conn:
        assert (
            conn.execute(
                sqlalchemy.text("select count(*) from pg_tables where schemaname = 'public'")
            ).scalar()
            == 0
        )
        conn.execute(sqlalchemy.text("create table t (x int)"))
    engine.dispose()
    other = sqlalchemy.create_engine(postgres.create_database("test_other"))
    try:
        with other.connect() as conn:
            assert conn.execute(sqlalchemy.text("select to_regclass('public.t')")).scalar() is None
    finally:
        other.dispose()
        postgres.drop_database("test_other")
    assert postgres.execute("select 1 from pg_database where datname = 'test_other'") == []


@needs_pg
def test_an_error_in_the_block_stops_the_server_and_deletes_its_folder() -> None:
    with pytest.raises(ZeroDivisionError), pg_cluster() as cluster:  # noqa: PT012
        pid, root = cluster.pid, cluster.root
        assert pid_alive(pid)
        1 / 0  # noqa: B018
    assert not pid_alive(pid)
    assert not root.exists()


_OWNER = """
import json, sys, time
sys.path.insert(0, {root!r})
from tests.pg import pg_cluster
with pg_cluster() as cluster:
    print(json.dumps({{"pid": cluster.pid, "root": str(cluster.root)}}), flush=True)
    time.sleep(120)
"""


@needs_pg
@pytest.mark.parametrize(
    ("sig", "folder_deleted"),
    [
        (signal.SIGINT, True),  # Ctrl-C: the cleanup runs
        (signal.SIGTERM, False),  # default action: no cleanup; the server dies with us
        (signal.SIGKILL, False),  # nothing runs; the server dies with us all the same
    ],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_a_killed_owner_leaves_no_server_running(sig: signal.Signals, folder_deleted: bool) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER.format(root=str(ROOT))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
        pid, root = started["pid"], Path(started["root"])
        assert pid_alive(pid)
        owner.send_signal(sig)
        owner.wait(60)
    assert _wait_gone(pid), f"postgres {pid} outlived its owner ({sig.name})"
    assert root.exists() != folder_deleted
    if root.exists():
        with pg_cluster():  # the next cluster sweeps the folders of dead owners
            assert not root.exists()
