"""The queries behind the asset checks: each passes on good data and fails on the defect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

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
    ref = next(r for r in quality.REFERENCES if r.child == "robofy__chatbots")
    orphan = quality.orphans(conn, ref)  # project 1 was never loaded
    assert not orphan.passed
    assert orphan.metadata["orphan_rows"] == 2
    conn.execute(
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice)"
        " values (1, '{}', now(), 'r', 'snapshot')"
    )
    assert quality.orphans(conn, ref).passed
