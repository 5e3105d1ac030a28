"""Probe: one first-page GET per read endpoint, and a report that shows how the API differs."""

from __future__ import annotations

import pytest

from robofy_etl.api import RobofyAuthError, RobofyClient, format_probe_report, probe

from .conftest import API_KEY
from .fakes import FakeRobofy, envelope


def _full_api(fake: FakeRobofy) -> None:
    fake.add(
        "/v1/projects",
        envelope([{"id": 3, "name": "Acme", "createdOn": "2026-01-02 03:04:05"}], "projects"),
    )
    fake.add("/v1/projects/3", {"data": {"id": 3, "name": "Acme", "timezone": "UTC"}})
    fake.add_pages(
        "/v1/ai-agent/chatbot/3",
        "chatbots",
        [[{"id": "bot/1", "name": "Help", "isReady": True}], [{"id": "bot2"}]],
        variant="key",
    )
    fake.add("/v1/ai-agent/chatbot/3/bot%2F1", {"data": {"chatbot_id": "bot/1", "name": "Help"}})
    fake.add(
        "/v1/ai-agent/chatbot_ai_settings/3/bot%2F1",
        {"data": {"tone": "warm", "llmApiKey": "sk-should-vanish"}},
    )
    sessions = [
        {
            "sessionId": "+4915",
            "createdOn": "2026-04-23T10:30:00",
            "lastMessageTime": "2026-08-12T01:02:03.000Z",
        },
        {"session_id": "s2", "created_on": "2026-04-23 10:30:00", "visitor_name": "Ann"},
    ]
    fake.add_pages(
        "/v1/ai-agent/inbox/sessions/bot%2F1", "sessions", [sessions, [{"session_id": "s3"}]]
    )
    fake.add(
        "/v1/ai-agent/inbox/chats/bot%2F1/%2B4915",
        {
            "messages": [{"id": "m1", "role": "user", "parts": [{"data": {"time": "string"}}]}],
            "next_page_token": None,
        },
    )
    fake.add(
        "/v1/ai-agent/leads/3/bot%2F1",
        envelope([{"id": "l1", "created_at": "2025-01-15 10:30:00"}], "report.rows"),
    )
    fake.add(
        "/v1/ai-agent/message_stats",
        envelope([{"date": "2026-10-01", "totalMessages": 1}], "data_points"),
    )
    fake.add("/v1/account/details", {"data": {"name": "Acme GmbH"}})
    fake.add("/v1/license", {"message": "forbidden", "error": {"code": "FORBIDDEN"}}, status=403)
    # /v1/account/limit is not registered: 404


def test_probe_reports_each_endpoint(fake: FakeRobofy, client: RobofyClient) -> None:
    _full_api(fake)

    report = probe(client, days=7)

    by_name = {r.endpoint: r for r in report.results}
    assert list(by_name) == [
        "projects", "project", "chatbots", "chatbot", "agent_settings", "sessions",
        "transcript", "leads", "message_stats", "account_details", "account_limit", "licenses",
    ]  # fmt: skip
    assert report.ok
    assert all(r.method == "GET" for r in fake.requests)
    assert all("nextPageToken" not in r.url.params for r in fake.requests)  # first pages only
    assert len(fake.requests) == 12

    chatbots = by_name["chatbots"]
    assert (chatbots.status, chatbots.envelope, chatbots.item_count) == (200, "chatbots", 1)
    assert chatbots.has_next_page
    assert chatbots.token_location == "next_page_token"
    assert "created_on" in chatbots.missing
    assert chatbots.extra == []

    sessions = by_name["sessions"]
    assert sessions.envelope == "data.sessions"
    assert sessions.token_location == "data.next_page_token"
    assert sessions.timestamp_formats == {
        "created_on": {"iso": 1, "naive-space": 1},
        "last_message_time": {"iso-fraction-z": 1},
    }
    assert "platform" in sessions.missing
    assert "user_profile_name" not in sessions.missing  # one item had it (via the alias)

    transcript = by_name["transcript"]
    assert transcript.path == "/v1/ai-agent/inbox/chats/bot%2F1/%2B4915"
    assert transcript.envelope == "messages"
    assert transcript.timestamp_formats == {"parts[].data.time": {"unparseable": 1}}

    assert by_name["leads"].envelope == "data.report.rows"
    assert by_name["agent_settings"].keys == ["tone"]
    stats_request = next(r for r in fake.requests if r.url.path == "/v1/ai-agent/message_stats")
    assert stats_request.url.params["projectId"] == "3"
    assert stats_request.url.params["chatbotId"] == "bot/1"

    limit = by_name["account_limit"]
    assert (limit.status, limit.optional, limit.ok) == (404, True, False)
    assert by_name["licenses"].status == 403

    text = format_probe_report(report)
    for name in by_name:
        assert name in text
    assert "data.report.rows" in text
    assert "iso-fraction-z x1" in text
    assert "sk-should-vanish" not in text
    assert API_KEY not in text


def test_probe_uses_the_given_project(fake: FakeRobofy, client: RobofyClient) -> None:
    _full_api(fake)
    fake.add("/v1/projects/9", {"data": {"id": 9}})
    report = probe(client, project_id=9)
    assert report.result("project").path == "/v1/projects/9"
    assert report.result("chatbots").status == 404


def test_probe_stops_on_401(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/projects", {"message": "no", "error": {"code": "UNAUTHORIZED"}}, status=401)
    with pytest.raises(RobofyAuthError, match="ROBOFY_API_KEY"):
        probe(client)
    assert len(fake.requests) == 1


def test_probe_skips_children_without_a_parent(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/projects", envelope([], "projects"))
    report = probe(client)
    assert report.result("projects").ok
    assert report.result("chatbots").skipped
    assert "project_id" in (report.result("chatbots").error or "")
    assert not report.ok
    assert "skipped" in format_probe_report(report)


def test_probe_records_contract_errors_and_goes_on(fake: FakeRobofy, client: RobofyClient) -> None:
    _full_api(fake)
    fake.add("/v1/projects/3", {"data": "not an object"})
    report = probe(client)
    assert "RobofyContractError" in (report.result("project").error or "")
    assert report.result("chatbots").ok
