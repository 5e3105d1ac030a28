"""The queries behind the asset checks: each passes on good data and fails on the defect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from robofy_etl.sync.registry import REFERENCES
from robofy_etl.warehouse import LoadCounts, Warehouse, quality

NOW = datetime(2026, 11, 20, 12, 0)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    wh = Warehouse(tmp_path / "q.duckdb")
    wh.initialize()
    with wh.connect() as connection:
        yield connection


def _audit(conn: duckdb.DuckDBPyConnection, slice_label: str, finished: datetime) -> None:
    counts = LoadCounts(1, 0, 0, 0)
    conn.execute(
        "insert into meta.load_audit values ('r', 'robofy__leads', ?, ?, ?, ?, ?, 1, null, ?)",
        [slice_label, counts.inserted, counts.updated, counts.deleted, counts.unchanged, finished],
    )


def test_freshness_fails_without_loads(conn: duckdb.DuckDBPyConnection) -> None:
    assert not quality.latest_load(conn, "robofy__leads", timedelta(hours=26), NOW).passed


def test_freshness_passes_for_a_recent_load_of_recent_days(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    _audit(conn, "2026-11-17..2026-11-20", NOW - timedelta(hours=1))
    outcome = quality.latest_load(conn, "robofy__leads", timedelta(hours=26), NOW)
    assert outcome.passed
    assert outcome.metadata["latest_day_loaded"] == "2026-11-20"


@pytest.mark.parametrize(
    ("label", "age_hours"),
    [("2026-01-01..2026-01-31", 1), ("2026-11-17..2026-11-20", 30)],
    ids=["backfill-of-old-days", "stale-load"],
)
def test_freshness_fails_for_old_days_or_an_old_load(
    conn: duckdb.DuckDBPyConnection, label: str, age_hours: int
) -> None:
    _audit(conn, label, NOW - timedelta(hours=age_hours))
    assert not quality.latest_load(conn, "robofy__leads", timedelta(hours=26), NOW).passed


def test_unique_key_and_orphans_catch_the_defects(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        "insert into raw.robofy__chatbots (chatbot_id, project_id, _payload, _loaded_at, _run_id,"
        " _slice) values ('b1', 1, '{}', now(), 'r', 'snapshot'), ('b1', 1, '{}', now(), 'r',"
        " 'snapshot')"
    )
    duplicate = quality.raw_unique_key(conn, "robofy__chatbots")
    assert not duplicate.passed
    assert duplicate.metadata["duplicate_keys"] == 1
    ref = next(r for r in REFERENCES if r.child == "robofy__chatbots")
    orphan = quality.orphans(conn, ref)  # project 1 was never loaded
    assert not orphan.passed
    assert orphan.metadata["orphan_rows"] == 2
    conn.execute(
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice)"
        " values (1, '{}', now(), 'r', 'snapshot')"
    )
    assert quality.orphans(conn, ref).passed


def _activity(
    conn: duckdb.DuckDBPyConnection,
    days: dict[str, tuple[int, int]],
    longest_conversation_days: int,
) -> None:
    """Minimal marts: per day (transcript messages, stats messages); one session that long."""
    conn.execute("create schema if not exists marts")
    conn.execute(
        "create table marts.chatbot_daily_activity (activity_date date, chatbot_id varchar,"
        " messages integer, stats_total_messages integer)"
    )
    for day, (messages, stats) in days.items():
        conn.execute(
            "insert into marts.chatbot_daily_activity values (?, 'b1', ?, ?)",
            [day, messages, stats],
        )
    start = datetime(2026, 11, 1, 9)
    conn.execute(
        "create table marts.sessions as select ?::timestamp as started_at,"
        " ?::timestamp as last_message_at",
        [start, start + timedelta(days=longest_conversation_days)],
    )


def test_reconciliation_skips_days_that_conversations_from_before_the_range_reach(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    """Days 2-3 lack messages of conversations that started before day 1 (never loaded)."""
    days = {f"2026-11-{d:02d}": (100, 100) for d in range(1, 11)}
    days["2026-11-02"] = (60, 100)
    days["2026-11-03"] = (80, 100)
    _activity(conn, days, longest_conversation_days=2)
    outcome = quality.reconcile_daily_activity(conn)
    assert outcome.passed, outcome.metadata
    assert outcome.metadata["longest_conversation_days"] == 2
    assert outcome.metadata["days_compared"] == 5  # the 4th to the 8th (9th, 10th: settling)


def test_reconciliation_fails_on_a_settled_day_that_disagrees(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    days = {f"2026-11-{d:02d}": (100, 100) for d in range(1, 11)}
    days["2026-11-06"] = (70, 100)
    _activity(conn, days, longest_conversation_days=2)
    outcome = quality.reconcile_daily_activity(conn)
    assert not outcome.passed
    assert outcome.metadata["days_out_of_tolerance"] == 1
    assert outcome.metadata["largest_daily_difference"] == 30


def _lead(conn: duckdb.DuckDBPyConnection, lead_id: str, chatbot_id: str, run_id: str) -> None:
    conn.execute(
        "insert into raw.robofy__leads (lead_id, project_id, chatbot_id, _payload, _loaded_at,"
        " _run_id, _slice) values (?, 1, ?, '{}', ?, ?, '2026-11-20')",
        [lead_id, chatbot_id, NOW, run_id],
    )


def test_raw_checks_look_only_at_what_the_run_wrote(conn: duckdb.DuckDBPyConnection) -> None:
    """An old defect outside the run's rows is not re-scanned; the run's own rows are."""
    conn.execute(
        "insert into raw.robofy__chatbots (chatbot_id, project_id, _payload, _loaded_at,"
        " _run_id, _slice) values ('bot', 1, '{}', ?, 'old', 'snapshot')",
        [NOW],
    )
    _lead(conn, "dup", "bot", "old")
    _lead(conn, "dup", "bot", "old")  # an old duplicate
    _lead(conn, "orphan", "gone-bot", "old")  # an old orphan
    for n in range(3):
        _lead(conn, f"new-{n}", "bot", "new")
    assert not quality.raw_unique_key(conn, "robofy__leads").passed
    scoped = quality.raw_unique_key(conn, "robofy__leads", "new")
    assert scoped.passed
    assert scoped.metadata["rows"] == 3  # only the run's keys were looked at
    ref = next(r for r in REFERENCES if r.child == "robofy__leads")
    assert not quality.orphans(conn, ref).passed
    assert quality.orphans(conn, ref, "new").passed
    _lead(conn, "new-dup", "gone-bot", "new")
    _lead(conn, "new-dup", "bot", "new")
    assert not quality.raw_unique_key(conn, "robofy__leads", "new").passed
    assert not quality.orphans(conn, ref, "new").passed


def test_orphans_of_a_run_include_rows_whose_parent_it_removed(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    """Leads an old run wrote are orphaned when a later run removes their chatbot: that run's
    check finds them (it looks beyond its own rows only when it removed a parent)."""
    _lead(conn, "kept", "bot", "old")  # its chatbot was never loaded: an old orphan
    ref = next(r for r in REFERENCES if r.child == "robofy__leads")
    assert quality.orphans(conn, ref, "new").passed
    conn.execute(
        "insert into meta.removed_rows values ('robofy__chatbots', 'bot', 'snapshot', 'gone',"
        " json_object('chatbot_id', 'bot', 'project_id', 1), 'new', ?)",
        [NOW],
    )
    outcome = quality.orphans(conn, ref, "new")
    assert not outcome.passed
    assert outcome.metadata["orphan_rows"] == 1
    assert "kept" not in outcome.metadata["sample"]  # the sample names parent keys
    assert "bot" in outcome.metadata["sample"]
