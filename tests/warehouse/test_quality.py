"""The queries behind the asset checks: each passes on good data and fails on the defect.

Every test runs twice, on a DuckDB file and on a database of the throwaway PostgreSQL cluster
(tests/pg.py): the queries are written once for both, and must find the same defects with the
same counts and samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from robofy_etl.sync.registry import REFERENCES
from robofy_etl.warehouse import Warehouse, quality
from robofy_etl.warehouse.incremental import STATE_DDL
from robofy_etl.warehouse.pg.schema import create_all
from robofy_etl.warehouse.reader import AlchemyReader, DuckDBReader, Reader

NOW = datetime(2026, 11, 20, 12, 0)
LEADS = next(r for r in REFERENCES if r.child == "robofy__leads")
CHATBOTS = next(r for r in REFERENCES if r.child == "robofy__chatbots")


class Db:
    """One warehouse, either back end: ``run`` writes (``:name`` parameters), ``reader`` is
    what the checks read through."""

    def __init__(self, reader: Reader, backend: str) -> None:
        self.reader = reader
        self.backend = backend

    def run(self, sql: str, **params: Any) -> None:
        if isinstance(self.reader, AlchemyReader):
            self.reader.conn.execute(sa.text(sql), params)
        else:
            self.reader.rows(sql, params)


@pytest.fixture(params=["duckdb", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "duckdb":
        wh = Warehouse(tmp_path / "q.duckdb")
        wh.initialize()
        with wh.connect() as connection:
            yield Db(DuckDBReader(connection), "duckdb")
        return
    engine = sa.create_engine(request.getfixturevalue("pg_url"))
    try:
        with engine.begin() as conn:
            create_all(conn)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield Db(AlchemyReader(conn), "postgresql")
    finally:
        engine.dispose()


def _audit(db: Db, slice_label: str, finished: datetime) -> None:
    db.run(
        "insert into meta.load_audit values ('r', 'robofy__leads', :slice, 1, 0, 0, 0, 1, null,"
        " :finished)",
        slice=slice_label,
        finished=finished,
    )


def test_freshness_fails_without_loads(db: Db) -> None:
    _audit(db, "snapshot", NOW)  # a label that names no day is not a load of one
    _audit(db, "12 continued sessions", NOW)
    assert not quality.latest_load(db.reader, "robofy__leads", timedelta(hours=26), NOW).passed


def test_freshness_passes_for_a_recent_load_of_recent_days(db: Db) -> None:
    _audit(db, "2026-11-17..2026-11-20", NOW - timedelta(hours=1))
    outcome = quality.latest_load(db.reader, "robofy__leads", timedelta(hours=26), NOW)
    assert outcome.passed
    assert outcome.metadata["latest_day_loaded"] == "2026-11-20"
    assert outcome.metadata["age_hours"] == 1.0


@pytest.mark.parametrize(
    ("label", "age_hours"),
    [("2026-01-01..2026-01-31", 1), ("2026-11-17..2026-11-20", 30)],
    ids=["backfill-of-old-days", "stale-load"],
)
def test_freshness_fails_for_old_days_or_an_old_load(db: Db, label: str, age_hours: int) -> None:
    _audit(db, label, NOW - timedelta(hours=age_hours))
    assert not quality.latest_load(db.reader, "robofy__leads", timedelta(hours=26), NOW).passed


def _chatbot(db: Db, chatbot_id: str, run_id: str = "r", project_id: int = 1) -> None:
    db.run(
        "insert into raw.robofy__chatbots (chatbot_id, project_id, _payload, _loaded_at, _run_id,"
        " _slice) values (:id, :project, '{}', :now, :run, 'snapshot')",
        id=chatbot_id,
        project=project_id,
        now=NOW,
        run=run_id,
    )


def test_unique_key_and_orphans_catch_the_defects(db: Db) -> None:
    _chatbot(db, "b1")
    _chatbot(db, "b1")
    duplicate = quality.raw_unique_key(db.reader, "robofy__chatbots")
    assert not duplicate.passed
    assert duplicate.metadata["duplicate_keys"] == 1
    assert duplicate.metadata["sample_duplicates"] == "[('b1', 2)]"
    orphan = quality.orphans(db.reader, CHATBOTS)  # project 1 was never loaded
    assert not orphan.passed
    assert orphan.metadata["orphan_rows"] == 2
    assert orphan.metadata["sample"] == "[(1,)]"
    db.run(
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice)"
        " values (1, '{}', :now, 'r', 'snapshot')",
        now=NOW,
    )
    passed = quality.orphans(db.reader, CHATBOTS)
    assert passed.passed
    assert passed.metadata == {"orphan_rows": 0, "sample": "none", "scope": "whole table"}


def _activity(db: Db, days: dict[str, tuple[int, int]], longest_conversation_days: int) -> None:
    """Minimal marts: per day (transcript messages, stats messages); one session that long."""
    db.run("create schema if not exists marts")
    db.run(
        "create table marts.chatbot_daily_activity (activity_date date, chatbot_id varchar,"
        " messages integer, stats_total_messages integer)"
    )
    for day, (messages, stats) in days.items():
        db.run(
            "insert into marts.chatbot_daily_activity values (cast(:day as date), 'b1', :m, :s)",
            day=day,
            m=messages,
            s=stats,
        )
    start = datetime(2026, 11, 1, 9)
    db.run("create table marts.sessions (started_at timestamp, last_message_at timestamp)")
    db.run(
        "insert into marts.sessions values (:start, :end)",
        start=start,
        end=start + timedelta(days=longest_conversation_days),
    )


def test_reconciliation_skips_days_that_conversations_from_before_the_range_reach(
    db: Db,
) -> None:
    """Days 2-3 lack messages of conversations that started before day 1 (never loaded)."""
    days = {f"2026-11-{d:02d}": (100, 100) for d in range(1, 11)}
    days["2026-11-02"] = (60, 100)
    days["2026-11-03"] = (80, 100)
    _activity(db, days, longest_conversation_days=2)
    outcome = quality.reconcile_daily_activity(db.reader)
    assert outcome.passed, outcome.metadata
    assert outcome.metadata["longest_conversation_days"] == 2
    assert outcome.metadata["days_compared"] == 5  # the 4th to the 8th (9th, 10th: settling)
    assert outcome.metadata["transcript_messages"] == 500


def test_reconciliation_fails_on_a_settled_day_that_disagrees(db: Db) -> None:
    days = {f"2026-11-{d:02d}": (100, 100) for d in range(1, 11)}
    days["2026-11-06"] = (70, 100)
    _activity(db, days, longest_conversation_days=2)
    outcome = quality.reconcile_daily_activity(db.reader)
    assert not outcome.passed
    assert outcome.metadata["days_out_of_tolerance"] == 1
    assert outcome.metadata["largest_daily_difference"] == 30
    assert outcome.metadata["difference"] == -30
    window = quality.reconcile_daily_activity(
        db.reader, days=(datetime(2026, 11, 7).date(), datetime(2026, 11, 8).date())
    )
    assert window.passed  # the run's days only: the 6th is outside them
    assert window.metadata["days_compared"] == 2


def _lead(db: Db, lead_id: str, chatbot_id: str, run_id: str) -> None:
    db.run(
        "insert into raw.robofy__leads (lead_id, project_id, chatbot_id, _payload, _loaded_at,"
        " _run_id, _slice) values (:lead, 1, :bot, '{}', :now, :run, '2026-11-20')",
        lead=lead_id,
        bot=chatbot_id,
        now=NOW,
        run=run_id,
    )


def test_raw_checks_look_only_at_what_the_run_wrote(db: Db) -> None:
    """An old defect outside the run's rows is not re-scanned; the run's own rows are."""
    _chatbot(db, "bot", "old")
    _lead(db, "dup", "bot", "old")
    _lead(db, "dup", "bot", "old")  # an old duplicate
    _lead(db, "orphan", "gone-bot", "old")  # an old orphan
    for n in range(3):
        _lead(db, f"new-{n}", "bot", "new")
    whole = quality.raw_unique_key(db.reader, "robofy__leads")
    assert not whole.passed
    assert whole.metadata["rows"] == 6
    scoped = quality.raw_unique_key(db.reader, "robofy__leads", "new")
    assert scoped.passed
    assert scoped.metadata["rows"] == 3  # only the run's keys were looked at
    assert scoped.metadata["scope"] == "keys written by this run"
    assert not quality.orphans(db.reader, LEADS).passed
    assert quality.orphans(db.reader, LEADS, "new").passed
    _lead(db, "new-dup", "gone-bot", "new")
    _lead(db, "new-dup", "bot", "new")
    _lead(db, "dup", "bot", "new")  # the run wrote a key an old run wrote twice
    duplicate = quality.raw_unique_key(db.reader, "robofy__leads", "new")
    assert not duplicate.passed
    assert duplicate.metadata["duplicate_keys"] == 3  # rows beyond one per key
    assert duplicate.metadata["rows"] == 8  # the run's 6 keys' rows, the old ones included
    assert duplicate.metadata["sample_duplicates"] == "[('dup', 3), ('new-dup', 2)]"
    orphan = quality.orphans(db.reader, LEADS, "new")
    assert not orphan.passed
    assert orphan.metadata["orphan_rows"] == 1  # the old orphan is not the run's
    assert orphan.metadata["sample"] == "[('gone-bot',)]"
    assert orphan.metadata["scope"] == "rows this run wrote or orphaned"


def test_orphans_of_a_run_include_rows_whose_parent_it_removed(db: Db) -> None:
    """Leads an old run wrote are orphaned when a later run removes their chatbot: that run's
    check finds them (it looks beyond its own rows only when it removed a parent)."""
    _lead(db, "kept", "bot", "old")  # its chatbot was never loaded: an old orphan
    assert quality.orphans(db.reader, LEADS, "new").passed
    db.run(
        "insert into meta.removed_rows values ('robofy__chatbots', 'bot', 'snapshot', 'gone',"
        " cast(:row as json), 'new', :now)",
        row='{"chatbot_id": "bot", "project_id": 1}',
        now=NOW,
    )
    outcome = quality.orphans(db.reader, LEADS, "new")
    assert not outcome.passed
    assert outcome.metadata["orphan_rows"] == 1
    assert outcome.metadata["sample"] == "[('bot',)]"  # the sample names parent keys


def _mart(db: Db, *ids: str | None) -> None:
    db.run("create schema if not exists marts")
    db.run("create table marts.things (thing_id varchar)")
    for thing_id in ids:
        db.run("insert into marts.things values (:id)", id=thing_id)


def test_model_grain_checks_the_whole_table_when_no_build_recorded_it(db: Db) -> None:
    """No meta.model_state table (a warehouse no incremental build has written to), or no row
    for the model: the mart is checked whole."""
    db.run("drop table if exists meta.model_state")
    _mart(db, "a", "a", "b", None)
    outcome = quality.model_grain(db.reader, "marts.things", ("thing_id",))
    assert not outcome.passed
    assert outcome.metadata["rows"] == 4
    # rows beyond the distinct keys: the second 'a', and the null (count distinct skips it), as
    # incremental.grain_counts counts them
    assert outcome.metadata["duplicate_keys"] == 2
    assert outcome.metadata["null_keys"] == 1
    assert outcome.metadata["sample_duplicates"] == "[('a', 2)]"
    db.run(STATE_DDL)  # the table, without the model's row
    assert quality.model_grain(db.reader, "marts.things", ("thing_id",)).metadata["rows"] == 4


def test_model_grain_reads_the_counts_its_last_build_recorded(db: Db) -> None:
    _mart(db, "a", "a")  # not read: the build's counts are
    db.run(STATE_DDL)
    db.run(
        "insert into meta.model_state values ('marts.things', 'f', null, :now, 'incremental',"
        " 3, 10, 0, 0)",
        now=NOW,
    )
    outcome = quality.model_grain(db.reader, "marts.things", ("thing_id",))
    assert outcome.passed
    assert outcome.metadata == {
        "build": "incremental",
        "rows_checked": 10,
        "keys_rebuilt": 3,
        "duplicate_keys": 0,
        "null_keys": 0,
    }


def test_readers_bind_named_parameters_and_leave_casts_alone(db: Db) -> None:
    """``:name`` is bound on both back ends, ``x::type`` stays a cast, and a parameter the query
    does not use is ignored (DuckDB alone would refuse it)."""
    rows = db.reader.rows(
        "select cast(:n as integer) + 1, '7'::integer, :s", {"n": 2, "s": "a:b", "unused": 0}
    )
    assert rows == [(3, 7, "a:b")]
