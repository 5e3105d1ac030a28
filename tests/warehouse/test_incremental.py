"""incremental.py on DuckDB: what an incremental build reads to find the touched keys' rows.

Whether incremental marts equal a full rebuild is tested end to end (tests/e2e/
test_incremental.py); these tests pin down what keeps a build's cost near the change: cuts
copy only the columns the model reads, and a date or time column of the key bounds the scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
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


def _models(root: Path) -> list[models.Model]:
    for relation, sql in (("staging.stg_stats", STAGING), ("marts.daily", MART)):
        schema, name = relation.split(".")
        (root / schema).mkdir(parents=True, exist_ok=True)
        (root / schema / f"{name}.sql").write_text(sql, encoding="utf-8")
    return models.discover(root)


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
