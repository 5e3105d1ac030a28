"""The API contract over real HTTP: paging, every envelope/key/timestamp variant, auth, errors.

Uses plain httpx (not the project's client) so a client bug cannot hide a simulator bug.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from robofy_etl.simulator import Simulator, Variants
from tests.simulator._helpers import items_and_token, walk


def _chatbot(sim: Simulator, platform: str = "whatsapp") -> str:
    for chatbot in sim.dataset.chatbots:
        if any(s.platform == platform for s in sim.dataset.sessions_by_chatbot[chatbot.chatbot_id]):
            return chatbot.chatbot_id
    raise AssertionError(platform)


@pytest.mark.parametrize("token_location", ["data", "top"])
@pytest.mark.parametrize("last_token", ["null", "empty", "absent"])
def test_paging_walks_every_item_exactly_once(
    sim: Simulator, client: httpx.Client, token_location: str, last_token: str
) -> None:
    sim.set_variants(Variants(token_location=token_location, last_token=last_token))
    cid = _chatbot(sim)
    expected = [s.session_id for s in sim.dataset.sessions_by_chatbot[cid]]
    sessions, pages = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    ids = [s["session_id"] for s in sessions]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(expected)
    assert pages == -(-len(expected) // 50)
    project = sim.dataset.projects[0].id
    leads, _ = walk(client, f"/v1/ai-agent/leads/{project}/{cid}", "rows")
    assert sorted(x["id"] for x in leads) == sorted(x.id for x in sim.dataset.leads_by_chatbot[cid])
    longest = max(sim.dataset.sessions_by_chatbot[cid], key=lambda s: s.message_count)
    messages, pages = walk(
        client, f"/v1/ai-agent/inbox/chats/{cid}/{longest.session_id}", "messages"
    )
    assert [m["id"] for m in messages] == [
        m.id for m in sim.dataset.transcript(cid, longest.session_id)
    ]
    assert pages == -(-longest.message_count // 9) > 1


def test_last_page_token_shapes(sim: Simulator, client: httpx.Client) -> None:
    path = "/v1/projects"
    sim.set_variants(Variants(last_token="empty"))
    assert client.get(path).json()["data"]["next_page_token"] == ""
    sim.set_variants(Variants(last_token="absent"))
    assert "next_page_token" not in client.get(path).json()["data"]
    sim.set_variants(Variants(last_token="null", token_location="top"))
    body = client.get(path).json()
    assert body["next_page_token"] is None
    assert "next_page_token" not in body["data"]


@pytest.mark.parametrize(
    ("envelope", "check"),
    [
        ("data.collection", lambda b: isinstance(b["data"]["sessions"], list)),
        ("data.array", lambda b: isinstance(b["data"], list) and "next_page_token" in b),
        ("top.collection", lambda b: "data" not in b and isinstance(b["sessions"], list)),
        ("bare", lambda b: isinstance(b, list)),
    ],
)
def test_envelopes(sim: Simulator, client: httpx.Client, envelope: str, check: Any) -> None:
    sim.set_variants(Variants(envelope=envelope))
    cid = _chatbot(sim)
    body = client.get(f"/v1/ai-agent/inbox/sessions/{cid}").json()
    assert check(body)
    sessions, _ = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    assert len(sessions) == len(sim.dataset.sessions_by_chatbot[cid])
    if envelope == "bare":  # the whole list in one page
        assert len(body) == len(sessions)
    project = client.get(f"/v1/projects/{sim.dataset.projects[0].id}").json()
    obj = project if envelope in ("top.collection", "bare") else project["data"]
    assert obj["id"] == sim.dataset.projects[0].id


def test_leads_use_the_documented_report_shape(sim: Simulator, client: httpx.Client) -> None:
    cid = _chatbot(sim)
    body = client.get(f"/v1/ai-agent/leads/{sim.dataset.projects[0].id}/{cid}").json()
    report = body["data"]["report"]
    assert report["columns"][:5] == ["id", "created_at", "source", "page_url", "ip_address"]
    assert "next_page_token" in report
    row = report["rows"][0]
    datetime.strptime(row["created_at"], "%Y-%m-%d %H:%M:%S")  # naive, as documented
    assert {"field_name", "field_type", "field_value"} == set(row["lead_data"][0])


def test_camel_keys_and_aliases(sim: Simulator, client: httpx.Client) -> None:
    sim.set_variants(
        Variants(
            keys="camel", chatbot_id_key="id", visitor_key="visitor_name", envelope="top.collection"
        )
    )
    project_id = sim.dataset.projects[0].id
    chatbots = client.get(f"/v1/ai-agent/chatbot/{project_id}").json()["chatbots"]
    assert {"id", "projectId", "llmApiKey", "createdOn", "isReady"} <= set(chatbots[0])
    cid = _chatbot(sim)
    body = client.get(f"/v1/ai-agent/inbox/sessions/{cid}").json()
    session = body["sessions"][0]
    assert {"sessionId", "lastMessageTime", "visitorName", "lastMessageDirection"} <= set(session)
    assert "nextPageToken" in body
    sid = session["sessionId"]
    message = client.get(f"/v1/ai-agent/inbox/chats/{cid}/{sid}").json()["messages"][0]
    assert {"contextId", "websiteUrl", "time"} == set(message["parts"][0]["data"])


@pytest.mark.parametrize(
    ("style", "fmt"),
    [
        ("naive", "%Y-%m-%d %H:%M:%S"),
        ("iso", "%Y-%m-%dT%H:%M:%S"),
        ("iso_z", "%Y-%m-%dT%H:%M:%S.%fZ"),
        ("iso_offset", None),
    ],
)
def test_timestamp_variants_name_the_same_instant(
    sim: Simulator, client: httpx.Client, style: str, fmt: str | None
) -> None:
    sim.set_variants(Variants(timestamps=style))
    cid = _chatbot(sim)
    truth = {s.session_id: s for s in sim.dataset.sessions_by_chatbot[cid]}
    sessions = client.get(f"/v1/ai-agent/inbox/sessions/{cid}").json()["data"]["sessions"]
    for s in sessions:
        raw = s["last_message_time"]
        if fmt is None:
            parsed = datetime.fromisoformat(raw)
            assert parsed.utcoffset() == timedelta(minutes=330)  # the project is in Asia/Kolkata
            value = (parsed - parsed.utcoffset()).replace(tzinfo=None)
        else:
            value = datetime.strptime(raw, fmt)
        assert value == truth[s["session_id"]].last_message_time


def test_default_timestamps(sim: Simulator, client: httpx.Client) -> None:
    cid = _chatbot(sim)
    session = client.get(f"/v1/ai-agent/inbox/sessions/{cid}").json()["data"]["sessions"][0]
    assert "T" in session["created_on"]  # iso on sessions
    chat = client.get(f"/v1/ai-agent/inbox/chats/{cid}/{session['session_id']}").json()
    time = chat["data"]["messages"][0]["parts"][0]["data"]["time"]
    datetime.strptime(time, "%Y-%m-%d %H:%M:%S")  # naive on message parts


def test_auth(sim: Simulator) -> None:
    url = f"{sim.base_url}/v1/projects"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["message"] == "The request is missing a valid API key."
    assert missing.json()["error"]["code"] == "Unauthorized"
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"api-key": sim.api_key}).status_code == 401  # bearer only
    assert httpx.get(url, headers={"Authorization": f"Bearer {sim.api_key}"}).status_code == 200
    sim.set_variants(Variants(auth_header="api-key"))
    assert httpx.get(url, headers={"api-key": sim.api_key}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {sim.api_key}"}).status_code == 401
    sim.set_variants(Variants(auth_header="either"))
    assert httpx.get(url, headers={"api-key": sim.api_key}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {sim.api_key}"}).status_code == 200


def test_not_found_and_method_not_allowed(sim: Simulator, client: httpx.Client) -> None:
    project = sim.dataset.projects[0].id
    cid = _chatbot(sim)

    def error(path: str, status: int = 404) -> str:
        r = client.get(path)
        assert r.status_code == status, (path, r.text)
        return str(r.json()["error"]["code"])

    assert error("/v1/projects/999999") == "PROJECT_NOT_FOUND"
    assert error("/v1/projects/abc") == "PROJECT_NOT_FOUND"
    assert error(f"/v1/ai-agent/chatbot/{project}/nope") == "CHATBOT_NOT_FOUND"
    assert error("/v1/ai-agent/inbox/sessions/nope") == "CHATBOT_NOT_FOUND"
    assert error(f"/v1/ai-agent/inbox/chats/{cid}/nope") == "SESSION_NOT_FOUND"
    assert error(f"/v1/ai-agent/leads/999999/{cid}") == "PROJECT_NOT_FOUND"
    assert error("/v1/does/not/exist") == "NOT_FOUND"
    assert error("/v1/projects?nextPageToken=garbage", 400) == "INVALID_PAGE_TOKEN"
    forged = base64.urlsafe_b64encode(json.dumps({"list": "x", "offset": 1}).encode()).decode()
    assert error(f"/v1/projects?nextPageToken={forged}", 400) == "INVALID_PAGE_TOKEN"
    for method in ("POST", "PUT", "DELETE"):
        r = client.request(method, "/v1/projects", json={"name": "x"})
        assert r.status_code == 405
        assert r.headers["allow"] == "GET"
    assert client.get("/v1/projects").status_code == 200  # the connection survived


def test_path_segments_are_url_decoded(sim: Simulator, client: httpx.Client) -> None:
    cid = _chatbot(sim)
    encoded = "".join(f"%{b:02X}" for b in cid.encode())
    r = client.get(f"/v1/ai-agent/inbox/sessions/{encoded}")
    assert r.status_code == 200
    assert r.json()["data"]["sessions"]


def test_message_stats_range_semantics(sim: Simulator, client: httpx.Client) -> None:
    ds = sim.dataset
    cid = _chatbot(sim)
    project = ds.projects[0].id
    today = ds.now.date()

    def stats(start: str, end: str, **extra: str) -> httpx.Response:
        params = {"projectId": str(project), "chatbotId": cid, "startDate": start, "endDate": end}
        return client.get("/v1/ai-agent/message_stats", params={**params, **extra})

    start = (today - timedelta(days=3)).isoformat()
    points = stats(start, (today + timedelta(days=5)).isoformat()).json()["data"]["data_points"]
    assert [p["date"] for p in points] == [
        (today - timedelta(days=d)).isoformat() for d in range(3, -1, -1)
    ]  # inclusive, clipped to the clock's day
    truth = {p.date.isoformat(): p for p in ds.stats_for(cid, today - timedelta(days=3), today)}
    for p in points:
        assert p["total_messages"] == truth[p["date"]].total_messages
    old = stats("2020-01-01", "2020-01-02").json()["data"]["data_points"]
    assert [p["total_messages"] for p in old] == [0, 0]  # zeros included
    assert stats(today.isoformat(), start).status_code == 400  # start after end
    assert stats("2026-13-01", start).status_code == 400
    r = client.get("/v1/ai-agent/message_stats", params={"projectId": str(project)})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BAD_REQUEST"
    sim.set_variants(Variants(stats_params=("pid", "cid", "from", "to")))
    r = client.get(
        "/v1/ai-agent/message_stats",
        params={"pid": str(project), "cid": cid, "from": start, "to": today.isoformat()},
    )
    assert r.status_code == 200
    assert len(r.json()["data"]["data_points"]) == 4


def test_session_order(sim: Simulator, client: httpx.Client) -> None:
    cid = _chatbot(sim)
    sessions, _ = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    times = [s["last_message_time"] for s in sessions]
    assert times == sorted(times, reverse=True)
    sim.set_variants(Variants(session_order="shuffled"))
    shuffled, _ = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    again, _ = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    assert shuffled == again  # deterministic
    assert [s["last_message_time"] for s in shuffled] != times
    assert sorted(s["session_id"] for s in shuffled) == sorted(s["session_id"] for s in sessions)


def test_leads_newest_first_and_session_filter(sim: Simulator, client: httpx.Client) -> None:
    project = sim.dataset.projects[0].id
    for chatbot in sim.dataset.chatbots:
        path = f"/v1/ai-agent/leads/{project}/{chatbot.chatbot_id}"
        rows, _ = walk(client, path, "rows")
        stamps = [x["created_at"] for x in rows]
        assert stamps == sorted(stamps, reverse=True)
        with_session = [x for x in rows if x["session_id"]]
        if with_session:
            sid = with_session[0]["session_id"]
            only, _ = walk(client, path, "rows", {"sessionId": sid})
            assert {x["session_id"] for x in only} == {sid}


def test_mixed_roles(sim: Simulator, client: httpx.Client) -> None:
    sim.set_variants(Variants(role_style="mixed"))
    roles: set[str] = set()
    directions: set[str] = set()
    for chatbot in sim.dataset.chatbots:
        cid = chatbot.chatbot_id
        sessions, _ = walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
        directions |= {s["last_message_direction"] for s in sessions}
        for s in sessions:
            messages, _ = walk(
                client, f"/v1/ai-agent/inbox/chats/{cid}/{s['session_id']}", "messages"
            )
            roles |= {m["role"] for m in messages}
    assert {"user", "assistant"} < roles
    assert roles & {"visitor", "agent", "inbound", "outbound"}
    assert directions - {"user", "assistant"}


def test_chatbots_carry_a_fake_secret(sim: Simulator, client: httpx.Client) -> None:
    project = sim.dataset.projects[0].id
    body = client.get(f"/v1/ai-agent/chatbot/{project}").json()
    items, token = items_and_token(body, "chatbots")
    assert token is None
    assert len(items) == 2
    assert all(c["llm_api_key"].startswith("sk-sim-") for c in items)
    one = client.get(f"/v1/ai-agent/chatbot/{project}/{items[0]['chatbot_id']}").json()["data"]
    assert one == items[0]


def test_account_endpoints(client: httpx.Client) -> None:
    assert client.get("/v1/account/details").json()["data"]["account_id"]
    assert client.get("/v1/account/limit").json()["data"]["messages_used"] > 0
    licenses, _ = walk(client, "/v1/license", "licenses")
    assert {x["status"] for x in licenses} == {"active", "expired"}


def test_responses_are_byte_identical_for_the_same_seed() -> None:
    from tests.simulator._helpers import new_sim

    bodies = []
    for _ in range(2):
        with new_sim(seed=4) as sim:
            headers = {"Authorization": f"Bearer {sim.api_key}"}
            with httpx.Client(base_url=sim.base_url, headers=headers) as c:
                cid = sim.dataset.chatbots[1].chatbot_id
                page = c.get(f"/v1/ai-agent/inbox/sessions/{cid}").content
                sid = sim.dataset.sessions_by_chatbot[cid][0].session_id
                bodies.append((page, c.get(f"/v1/ai-agent/inbox/chats/{cid}/{sid}").content))
    assert bodies[0] == bodies[1]
