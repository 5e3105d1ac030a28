"""What the published copy holds, and in which storage format.

Issue 9: publishing copied the whole database file (raw, staging, marts, meta) after every run,
so its cost grew with the raw history, and it kept DuckDB 2.0's storage format, which readers
still on DuckDB 1.x cannot open. The copy now holds what readers query (the marts, and the meta
tables ``robofy-etl status`` reads, without ``meta.removed_rows``), with the tables' documentation,
written in the storage format of ``ROBOFY_PUBLISH_STORAGE_VERSION`` (default v1.4.0).
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from robofy_etl.warehouse import Slice, Warehouse, WarehouseError
from robofy_etl.warehouse import publish as backend
from robofy_etl.warehouse.models import build

from .conftest import message_row, session_row

DAY_1 = Slice(day_from="2026-10-01", day_to="2026-10-02")
# The storage version number in a DuckDB file's main header (a little-endian uint64 after the
# 8-byte checksum and "DUCK"): DuckDB 1.4 writes 67 and opens nothing newer.
V1_4_STORAGE_NUMBER = 67


def header_storage_number(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[8:12] == b"DUCK"
    return int(struct.unpack("<Q", header[12:20])[0])


@pytest.fixture
def built(wh: Warehouse) -> Warehouse:
    """A warehouse with raw rows, a staging view, documented marts (one a view) and meta rows."""
    sessions = [session_row("bot", f"s{i}", "2026-10-01") for i in range(50)]
    messages = [message_row("bot", f"s{i // 4}", i % 4, "2026-10-01") for i in range(200)]
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", sessions, slice=DAY_1)
        tx.replace("robofy__chat_messages", messages[:100], slice=DAY_1)
        tx.replace("robofy__chat_messages", messages[50:], slice=DAY_1)  # removes 50 rows
        tx.set_state("sessions", "chatbot:bot", {"window": "2026-10-01..2026-10-02"})
        tx.quarantine("sessions", [("missing session id", {"x": 1})], slice="2026-10-01")
        conn = tx.conn
        conn.execute("create view staging.stg_sessions as select * from raw.robofy__inbox_sessions")
        conn.execute(
            "create table marts.sessions as select chatbot_id, session_id, started_at"
            " from staging.stg_sessions"
        )
        conn.execute("comment on table marts.sessions is 'grain: one row per session; it''s ok'")
        conn.execute("comment on column marts.sessions.session_id is 'The session''s id.'")
        conn.execute("comment on column marts.sessions.started_at is 'UTC.'")
        conn.execute(
            "create table marts.messages as select chatbot_id, session_id, message_id, sent_at"
            " from raw.robofy__chat_messages"
        )
        conn.execute("comment on table marts.messages is 'grain: one row per message'")
        # A view reading a schema the copy does not hold: it must still work in the copy.
        conn.execute(
            "create view marts.session_days as select started_at::date as day, count(*) as n"
            " from staging.stg_sessions group by all"
        )
        conn.execute("comment on view marts.session_days is 'sessions per day'")
    return wh


def relations(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """``schema.name -> table|view`` of every relation in the open database."""
    rows = conn.execute(
        """
        select schema_name || '.' || table_name, 'table' from duckdb_tables()
        where database_name = current_database()
        union all
        select schema_name || '.' || view_name, 'view' from duckdb_views()
        where database_name = current_database() and not internal
        """
    ).fetchall()
    return dict(rows)


def documentation(conn: duckdb.DuckDBPyConnection, relation: str) -> dict[str, Any]:
    schema, name = relation.split(".")
    table = conn.execute(
        "select comment from duckdb_tables() where database_name = current_database()"
        " and schema_name = ? and table_name = ?"
        " union all select comment from duckdb_views() where database_name = current_database()"
        " and schema_name = ? and view_name = ?",
        [schema, name, schema, name],
    ).fetchall()
    columns = conn.execute(
        "select column_name, comment from duckdb_columns() where database_name ="
        " current_database() and schema_name = ? and table_name = ? and comment is not null",
        [schema, name],
    ).fetchall()
    return {"table": table[0][0], "columns": dict(columns)}


def test_the_copy_holds_exactly_the_marts_and_meta_tables_with_rows_and_comments(
    built: Warehouse,
) -> None:
    published = built.publish()

    with built.connect(read_only=True) as source:
        stored = relations(source)
        assert source.execute("select count(*) from meta.removed_rows").fetchall() == [(50,)]
        expected = {
            name
            for name in stored
            if name.split(".")[0] in ("marts", "meta") and name != "meta.removed_rows"
        }
        rows = {name: source.execute(f"from {name} order by all").fetchall() for name in expected}
        docs = {name: documentation(source, name) for name in expected}
    with duckdb.connect(str(published), read_only=True) as copy:
        copied = relations(copy)
        assert set(copied) == expected
        assert {"marts.sessions", "marts.messages", "marts.session_days"} <= expected
        assert {"meta.sync_state", "meta.load_audit", "meta.quarantine"} <= expected
        # A view is materialized: what it reads (staging, raw) is not in the copy.
        assert copied["marts.session_days"] == "table"
        for name in expected:
            assert copy.execute(f"from {name} order by all").fetchall() == rows[name], name
            assert documentation(copy, name) == docs[name], name
        schemas = copy.execute(
            "select schema_name from duckdb_schemas() where database_name = current_database()"
        ).fetchall()
        assert {s for (s,) in schemas} >= {"marts", "meta"}
    assert not {s for (s,) in schemas} & {"raw", "staging"}
    assert docs["marts.sessions"] == {
        "table": "grain: one row per session; it's ok",
        "columns": {"session_id": "The session's id.", "started_at": "UTC."},
    }
    assert all(rows[name] for name in ("marts.sessions", "meta.sync_state", "meta.quarantine"))


def test_the_copy_is_written_in_the_storage_format_duckdb_1_4_reads(built: Warehouse) -> None:
    published = built.publish()

    with duckdb.connect(str(published), read_only=True) as copy:
        tags = copy.execute(
            "select tags from duckdb_databases() where database_name = current_database()"
        ).fetchall()[0][0]
    assert tags["storage_version"] == "v1.4.0+"
    assert header_storage_number(published) == V1_4_STORAGE_NUMBER
    assert header_storage_number(built.path) > V1_4_STORAGE_NUMBER  # the warehouse keeps 2.0's


def test_latest_writes_this_duckdbs_own_format(wh: Warehouse) -> None:
    latest = Warehouse(wh.path, publish_storage_version="latest")

    published = latest.publish()

    assert header_storage_number(published) == header_storage_number(wh.path)


@pytest.mark.parametrize("version", ["v9.9.9", "1.4.0", "v1.4", "newest", ""])
def test_a_storage_version_duckdb_does_not_know_fails_when_the_warehouse_is_set_up(
    tmp_path: Path, version: str
) -> None:
    with pytest.raises(WarehouseError, match="ROBOFY_PUBLISH_STORAGE_VERSION"):
        Warehouse(tmp_path / "w.duckdb", publish_storage_version=version)


def test_a_failed_publish_keeps_the_previous_copy_and_leaves_nothing_behind(
    built: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = built.publish()
    before = published.read_bytes()
    real = backend._published_relations

    def with_a_missing_table(conn: duckdb.DuckDBPyConnection) -> list[Any]:
        return [*real(conn), ("marts", "vanished", None)]

    monkeypatch.setattr(backend, "_published_relations", with_a_missing_table)
    with pytest.raises(duckdb.CatalogException, match="vanished"):
        built.publish()

    assert published.read_bytes() == before
    assert sorted(p.name for p in published.parent.iterdir()) == sorted(
        [built.path.name, published.name]
    )
    monkeypatch.undo()
    assert built.publish() == published  # the copy's database was detached: publish works again
    with built.transaction(run_id="r2") as tx:  # and so does the warehouse
        tx.set_state("s", "x", {"n": 2})


def _mart_rows(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    names = conn.execute(
        "select table_name from duckdb_tables() where database_name = current_database()"
        " and schema_name = 'marts' order by 1"
    ).fetchall()
    return {n: conn.execute(f'select * from marts."{n}" order by all').fetchall() for (n,) in names}


def _published(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return _mart_rows(conn)


def _built(wh: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    with wh.connect() as conn:
        return _mart_rows(conn)


def _load_and_build(wh: Warehouse, run: str, day: str, sessions: range, text: str) -> None:
    """Replace ``day``'s sessions and messages (text ``text``) and build the models."""
    next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    window = Slice(day_from=day, day_to=next_day)
    with wh.transaction(run_id=run) as tx:
        tx.replace(
            "robofy__inbox_sessions",
            [session_row("bot", f"{day}-s{i}", day) for i in sessions],
            window,
        )
        messages = [
            message_row("bot", f"{day}-s{i}", n, day, text=f"{text} {n}")
            for i in sessions
            for n in range(3)
        ]
        tx.replace("robofy__chat_messages", messages, window)
        build(tx.conn)


def _publish(wh: Warehouse, caplog: pytest.LogCaptureFixture) -> str:
    """Publish; returns how (written, updated, updated in place), from the log line."""
    caplog.clear()
    wh.publish()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("published")]
    return line.split("(", 1)[1].split(":", 1)[0]


@pytest.fixture
def reader() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """A process that opens a DuckDB file read-only, prints its message count, waits for a line
    on stdin, prints the count again and exits."""
    started: list[subprocess.Popen[str]] = []

    def start(path: Path) -> subprocess.Popen[str]:
        script = textwrap.dedent(
            f"""
            import sys, duckdb
            conn = duckdb.connect({str(path)!r}, read_only=True)
            count = "select count(*), max(text) from marts.messages"
            print(conn.execute(count).fetchall(), flush=True)
            sys.stdin.readline()
            print(conn.execute(count).fetchall(), flush=True)
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_the_spare_copy_is_updated_in_place_unless_a_reader_holds_it(
    wh: Warehouse,
    caplog: pytest.LogCaptureFixture,
    reader: Callable[[Path], subprocess.Popen[str]],
) -> None:
    """Each publish keeps the copy it replaces as ``<copy>.spare``; the next one rewrites the
    spare's changed keys in place instead of copying the whole file, except while a reader
    still has the spare open: then it copies, and the reader's view does not change."""
    caplog.set_level(logging.INFO, logger="robofy_etl.warehouse")
    dest, spare = wh.published_path, backend.spare_path(wh.published_path)

    _load_and_build(wh, "r1", "2026-10-01", range(40), "first")
    assert _publish(wh, caplog) == "written"
    assert not spare.exists()
    _load_and_build(wh, "r2", "2026-10-02", range(30), "first")
    assert _publish(wh, caplog) == "updated"  # a copy of the current file: no spare yet
    assert spare.exists()
    assert spare.stat().st_ino != dest.stat().st_ino
    assert _published(dest) == _built(wh)

    held = reader(dest)  # opens the copy that the next publish turns into the spare
    assert held.stdout is not None
    seen = held.stdout.readline()
    _load_and_build(wh, "r3", "2026-10-01", range(0, 40, 3), "second")  # some keys change
    old_spare = spare.stat().st_ino
    assert _publish(wh, caplog) == "updated in place"
    assert dest.stat().st_ino == old_spare  # the spare became the published copy
    assert _published(dest) == _built(wh)

    _load_and_build(wh, "r4", "2026-10-02", range(0, 30, 2), "third")
    assert _publish(wh, caplog) == "updated"  # the spare is the reader's file: copied instead
    assert _published(dest) == _built(wh)
    assert held.stdin is not None
    held.stdin.write("\n")
    held.stdin.flush()
    assert held.stdout.readline() == seen  # the reader's file did not change under it
    held.wait(timeout=30)

    _load_and_build(wh, "r5", "2026-10-03", range(10), "fourth")
    assert _publish(wh, caplog) == "updated in place"
    assert _published(dest) == _built(wh)
