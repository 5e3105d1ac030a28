"""incremental.py on DuckDB: what an incremental build reads to find the touched keys' rows.

Whether incremental marts equal a full rebuild is tested end to end (tests/e2e/
test_incremental.py); these tests pin down what keeps a build's cost near the change: cuts
copy only the columns the model reads, and a date or time column of the key bounds the scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from robofy_etl.warehouse import incremental, models

STAGING = """-- grain: one row per (chatbot_id, stat_date)
-- description: Stats.
-- columns:
--   chatbot_id: Chatbot.
--   stat_date: Day.
--   project_id: Project.
--   note: A wide column no mart reads.
select chatbot_id, stat_date, project_id, repeat('x', 100) as note
from raw.robofy__message_stats
"""

MART = """-- grain: one row per (chatbot_id, stat_date)
-- description: Per chatbot and day.
-- incremental:
--   key: chatbot_id, stat_date
--   staging.stg_stats: chatbot_id, stat_date
-- columns:
--   chatbot_id: Chatbot.
--   stat_date: Day.
--   projects: Projects seen.
select chatbot_id, stat_date, count(distinct project_id) as projects
from staging.stg_stats
group by all
"""


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as connection:
        models.create_empty_raw_tables(connection)
        yield connection


def _discover(root: Path, files: dict[str, str]) -> list[models.Model]:
    """Write each ``relation: sql`` as a model file under ``root`` and discover them."""
    for relation, sql in files.items():
        schema, name = relation.split(".")
        (root / schema).mkdir(parents=True, exist_ok=True)
        (root / schema / f"{name}.sql").write_text(sql, encoding="utf-8")
    return models.discover(root)


def _models(root: Path) -> list[models.Model]:
    return _discover(root, {"staging.stg_stats": STAGING, "marts.daily": MART})


def _load(conn: duckdb.DuckDBPyConnection, rows: list[tuple[str, date, int]]) -> None:
    for chatbot, day, project in rows:
        conn.execute(
            "delete from raw.robofy__message_stats where chatbot_id = ? and stat_date = ?",
            [chatbot, day],
        )
        conn.execute(
            "insert into raw.robofy__message_stats (project_id, chatbot_id, stat_date,"
            " _payload, _loaded_at, _run_id, _slice)"
            " values (?, ?, ?, '{}', now()::timestamp + interval 1 microsecond, 'r', ?)",
            [project, chatbot, day, day.isoformat()],
        )


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the incremental builds run (they still run)."""
    seen: list[str] = []
    run = incremental.DuckDBSQL.run

    def recording(self: incremental.DuckDBSQL, sql: str, params: Any = None) -> None:
        seen.append(" ".join(sql.split()))
        run(self, sql, params)

    monkeypatch.setattr(incremental.DuckDBSQL, "run", recording)
    return seen


def test_an_incremental_build_bounds_the_days_and_copies_only_the_columns_read(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, statements: list[str]
) -> None:
    found = _models(tmp_path)
    history = [(f"c{c}", date(2026, 1, 1 + d), d % 3) for c in range(3) for d in range(20)]
    _load(conn, history)
    models.build(conn, found)
    statements.clear()
    _load(conn, [("c1", date(2026, 1, 19), 7), ("c2", date(2026, 1, 21), 1)])

    results = models.build(conn, found)

    assert [r.mode for r in results] == ["incremental", "incremental"]
    cut = next(s for s in statements if "temp table" in s and "source_marts__daily" in s)
    # Only the columns the mart reads, and only the touched days: not `note`, not all history.
    assert re.search(
        r'as select "chatbot_id", "stat_date", "project_id" from staging\.stg_stats', cut
    ), cut
    assert "\"stat_date\" between date '2026-01-19' and date '2026-01-21'" in cut
    old = next(s for s in statements if "temp table" in s and "_old_marts__daily" in s)
    assert "\"stat_date\" between date '2026-01-19' and date '2026-01-21'" in old
    incremental_rows = conn.execute("select * from marts.daily order by all").fetchall()
    models.build(conn, found, full_refresh=True)
    assert conn.execute("select * from marts.daily order by all").fetchall() == incremental_rows
    assert ("c1", date(2026, 1, 19), 1) in incremental_rows  # project 1 replaced by 7
    assert ("c2", date(2026, 1, 21), 1) in incremental_rows


def test_the_columns_a_query_reads_come_from_its_plan(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        "create table marts.sessions as select 'c' || (i % 3) as chatbot_id, i as n,"
        " null::varchar as empty, 'same' as constant, i % 2 = 0 as flag, 'wide' as unused"
        " from range(50) t(i)"
    )
    sql = """with s as (select * from marts.sessions)
        select chatbot_id, sum(n), max(coalesce(empty, constant)) from s
        where flag and empty is null group by all"""

    needed = incremental.DuckDBSQL(conn).needed_columns(sql)

    # A column read only by a filter counts; so do columns whose data is one value (the plan
    # must not have folded them into constants: the cut would then lack them).
    assert needed is not None
    assert sorted(needed["marts.sessions"]) == ["chatbot_id", "constant", "empty", "flag", "n"]
    assert conn.execute("select current_setting('disabled_optimizers')").fetchall() == [("",)]


MESSAGES = """-- grain: one row per (chatbot_id, session_id, message_id)
-- description: Messages.
-- incremental:
--   span: sent_at per chatbot_id, session_id
-- columns:
--   chatbot_id: Chatbot.
--   session_id: Conversation.
--   message_id: Message.
--   sent_at: When (null: unknown).
select chatbot_id, session_id, message_id, sent_at from raw.robofy__chat_messages
"""

CONVERSATION_MESSAGES = """-- grain: one row per (chatbot_id, session_id, message_id)
-- description: Messages with their conversation's size.
-- incremental:
--   key: chatbot_id, session_id
--   staging.stg_messages: chatbot_id, session_id
--   span: sent_at per chatbot_id, session_id
-- columns:
--   chatbot_id: Chatbot.
--   session_id: Conversation.
--   message_id: Message.
--   sent_at: When (null: unknown).
--   size: Messages in the conversation.
select
    chatbot_id, session_id, message_id, sent_at,
    count(*) over (partition by chatbot_id, session_id) as size
from staging.stg_messages
"""


def _span_models(root: Path) -> list[models.Model]:
    return _discover(
        root,
        {"staging.stg_messages": MESSAGES, "marts.conversation_messages": CONVERSATION_MESSAGES},
    )


def _message(conn: duckdb.DuckDBPyConnection, session: str, message: str, day: int | None) -> None:
    sent = None if day is None else f"2026-01-{day:02d} 10:00:00"
    conn.execute(
        "insert into raw.robofy__chat_messages (chatbot_id, session_id, message_id, project_id,"
        " ordinal, sent_at, _payload, _loaded_at, _run_id, _slice)"
        " values ('c', ?, ?, 1, 0, ?::timestamp, '{}', now()::timestamp, 'r', 's')",
        [session, message, sent],
    )


def _same_as_a_full_build(conn: duckdb.DuckDBPyConnection, found: list[models.Model]) -> None:
    query = "select * from marts.conversation_messages order by all"
    incremental_rows = conn.execute(query).fetchall()
    with conn.cursor() as other:
        other.execute("begin")
        models.build(other, found, full_refresh=True)
        full_rows = other.execute(query).fetchall()
        other.execute("rollback")
    assert incremental_rows == full_rows


def test_spans_bound_old_rows_and_cover_old_and_timeless_rows(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, statements: list[str]
) -> None:
    found = _span_models(tmp_path)
    for session, message, day in (("a", "1", 1), ("a", "2", 2), ("b", "1", 20), ("n", "1", None)):
        _message(conn, session, message, day)
    models.build(conn, found)

    # A conversation of three weeks ago goes on, one with an undated message gets another.
    _message(conn, "a", "3", 21)
    _message(conn, "n", "2", None)
    statements.clear()
    models.build(conn, found)

    old = next(s for s in statements if "_old_marts__conversation_messages as" in s)
    assert "\"sent_at\" between timestamp '2026-01-01 10:00:00' and timestamp " in old
    assert '"sent_at" is null' in old  # the undated message's conversation
    _same_as_a_full_build(conn, found)
    sizes = dict(
        conn.execute(
            "select session_id, max(size) from marts.conversation_messages group by all"
        ).fetchall()
    )
    assert sizes == {"a": 3, "b": 1, "n": 2}
    # The next publish finds the replaced rows, old (day 1) and new (day 21), by this range.
    logged = conn.execute(
        "select span_column, span_lo, span_hi, span_nulls from changelog.builds"
        " where model = 'marts.conversation_messages' and mode = 'incremental'"
    ).fetchall()
    assert logged == [("sent_at", datetime(2026, 1, 1, 10), datetime(2026, 1, 21, 10), True)]

    # The span of "a" now reaches day 21; its first message, day 1, must still be found.
    _message(conn, "a", "4", 22)
    models.build(conn, found)
    _same_as_a_full_build(conn, found)


def test_a_missing_span_table_is_computed_again(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    found = _span_models(tmp_path)
    _message(conn, "a", "1", 1)
    models.build(conn, found)
    conn.execute(f"drop table {incremental.span_table('marts.conversation_messages')}")

    _message(conn, "a", "2", 5)
    results = models.build(conn, found)

    assert [r.mode for r in results] == ["incremental", "incremental"]
    _same_as_a_full_build(conn, found)
    spans = conn.execute(
        f"select * from {incremental.span_table('marts.conversation_messages')}"
    ).fetchall()
    assert [row[:2] for row in spans] == [("c", "a")]


def test_a_span_must_be_kept_per_key_columns(tmp_path: Path) -> None:
    (tmp_path / "marts").mkdir()
    (tmp_path / "marts" / "bad.sql").write_text(
        CONVERSATION_MESSAGES.replace(
            "span: sent_at per chatbot_id, session_id", "span: sent_at per message_id"
        ),
        encoding="utf-8",
    )
    with pytest.raises(models.ModelError, match="span is kept per message_id"):
        models.discover(tmp_path)


def test_a_full_build_leaves_a_span_model_in_time_order(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = _span_models(tmp_path)
    # Conversations whose keys hash in no particular order, their messages days apart.
    for i in range(40):
        _message(conn, f"s{(i * 7919) % 97}", f"m{i}", 1 + (i * 13) % 28)
    _message(conn, "undated", "m", None)
    monkeypatch.setattr(incremental, "CHUNK_ROWS", 1)  # one hour per range: fully ordered

    models.build(conn, found)

    for relation in ("staging.stg_messages", "marts.conversation_messages"):
        stored = [
            t for (t,) in conn.execute(f"select sent_at from {relation} order by rowid").fetchall()
        ]
        assert len(stored) == 41
        assert stored[-1] is None  # rows without a time go last
        assert stored[:-1] == sorted(stored[:-1]), relation
    _same_as_a_full_build(conn, found)


def test_ordering_a_large_build_keeps_its_rows_within_the_transaction(tmp_path: Path) -> None:
    """3M rows written and ordered in one transaction read back whole in it: an earlier version
    (an empty table made with ``limit 0``, then filled) read back 0 rows until the commit."""
    with duckdb.connect(str(tmp_path / "big.duckdb")) as conn:
        conn.execute("set memory_limit = '160MB'")
        conn.execute("create schema s")
        conn.execute("begin")
        conn.execute(
            "create table s.built as select hash(range) % 1000 as k, timestamp '2026-01-01'"
            " + to_seconds((hash(range) % 31536000)::bigint) as t, repeat('x', 50) as v"
            " from range(3000000)"
        )
        model = models.Model(
            name="s.m",
            schema="s",
            path=tmp_path / "m.sql",
            sql="",
            deps=(),
            materialization="table",
            incremental_key=("k",),
            span=models.Span("t", ("k",)),
        )

        ranges = incremental.cluster_by_time(conn, model, "s.built")

        assert ranges > 1
        assert conn.execute("select count(*), count(distinct k) from s.m").fetchall() == [
            (3_000_000, 1000)
        ]
        conn.execute("commit")
        assert conn.execute("select count(*) from s.m").fetchall() == [(3_000_000,)]
