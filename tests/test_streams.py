"""The sync logic between client and warehouse: scan stop rules, quarantine, vanished sessions.

The API is FakeRobofy over httpx.MockTransport (the transport seam), so each case serves exactly
the pages it needs; the warehouse is a real DuckDB file.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import httpx
import pytest

from robofy_etl import sync as streams
from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient, RobofyError
from robofy_etl.warehouse import Warehouse
from tests.api.fakes import FakeRobofy

WINDOW = streams.Window(date(2026, 10, 10), date(2026, 10, 12))  # 10th and 11th
SESSIONS = "/v1/ai-agent/inbox/sessions/bot-1"


def _session(sid: str, created: str, last: str) -> dict[str, str]:
    return {
        "session_id": sid,
        "created_on": created,
        "last_message_time": last,
        "last_message": "hi",
        "last_message_direction": "user",
        "status": "closed",
        "platform": "web",
        "user_profile_name": None,
        "website_url": "https://x.example/",
    }


def _transcript(fake: FakeRobofy, sid: str, messages: list[dict[str, object]]) -> None:
    fake.add_pages(f"/v1/ai-agent/inbox/chats/bot-1/{sid}", "messages", [messages])


def _message(mid: str | None, time: str) -> dict[str, object]:
    message: dict[str, object] = {
        "role": "user",
        "parts": [{"type": "text", "text": "hi", "data": {"time": time}}],
    }
    if mid is not None:
        message["id"] = mid
    return message


@pytest.fixture
def fake() -> FakeRobofy:
    fake = FakeRobofy()
    fake.add_pages("/v1/projects", "projects", [[{"id": 1, "name": "P"}]])
    fake.add_pages("/v1/ai-agent/chatbot/1", "chatbots", [[{"id": "bot-1", "name": "B"}]])
    return fake


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    warehouse.initialize()
    return warehouse


def _client(fake: FakeRobofy) -> RobofyClient:
    config = ClientConfig(
        base_url="https://fake", api_key="k", retry=RetryPolicy(initial_delay=0.0, jitter=0.0)
    )
    return RobofyClient(config, transport=httpx.MockTransport(fake), sleep=lambda _: None)


def _load_dimensions(api: RobofyClient, wh: Warehouse) -> None:
    streams.sync_projects(api, wh, "run-0")
    streams.sync_chatbots(api, wh, "run-0")


def test_newest_first_scan_stops_after_the_page_past_the_window(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    pages = [
        [
            _session("s4", "2026-10-12 09:00:00", "2026-10-12 10:00:00"),
            _session("s3", "2026-10-11 09:00:00", "2026-10-11 10:00:00"),
        ],
        [
            _session("s2", "2026-10-10 09:00:00", "2026-10-10 10:00:00"),
            _session("s1", "2026-10-08 09:00:00", "2026-10-08 10:00:00"),
        ],
        [_session("s0", "2026-10-07 09:00:00", "2026-10-07 10:00:00")],
    ]
    fake.add_pages(SESSIONS, "sessions", pages)
    for sid, last in (("s3", "2026-10-11 10:00:00"), ("s2", "2026-10-10 10:00:00")):
        _transcript(fake, sid, [_message(f"{sid}-m1", last)])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        report = streams.sync_conversations(api, wh, "run-1", WINDOW)
    # Page 2 reached 2026-10-08, past the window start less the status settle time (a day):
    # page 3 is never asked for.
    assert WINDOW.start_dt - streams.STATUS_SETTLE > datetime(2026, 10, 8, 10)
    assert fake.calls(SESSIONS) == 2
    assert report.details["list_scans_stopped_early"] == 1
    with wh.connect() as conn:
        got = conn.execute(
            "select session_id from raw.robofy__inbox_sessions order by 1"
        ).fetchall()
    assert got == [("s2",), ("s3",)]


def _scan_records(wh: Warehouse) -> list[tuple[str, str, dict[str, object], str]]:
    """meta.sync_state as its readers see it (nothing in the pipeline reads it back)."""
    with wh.connect() as conn:
        rows = conn.execute(
            "select stream, scope, value, run_id from meta.sync_state order by all"
        ).fetchall()
    return [(stream, scope, json.loads(value), run) for stream, scope, value, run in rows]


def test_each_sessions_scan_is_recorded_per_chatbot_and_replaced_by_the_next(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    first = [_session("s2", "2026-10-11 09:00:00", "2026-10-11 10:00:00")]
    older = [_session("s1", "2026-10-01 09:00:00", "2026-10-01 10:00:00")]
    fake.add_pages(SESSIONS, "sessions", [first, older])
    _transcript(fake, "s2", [_message("s2-m1", "2026-10-11 10:00:00")])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        streams.sync_conversations(api, wh, "run-1", WINDOW)
        assert _scan_records(wh) == [
            (
                "sessions",
                "chatbot:bot-1",
                {"window": str(WINDOW), "pages": 2, "newest_first": True, "stopped_early": True},
                "run-1",
            )
        ]
        later = streams.Window(date(2026, 10, 11), date(2026, 10, 12))
        streams.sync_conversations(api, wh, "run-2", later)
    assert _scan_records(wh) == [
        (
            "sessions",
            "chatbot:bot-1",
            {"window": str(later), "pages": 2, "newest_first": True, "stopped_early": True},
            "run-2",
        )
    ]


def test_disorder_falls_back_to_a_full_scan(fake: FakeRobofy, wh: Warehouse) -> None:
    pages = [
        # Page 1 reaches past the window but is out of order (older before newer), so the
        # order cannot be trusted and page 2 is read: s3 must be found there.
        [
            _session("s1", "2026-10-09 09:00:00", "2026-10-09 10:00:00"),
            _session("s2", "2026-10-10 09:00:00", "2026-10-10 10:00:00"),
        ],
        [_session("s3", "2026-10-11 09:00:00", "2026-10-11 10:00:00")],
    ]
    fake.add_pages(SESSIONS, "sessions", pages)
    for sid, last in (("s2", "2026-10-10 10:00:00"), ("s3", "2026-10-11 10:00:00")):
        _transcript(fake, sid, [_message(f"{sid}-m1", last)])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        report = streams.sync_conversations(api, wh, "run-1", WINDOW)
    assert report.details["list_scans_unordered"] == 1, report.details
    with wh.connect() as conn:
        got = conn.execute(
            "select session_id from raw.robofy__inbox_sessions order by 1"
        ).fetchall()
    assert got == [("s2",), ("s3",)]


def test_malformed_records_are_quarantined_and_the_rest_loads(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    broken = _session("s9", "not a date", "2026-10-10 10:00:00")
    fake.add_pages(
        SESSIONS,
        "sessions",
        [[_session("s1", "2026-10-10 09:00:00", "2026-10-10 10:00:00"), broken]],
    )
    _transcript(
        fake, "s1", [_message(None, "2026-10-10 09:01:00"), _message("m1", "2026-10-10 10:00:00")]
    )
    with _client(fake) as api:
        _load_dimensions(api, wh)
        report = streams.sync_conversations(api, wh, "run-1", WINDOW)
    assert report.quarantined == 2
    with wh.connect() as conn:
        reasons = conn.execute("select stream, reason from meta.quarantine order by 1").fetchall()
        messages = conn.execute("select message_id from raw.robofy__chat_messages").fetchall()
    assert reasons == [
        ("robofy__chat_messages", "missing message id ('id')"),
        ("robofy__inbox_sessions", "unparseable 'created_on': 'not a date'"),
    ]
    assert messages == [("m1",)]


def test_vanished_session_and_its_messages_are_removed(fake: FakeRobofy, wh: Warehouse) -> None:
    s1 = _session("s1", "2026-10-10 09:00:00", "2026-10-10 10:00:00")
    s2 = _session("s2", "2026-10-10 11:00:00", "2026-10-10 12:00:00")
    fake.add_pages(SESSIONS, "sessions", [[s2, s1]])
    for sid, last in (("s1", "2026-10-10 10:00:00"), ("s2", "2026-10-10 12:00:00")):
        _transcript(fake, sid, [_message(f"{sid}-m1", last)])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        streams.sync_conversations(api, wh, "run-1", WINDOW)
        fake.add_pages(SESSIONS, "sessions", [[s2]])  # s1 is gone from the API...
        fake.fail("/v1/ai-agent/inbox/chats/bot-1/s1", 404)  # ...and its transcript says so
        report = streams.sync_conversations(api, wh, "run-2", WINDOW)
    assert report.details["sessions_removed"] == 1
    assert report.details["transcripts_fetched"] == 0  # s2 did not change
    with wh.connect() as conn:
        sessions = conn.execute("select session_id from raw.robofy__inbox_sessions").fetchall()
        messages = conn.execute("select session_id from raw.robofy__chat_messages").fetchall()
    assert sessions == [("s2",)]
    assert messages == [("s2",)]


def test_list_that_moves_while_paged_is_scanned_again_and_loses_nothing(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    def session(sid: str, last: str) -> dict[str, str]:
        return _session(sid, "2026-10-10 08:00:00", last)

    s1, s2, s3 = (session(f"s{n}", f"2026-10-11 1{3 - n}:00:00") for n in (1, 2, 3))
    s4 = session("s4", "2026-10-11 09:00:00")
    for listed in (s1, s2, s3, s4):
        sid = listed["session_id"]
        _transcript(fake, sid, [_message(f"{sid}-m1", listed["last_message_time"])])
    fake.add_pages(SESSIONS, "sessions", [[s1, s2], [s3, s4]])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        streams.sync_conversations(api, wh, "run-1", WINDOW)

        # During the next scan s4 gets a message after page 1 was read: with offset paging,
        # page 2 repeats s2 and s4 (now first) is never seen. The next scan sees it first.
        s4_active = session("s4", "2026-10-11 14:00:00")
        _transcript(
            fake,
            "s4",
            [_message("s4-m1", "2026-10-11 09:00:00"), _message("s4-m2", "2026-10-11 14:00:00")],
        )
        fake.add_pages(SESSIONS, "sessions", [[s1, s2], [s2, s3]])
        calls = {"n": 0}
        handler = fake.__call__

        def moving(request: httpx.Request) -> httpx.Response:
            if request.url.path == SESSIONS:
                calls["n"] += 1
                if calls["n"] == 3:  # the second scan starts: the list has settled
                    fake.add_pages(SESSIONS, "sessions", [[s4_active, s1], [s2, s3]])
            return handler(request)

        moving_api = RobofyClient(api.config, transport=httpx.MockTransport(moving))
        with moving_api:
            report = streams.sync_conversations(moving_api, wh, "run-2", WINDOW)
    assert report.details["list_scans_repeated"] == 1
    assert report.details["sessions_removed"] == 0
    assert report.problems == []
    with wh.connect() as conn:
        messages = conn.execute(
            "select session_id, count(*) from raw.robofy__chat_messages group by 1 order by 1"
        ).fetchall()
    assert messages == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 2)]


def test_conversation_continuing_after_its_start_day_is_refreshed_in_its_partition(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    early = _session("s0", "2026-10-08 09:00:00", "2026-10-08 10:00:00")
    _transcript(fake, "s0", [_message("s0-m1", "2026-10-08 10:00:00")])
    fake.add_pages(SESSIONS, "sessions", [[early]])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        streams.sync_conversations(
            api, wh, "run-1", streams.Window(date(2026, 10, 8), date(2026, 10, 9))
        )

        # Two days later the visitor comes back; the run covers only the recent days.
        back = _session("s0", "2026-10-08 09:00:00", "2026-10-10 11:00:00")
        _transcript(
            fake,
            "s0",
            [_message("s0-m1", "2026-10-08 10:00:00"), _message("s0-m2", "2026-10-10 11:00:00")],
        )
        fake.add_pages(SESSIONS, "sessions", [[back]])
        report = streams.sync_conversations(api, wh, "run-2", WINDOW)
    assert report.details["continued_sessions_refreshed"] == 1
    with wh.connect() as conn:
        rows = conn.execute(
            "select _slice, last_message_at::varchar from raw.robofy__inbox_sessions"
        ).fetchall()
        messages = conn.execute(
            "select message_id, _slice from raw.robofy__chat_messages order by 1"
        ).fetchall()
    assert rows == [("2026-10-08", "2026-10-10 11:00:00")]
    assert messages == [("s0-m1", "2026-10-08"), ("s0-m2", "2026-10-08")]


def test_many_failing_transcripts_in_a_row_stop_the_run_keeping_what_loaded(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    """One failing transcript is skipped; a long run of them means the API is down."""
    n = streams.MAX_FAILURES_IN_A_ROW + 5
    listed = [
        _session(f"s{i:02d}", "2026-10-10 09:00:00", f"2026-10-10 10:{i:02d}:00") for i in range(n)
    ]
    fake.add_pages(SESSIONS, "sessions", [listed])
    for session in listed:
        sid = session["session_id"]
        fake.fail(f"/v1/ai-agent/inbox/chats/bot-1/{sid}", 500, times=50)
    with _client(fake) as api:
        _load_dimensions(api, wh)
        with pytest.raises(RobofyError, match="in a row failed"):
            streams.sync_conversations(api, wh, "run-1", WINDOW)
    with wh.connect() as conn:
        assert conn.execute("select count(*) from raw.robofy__chat_messages").fetchone() == (0,)


def test_outstanding_transcript_is_retried_by_a_run_of_other_days(
    fake: FakeRobofy, wh: Warehouse
) -> None:
    """A transcript that failed is fetched again by the next run, whatever days that run covers."""
    s1 = _session("s1", "2026-10-10 09:00:00", "2026-10-10 10:00:00")
    path = "/v1/ai-agent/inbox/chats/bot-1/s1"
    fake.add_pages(SESSIONS, "sessions", [[s1]])
    _transcript(fake, "s1", [_message("s1-m1", "2026-10-10 10:00:00")])
    fake.fail(path, 500, times=5)  # every attempt of this run fails
    with _client(fake) as api:
        _load_dimensions(api, wh)
        first = streams.sync_conversations(api, wh, "run-1", WINDOW)
        assert first.problems_of("robofy__chat_messages")
        later = streams.Window(date(2026, 10, 20), date(2026, 10, 21))  # s1 is not in it
        second = streams.sync_conversations(api, wh, "run-2", later)
    assert second.problems == []
    with wh.connect() as conn:
        messages = conn.execute("select message_id from raw.robofy__chat_messages").fetchall()
        outstanding = conn.execute("select count(*) from meta.outstanding").fetchone()
    assert messages == [("s1-m1",)]
    assert outstanding == (0,)
