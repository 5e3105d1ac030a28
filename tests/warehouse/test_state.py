"""Sync state, schema drift, quarantine and audit in ``meta``.

State lives beside the data and commits with it: a failed load must not record a scan. What
the sync records in ``meta.sync_state`` is tested in tests/test_streams.py; nothing in the
pipeline reads it back, so these tests read the table the way its readers (operators) do.
"""

from __future__ import annotations

from datetime import date, datetime
from hashlib import md5

import pytest

from robofy_etl.warehouse import LoadCounts, Slice, Warehouse
from robofy_etl.warehouse.load import encode_payload

from .conftest import session_row, table_rows


class Boom(Exception):
    pass


def test_state_rolls_back_with_the_data(wh: Warehouse) -> None:
    window = Slice(day_from=date(2026, 10, 1), day_to=date(2026, 10, 2))
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("a", "s1", "2026-10-01")], slice=window)
        tx.set_state("sessions", "chatbot:a", {"cursor": 1})
    before = table_rows(wh, "raw.robofy__inbox_sessions")
    state = table_rows(wh, "meta.sync_state")
    assert [row[:2] for row in state] == [("sessions", "chatbot:a")]

    def doomed() -> None:
        with wh.transaction(run_id="r2") as tx:
            tx.replace("robofy__inbox_sessions", [], slice=window)
            tx.set_state("sessions", "chatbot:a", {"cursor": 2})
            raise Boom

    with pytest.raises(Boom):
        doomed()

    assert table_rows(wh, "meta.sync_state") == state  # read as operators read it
    assert table_rows(wh, "raw.robofy__inbox_sessions") == before


def test_drift_counts_occurrences_and_keeps_first_seen(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.record_drift(
            "robofy__inbox_sessions",
            added={"sentiment_score": 0.3},
            missing={"user_profile_name"},
        )
    with wh.transaction(run_id="r2") as tx:
        tx.record_drift("robofy__inbox_sessions", added={"sentiment_score": "x" * 500})

    rows = table_rows(wh, "meta.schema_drift")
    by_field = {r[1]: r for r in rows}
    stream, _, change, occurrences, example, first_at, last_at, first_run, last_run = by_field[
        "sentiment_score"
    ]
    assert (stream, change, occurrences, first_run, last_run) == (
        "robofy__inbox_sessions",
        "added",
        2,
        "r1",
        "r2",
    )
    assert len(example) == 200
    assert example.startswith("'xxx")
    assert first_at <= last_at
    assert by_field["user_profile_name"][2:5] == ("missing", 1, None)


def test_quarantine_keeps_reason_and_payload(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.quarantine(
            "robofy__leads",
            [("missing key field 'id'", {"email": "x@example.com"}), ("bad date", {"id": "l2"})],
            slice="2026-10-03",
        )

    with wh.connect() as conn:
        rows = conn.execute(
            "select stream, reason, payload->>'email', run_id, slice from meta.quarantine"
            " order by reason"
        ).fetchall()
    assert rows == [
        ("robofy__leads", "bad date", None, "r1", "2026-10-03"),
        ("robofy__leads", "missing key field 'id'", "x@example.com", "r1", "2026-10-03"),
    ]


def test_audit_appends_one_row_per_load(wh: Warehouse) -> None:
    started = datetime(2026, 10, 1, 12)
    with wh.transaction(run_id="r1") as tx:
        tx.audit(
            "robofy__inbox_sessions",
            slice="2026-10-01..2026-10-14",
            counts=LoadCounts(inserted=3, updated=2, deleted=1, unchanged=4),
            api_requests=123,
            started_at=started,
        )

    [row] = table_rows(wh, "meta.load_audit")
    assert row[:9] == (
        "r1",
        "robofy__inbox_sessions",
        "2026-10-01..2026-10-14",
        3,
        2,
        1,
        4,
        123,
        started,
    )
    assert row[9] >= started


def test_session_watermarks_reads_the_window(wh: Warehouse) -> None:
    rows = [
        session_row("a", "s1", "2026-10-01"),
        session_row("a", "s2", "2026-10-03"),
        session_row("b", "s3", "2026-10-01"),
        {**session_row("a", "s4", "2026-10-02"), "_payload": {"session_id": "s4"}},
    ]
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__inbox_sessions", rows, slice=Slice())

    marks = wh.session_watermarks(["a"], date(2026, 10, 1), date(2026, 10, 3))

    digest = {
        row["session_id"]: md5(encode_payload(row["_payload"]).encode()).hexdigest() for row in rows
    }
    assert marks == {
        ("a", "s1"): ("2026-10-01T09:05:00Z", "2026-10-01", digest["s1"]),
        ("a", "s4"): (None, "2026-10-02", digest["s4"]),
    }
    assert wh.session_watermarks([], "2026-10-01", "2026-10-31") == {}
    assert len(wh.session_watermarks(None, "2026-10-01", "2026-10-31")) == 4
