"""The sync logic between client and warehouse: scan stop rules, quarantine, vanished sessions.

The API is FakeRobofy over httpx.MockTransport (the transport seam), so each case serves exactly
the pages it needs; the warehouse is a real DuckDB file.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import pytest

from robofy_etl import streams
from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient
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
            _session("s1", "2026-10-09 09:00:00", "2026-10-09 10:00:00"),
        ],
        [_session("s0", "2026-10-08 09:00:00", "2026-10-08 10:00:00")],
    ]
    fake.add_pages(SESSIONS, "sessions", pages)
    for sid in ("s3", "s2"):
        _transcript(fake, sid, [_message(f"{sid}-m1", "2026-10-11 09:00:00")])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        report = streams.sync_conversations(api, wh, "run-1", WINDOW)
    assert fake.calls(SESSIONS) == 2  # page 2 reached 2026-10-09: page 3 is never asked for
    assert report.details["list_scans_stopped_early"] == 1
    with wh.connect() as conn:
        got = conn.execute(
            "select session_id from raw.robofy__inbox_sessions order by 1"
        ).fetchall()
    assert got == [("s2",), ("s3",)]


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
    for sid in ("s2", "s3"):
        _transcript(fake, sid, [_message(f"{sid}-m1", "2026-10-11 09:00:00")])
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
        fake, "s1", [_message("m1", "2026-10-10 09:00:00"), _message(None, "2026-10-10 09:01:00")]
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
    for sid in ("s1", "s2"):
        _transcript(fake, sid, [_message(f"{sid}-m1", "2026-10-10 09:00:00")])
    with _client(fake) as api:
        _load_dimensions(api, wh)
        streams.sync_conversations(api, wh, "run-1", WINDOW)
        fake.add_pages(SESSIONS, "sessions", [[s2]])  # s1 is gone from the API
        report = streams.sync_conversations(api, wh, "run-2", WINDOW)
    assert report.details["sessions_vanished"] == 1
    assert report.details["transcripts_fetched"] == 0  # s2 did not change
    with wh.connect() as conn:
        sessions = conn.execute("select session_id from raw.robofy__inbox_sessions").fetchall()
        messages = conn.execute("select session_id from raw.robofy__chat_messages").fetchall()
    assert sessions == [("s2",)]
    assert messages == [("s2",)]
