"""Every example response in the public Robofy docs must parse (copies of shared/fixtures/docs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from robofy_etl.api import (
    Endpoint,
    RobofyAuthError,
    RobofyClient,
    RobofyNotFoundError,
    parse_timestamp,
)

from .fakes import FakeRobofy

DOCS = Path(__file__).parent / "fixtures" / "docs"


def load(name: str) -> Any:
    return json.loads((DOCS / name).read_text())


def test_sessions_getting_started(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/ai-agent/inbox/sessions/bot1", load("sessions_getting_started.json"))

    pages = list(client.paginate("sessions", chatbot_id="bot1"))

    assert len(pages) == 1
    assert pages[0].envelope == "data.sessions"
    assert pages[0].token is None
    assert pages[0].items == [
        {
            "session_id": "6017409f-51b6-4c87-97c3-fc812dc2febe",
            "created_on": "2026-04-23T10:30:00",
            "last_message": "I want to know more about your pricing.",
            "status": "active",
        }
    ]


def test_leads_list(fake: FakeRobofy, client: RobofyClient) -> None:
    body = load("leads_list.json")
    fake.add("/v1/ai-agent/leads/3/bot1", body)
    last = {
        "message": "ok",
        "data": {"report": {"columns": [], "rows": [], "next_page_token": None}},
    }
    fake.add("/v1/ai-agent/leads/3/bot1", last, token="eyJwYWdlIjoyfQ==")

    pages = list(client.paginate("leads", project_id=3, chatbot_id="bot1"))

    assert [p.token for p in pages] == ["eyJwYWdlIjoyfQ==", None]
    assert pages[0].envelope == "data.report.rows"
    assert pages[0].token_location == "data.report.next_page_token"
    lead = pages[0].items[0]
    assert lead["id"] == "lead_12345"
    assert lead["created_at"] == "2025-01-15 10:30:00"  # kept raw
    assert parse_timestamp(lead["created_at"]) is not None
    assert lead["lead_data"][1] == {
        "field_name": "email",
        "field_type": "email",
        "field_value": "john@example.com",
    }


def test_inbox_chat_dto_bare_with_unparseable_time(fake: FakeRobofy, client: RobofyClient) -> None:
    path = "/v1/ai-agent/inbox/chats/bot1/s1"
    fake.add(path, load("inbox_chat_dto.json"))
    fake.add(path, {"messages": [{"id": "m2", "role": "user", "parts": []}]}, token="string")

    pages = list(client.paginate("transcript", chatbot_id="bot1", session_id="s1"))

    assert pages[0].envelope == "messages"
    assert pages[0].token_location == "next_page_token"
    message = pages[0].items[0]
    assert message["parts"][0]["data"]["time"] == "string"
    assert parse_timestamp(message["parts"][0]["data"]["time"]) is None
    assert [m["id"] for p in pages for m in p.items] == ["string", "m2"]


def test_agent_settings_strips_llm_api_key(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/ai-agent/chatbot_ai_settings/3/bot1", load("agent_settings.json"))

    settings = client.get_one("agent_settings", project_id=3, chatbot_id="bot1")

    assert "llm_api_key" not in settings
    assert settings["temperature"] == "0.5"  # values kept as received
    assert settings["chunk_overlap"] is None
    assert len(settings) == 10


def test_agent_settings_strips_the_key_under_any_endpoint() -> None:
    from robofy_etl.api import normalize_record

    anything = Endpoint("x", "/x", single=True)
    assert "llm_api_key" not in normalize_record(anything, load("agent_settings.json")["data"])


def test_error_unauthorized_getting_started(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/projects", load("error_unauthorized_getting_started.json"), status=401)

    with pytest.raises(RobofyAuthError) as caught:
        list(client.paginate("projects"))

    error = caught.value
    assert (error.status, error.error_code) == (401, "Unauthorized")
    assert error.detail == "Authentication credentials were not provided."
    assert error.path == "/v1/projects"
    assert "ROBOFY_API_KEY" in str(error)


def test_error_project_not_found(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/projects/99", load("error_project_not_found.json"), status=404)

    with pytest.raises(RobofyNotFoundError) as caught:
        client.get_one("project", project_id=99)

    error = caught.value
    assert (error.status, error.error_code, error.detail) == (
        404,
        "PROJECT_NOT_FOUND",
        "Project not found.",
    )
    assert "/v1/projects/99" in str(error)
