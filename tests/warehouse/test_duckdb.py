"""The DuckDB back end under real processes: lock waits, publishing, and crash safety.

DuckDB allows one read-write process per file, so these tests start real subprocesses that hold
the file, and one that is killed with SIGKILL in the middle of a transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from robofy_etl.warehouse import (
    LoadCounts,
    Slice,
    Transaction,
    Warehouse,
    WarehouseError,
    WarehouseLockedError,
    WarehouseMemoryError,
    models,
)

from .conftest import message_row, session_row, table_rows

HoldLock = Callable[[Path, float], subprocess.Popen[str]]
DAY_1 = Slice(day_from="2026-10-01", day_to="2026-10-02")


def test_initialize_is_idempotent_and_creates_every_table(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "nested" / "dir" / "w.duckdb")
    wh.initialize()
    wh.initialize()

    with wh.connect() as conn:
        tables = conn.execute(
            "select table_schema || '.' || table_name from information_schema.tables order by 1"
        ).fetchall()
        schemas = conn.execute("select schema_name from information_schema.schemata").fetchall()
        timezone = conn.execute("select current_setting('TimeZone')").fetchall()
    assert {s for (s,) in schemas} >= {"raw", "staging", "marts", "meta"}
    assert ("raw.robofy__chat_messages",) in tables
    assert ("meta.sync_state",) in tables
    assert timezone == [("UTC",)]


def test_transaction_closes_its_connection(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.conn.execute("select 1")

    with pytest.raises(duckdb.Error):
        tx.conn.execute("select 1")


def test_hold_keeps_one_database_open_for_its_block_and_then_lets_go(wh: Warehouse) -> None:
    # A GLOBAL setting lives as long as DuckDB's open database: connections inside the hold see
    # what an earlier one set, and the first connection after it finds the database rebuilt.
    def order() -> str:
        with wh.connect() as conn:
            row = conn.execute("select current_setting('default_order')").fetchone()
        assert row is not None
        return str(row[0]).lower()[:3]  # "asc"/"ascending", "desc"/"descending"

    assert order() == "asc"
    with wh.hold():
        with wh.connect() as conn:
            conn.execute("SET GLOBAL default_order = 'DESC'")
        assert order() == "des"  # the same open database, not a new one
        with wh.transaction(run_id="r") as tx:
            tx.set_state("sessions", "chatbot:x", {"n": 1})
        assert wh.get_state("sessions", "chatbot:x") == {"n": 1}
    assert order() == "asc"  # closed with the block
    # ... so another process can take the file at once.
    script = f"import duckdb; duckdb.connect({str(wh.path)!r}).close()"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_threads_may_open_and_close_connections_at_once(wh: Warehouse) -> None:
    # DuckDB's Python client races when threads of one process open and close connections to
    # one file at the same time (see _instance_lock); a sync's streams do exactly that.
    with wh.connect() as conn:
        conn.execute("create table meta.race (a int)")
    errors: list[str] = []
    stop = time.monotonic() + 3.0

    def insert() -> None:
        rows = pa.table({"a": pa.array([1, 2, 3], pa.int32())})
        while time.monotonic() < stop:
            try:
                with wh.connect() as conn:
                    conn.register("rows", rows)  # as the loads do: read by DuckDB's Arrow scan
                    conn.execute("insert into meta.race select * from rows")
            except Exception as exc:  # every failure is the finding
                errors.append(str(exc))

    def churn() -> None:
        while time.monotonic() < stop:
            try:
                with wh.hold():
                    pass
            except Exception as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=insert) for _ in range(2)]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_transaction_rolls_back_on_error(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)
    before = table_rows(wh, "raw.robofy__inbox_sessions")

    def doomed() -> None:
        with wh.transaction(run_id="r2") as tx:
            tx.replace("robofy__inbox_sessions", [], slice=DAY_1)
            late = session_row("a", "s2", "2026-10-05")  # outside DAY_1: raises
            tx.replace("robofy__inbox_sessions", [late], slice=DAY_1)

    with pytest.raises(WarehouseError):
        doomed()

    assert table_rows(wh, "raw.robofy__inbox_sessions") == before


def test_transaction_waits_for_another_process_then_succeeds(
    wh: Warehouse, hold_lock: HoldLock, caplog: pytest.LogCaptureFixture
) -> None:
    holder = hold_lock(wh.path, 30)  # holds the file until it ends
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        """The lock wait's sleep: the holder ends during the first one."""
        pauses.append(seconds)
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    waiting = Warehouse(wh.path, lock_timeout_s=10.0, sleep=pause)
    with (
        caplog.at_level("INFO", logger="robofy_etl.warehouse.duckdb"),
        waiting.transaction("r1") as tx,
    ):
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)

    assert pauses == [0.05]  # found the file locked, waited once, then got it
    assert f"PID {holder.pid}" in caplog.text
    assert "got the lock after" in caplog.text
    with wh.connect() as conn:
        loaded = conn.execute("select session_id from raw.robofy__inbox_sessions").fetchall()
    assert loaded == [("s1",)]


def test_lock_timeout_names_the_holder_and_the_setting(wh: Warehouse, hold_lock: HoldLock) -> None:
    holder = hold_lock(wh.path, 30)
    short = Warehouse(wh.path, lock_timeout_s=0.3)

    with pytest.raises(WarehouseLockedError) as raised, short.transaction("r1"):
        pass

    message = str(raised.value)
    assert "ROBOFY_LOCK_TIMEOUT_S" in message
    assert f"PID {holder.pid}" in message
    assert str(wh.path) in message
    assert "robofy.read.duckdb" in message
    assert raised.value.holder_pid == holder.pid


def test_lock_wait_backs_off_exponentially(wh: Warehouse, hold_lock: HoldLock) -> None:
    hold_lock(wh.path, 30)
    sleeps: list[float] = []
    fake = Warehouse(wh.path, lock_timeout_s=1.0, sleep=sleeps.append)

    with pytest.raises(WarehouseLockedError):
        fake.get_state("s", "x")

    assert sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.25])


def test_threads_of_one_process_take_turns(wh: Warehouse) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with wh.transaction(run_id=f"r{i}") as tx:
                tx.replace(
                    "robofy__chat_messages",
                    [message_row("a", f"s{i}", 0, "2026-10-01")],
                    slice=Slice(keys=(("session_id",), [(f"s{i}",)])),
                )
                time.sleep(0.05)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(table_rows(wh, "raw.robofy__chat_messages")) == 4


def build_marts(tx: Transaction) -> None:
    """A stand-in for the model build: the published copy holds marts, not raw tables."""
    tx.conn.execute(
        "create or replace table marts.sessions as select * from raw.robofy__inbox_sessions"
    )


def test_published_copy_opens_read_only_while_the_source_is_locked(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)
        build_marts(tx)

    published = wh.publish()

    assert published == wh.path.with_name("robofy.read.duckdb")
    assert not Path(f"{published}.wal").exists()
    assert [p.name for p in published.parent.iterdir() if ".tmp-" in p.name] == []
    with wh.connect(read_only=False):  # the source is now locked by this process
        reader = duckdb.connect(str(published), read_only=True)
        try:
            rows = reader.execute("select session_id from marts.sessions").fetchall()
        finally:
            reader.close()
    assert rows == [("s1",)]


def test_published_copy_is_readable_while_another_process_writes(
    wh: Warehouse, hold_lock: HoldLock
) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.set_state("s", "x", {"n": 1})
    published = wh.publish()
    hold_lock(wh.path, 30)

    reader = duckdb.connect(str(published), read_only=True)
    try:
        assert reader.execute("select count(*) from meta.sync_state").fetchall() == [(1,)]
    finally:
        reader.close()


READ_COUNT = """
import duckdb
conn = duckdb.connect({path!r}, read_only=True)
print(conn.execute({query!r}).fetchall()[0][0])
"""


def test_a_reader_of_the_old_copy_keeps_its_view_after_a_new_publish(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)
        build_marts(tx)
    published = wh.publish()
    reader = duckdb.connect(str(published), read_only=True)
    try:
        query = "select count(*) from marts.sessions"
        assert reader.execute(query).fetchall() == [(1,)]

        rows = [session_row("a", f"s{i}", "2026-10-01") for i in range(2_000)]
        with wh.transaction(run_id="r2") as tx:
            tx.replace("robofy__inbox_sessions", rows, slice=DAY_1)
            build_marts(tx)
        assert wh.publish() == published

        assert reader.execute(query).fetchall() == [(1,)]
        # A new reader elsewhere sees the new copy. (It must be another process: within one
        # process DuckDB hands a new connection the instance already open on the old file.)
        fresh = subprocess.run(
            [sys.executable, "-c", READ_COUNT.format(path=str(published), query=query)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert fresh.stdout.strip() == "2000"
    finally:
        reader.close()


def test_publish_to_an_explicit_target(wh: Warehouse, tmp_path: Path) -> None:
    target = tmp_path / "readers" / "marts.duckdb"

    assert wh.publish(target) == target
    assert target.exists()
    with pytest.raises(WarehouseError, match="onto itself"):
        wh.publish(wh.path)


CRASHING_LOAD = """
import sys, time
from robofy_etl.warehouse import Slice, Warehouse
sys.path.insert(0, {tests!r})
from conftest import session_row

wh = Warehouse({path!r})
with wh.transaction(run_id="doomed") as tx:
    # More than one row group (122,880 rows), so DuckDB writes uncommitted blocks to the file.
    rows = [session_row("a", f"new{{i}}", "2026-10-01") for i in range(130_000)]
    tx.replace("robofy__inbox_sessions", rows, slice=Slice(day_from="2026-10-01",
               day_to="2026-10-02"))
    tx.set_state("sessions", "chatbot:a", {{"cursor": "doomed"}})
    print("loaded", flush=True)
    time.sleep(60)
"""


def test_a_load_killed_mid_transaction_leaves_the_previous_state(wh: Warehouse) -> None:
    previous = [session_row("a", "s1", "2026-10-01"), session_row("a", "s2", "2026-10-01")]
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", previous, slice=DAY_1)
        tx.set_state("sessions", "chatbot:a", {"cursor": "r1"})
    before = table_rows(wh, "raw.robofy__inbox_sessions")
    state = table_rows(wh, "meta.sync_state")
    script = textwrap.dedent(
        CRASHING_LOAD.format(tests=str(Path(__file__).parent), path=str(wh.path))
    )

    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "loaded"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    assert table_rows(wh, "raw.robofy__inbox_sessions") == before
    assert table_rows(wh, "meta.sync_state") == state
    with wh.transaction(run_id="r3") as tx:
        counts = tx.replace(
            "robofy__inbox_sessions", [session_row("a", "s3", "2026-10-01")], slice=DAY_1
        )
    assert counts == LoadCounts(inserted=1, deleted=2)


def big_message(session_id: str, megabytes: int = 10) -> dict[str, object]:
    text = "x" * (megabytes * 1_000_000)
    return message_row("a", session_id, 0, "2026-10-01", parts=[{"type": "text", "text": text}])


def test_a_load_out_of_memory_names_the_setting_and_writes_nothing(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb", memory_limit="20MB")
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)
    before = table_rows(wh, "raw.robofy__inbox_sessions")

    def doomed() -> None:
        with wh.transaction(run_id="r2") as tx:
            tx.replace("robofy__inbox_sessions", [], slice=DAY_1)
            tx.replace("robofy__chat_messages", [big_message("s1")], slice=DAY_1)

    with pytest.raises(WarehouseMemoryError) as raised:
        doomed()

    message = str(raised.value)
    assert "while writing run r2" in message
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=20MB" in message
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=1GB" in message
    assert isinstance(raised.value.__cause__, duckdb.OutOfMemoryException)
    assert table_rows(wh, "raw.robofy__inbox_sessions") == before
    assert table_rows(wh, "raw.robofy__chat_messages") == []


def test_a_build_out_of_memory_names_the_limit_as_configured(tmp_path: Path) -> None:
    roomy = Warehouse(tmp_path / "w.duckdb", memory_limit="1GB")
    with roomy.transaction(run_id="r1") as tx:
        tx.replace("robofy__chat_messages", [big_message("s1", megabytes=20)], slice=DAY_1)
    tight = Warehouse(tmp_path / "w.duckdb", memory_limit="60MB")

    with pytest.raises(WarehouseMemoryError) as raised, tight.transaction(run_id="b1") as tx:
        models.build(tx.conn)

    message = str(raised.value)
    assert "while building " in message  # names the model
    assert "(/" in message  # and its file
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=60MB" in message  # not DuckDB's "57.2 MiB"
    assert raised.value.memory_limit == "60MB"
    assert isinstance(raised.value.__cause__, duckdb.OutOfMemoryException)


KILLED_PUBLISH = """
import os, time
from robofy_etl.warehouse import Warehouse


def hang_instead_of_renaming(source, target):
    print("copied", flush=True)
    time.sleep(60)


os.replace = hang_instead_of_renaming
Warehouse({path!r}).publish()
"""


def test_publish_removes_the_temp_copy_a_killed_publish_left(
    wh: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=DAY_1)
        build_marts(tx)
    script = textwrap.dedent(KILLED_PUBLISH.format(path=str(wh.path)))
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "copied"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
    stale = wh.published_path.with_name(f"robofy.read.duckdb.tmp-{proc.pid}")
    assert stale.exists()
    unrelated = wh.published_path.with_name("robofy.read.duckdb.tmp-notes.txt")
    unrelated.write_text("not a temp copy of a publish", encoding="utf-8")

    with caplog.at_level("WARNING", logger="robofy_etl.warehouse.duckdb"):
        published = wh.publish()

    assert not stale.exists()
    assert f"removed {stale}" in caplog.text
    assert f"(PID {proc.pid})" in caplog.text
    assert [p.name for p in published.parent.iterdir() if ".tmp-" in p.name] == [unrelated.name]
    reader = duckdb.connect(str(published), read_only=True)
    try:
        rows = reader.execute("select session_id from marts.sessions").fetchall()
    finally:
        reader.close()
    assert rows == [("s1",)]
