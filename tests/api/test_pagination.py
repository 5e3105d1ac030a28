"""Pagination: every envelope and token placement the contract allows, and every stop rule.

The API's last-page signal, envelope and key casing are undocumented, so each accepted variant
is a row here; a loop that never ends is the failure these tests exist to prevent.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from robofy_etl.api import (
    ENDPOINTS,
    PaginationLoopError,
    RobofyClient,
    RobofyContractError,
)
from robofy_etl.api.pagination import extract_items, extract_token

from .fakes import FakeRobofy

SESSIONS_PATH = "/v1/ai-agent/inbox/sessions/bot1"
LEADS_PATH = "/v1/ai-agent/leads/3/bot1"
PAGES = [[{"session_id": "a"}, {"session_id": "b"}], [{"session_id": "c"}], [{"session_id": "d"}]]


@pytest.mark.parametrize("last_token", [None, ""])
@pytest.mark.parametrize("token_at", ["auto", "data", "top"])
def test_stops_on_null_or_empty_token(
    fake: FakeRobofy, client: RobofyClient, last_token: str | None, token_at: str
) -> None:
    # token_at="auto" drops a None token entirely: the "absent" case.
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES, token_at=token_at, last_token=last_token)

    pages = list(client.paginate("sessions", chatbot_id="bot1"))

    assert [p.number for p in pages] == [1, 2, 3]
    assert [i["session_id"] for p in pages for i in p.items] == ["a", "b", "c", "d"]
    assert [p.token for p in pages] == ["t1", "t2", None]
    assert fake.tokens_sent(SESSIONS_PATH) == [None, "t1", "t2"]


def test_stops_when_token_key_is_absent(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", [PAGES[0]], token_at=None)
    pages = list(client.paginate("sessions", chatbot_id="bot1"))
    assert len(pages) == 1
    assert pages[0].token is None
    assert pages[0].token_location is None


@pytest.mark.parametrize(
    ("variant", "token_at", "token_name", "envelope_label", "location"),
    [
        ("data.key", "data", "next_page_token", "data.sessions", "data.next_page_token"),
        ("data.key", "data", "nextPageToken", "data.sessions", "data.nextPageToken"),
        ("data.key", "top", "next_page_token", "data.sessions", "next_page_token"),
        ("key", "top", "next_page_token", "sessions", "next_page_token"),
        ("key", "top", "nextPageToken", "sessions", "nextPageToken"),
        ("data[]", "top", "next_page_token", "data[]", "next_page_token"),
    ],
)
def test_token_is_read_wherever_it_sits_and_sent_back_verbatim(
    fake: FakeRobofy,
    client: RobofyClient,
    variant: str,
    token_at: str,
    token_name: str,
    envelope_label: str,
    location: str,
) -> None:
    opaque = ["eyJwYWdlIjoyfQ==", "a b/c+d", None]
    fake.add_pages(
        SESSIONS_PATH,
        "sessions",
        PAGES,
        variant=variant,
        token_at=token_at,
        token_name=token_name,
        tokens=opaque,
    )

    pages = list(client.paginate("sessions", chatbot_id="bot1"))

    assert len(pages) == 3
    assert {p.envelope for p in pages} == {envelope_label}
    assert pages[0].token_location == location
    assert fake.tokens_sent(SESSIONS_PATH) == [None, "eyJwYWdlIjoyfQ==", "a b/c+d"]


def test_leads_token_in_data_report(fake: FakeRobofy, client: RobofyClient) -> None:
    rows = [[{"id": "l1"}], [{"id": "l2"}]]
    fake.add_pages(LEADS_PATH, "report.rows", rows)

    pages = list(client.paginate("leads", project_id=3, chatbot_id="bot1"))

    assert [p.envelope for p in pages] == ["data.report.rows", "data.report.rows"]
    assert pages[0].token_location == "data.report.next_page_token"
    assert [i["id"] for p in pages for i in p.items] == ["l1", "l2"]


def test_other_query_params_are_repeated_on_every_page(
    fake: FakeRobofy, client: RobofyClient
) -> None:
    fake.add_pages(LEADS_PATH, "report.rows", [[{"id": "l1"}], [{"id": "l2"}]])
    list(client.paginate("leads", project_id=3, chatbot_id="bot1", session_id="+4915112345"))
    params = [dict(r.url.params) for r in fake.requests]
    assert params == [
        {"sessionId": "+4915112345"},
        {"sessionId": "+4915112345", "nextPageToken": "t1"},
    ]


def test_custom_token_param_name(
    fake: FakeRobofy, make_client: Callable[..., RobofyClient]
) -> None:
    api = make_client(page_token_param="pageToken")
    fake.add_pages(SESSIONS_PATH, "sessions", [*PAGES[:1], []], tokens=["t1", None])
    # The fake only knows nextPageToken, so page 2 is answered as page 1 again -> loop guard.
    with pytest.raises(PaginationLoopError):
        list(api.paginate("sessions", chatbot_id="bot1"))
    assert fake.requests[1].url.params.get("pageToken") == "t1"


def test_repeated_token_raises_naming_endpoint_path_and_page(
    fake: FakeRobofy, client: RobofyClient
) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES, tokens=["t1", "t2", "t1"])

    pages = client.paginate("sessions", chatbot_id="bot1")
    assert next(pages).number == 1
    assert next(pages).number == 2
    with pytest.raises(PaginationLoopError) as caught:
        next(pages)

    message = str(caught.value)
    assert "sessions" in message
    assert SESSIONS_PATH in message
    assert "page 3" in message.lower()
    assert caught.value.page == 3
    assert fake.calls(SESSIONS_PATH) == 3


def test_token_equal_to_the_one_just_sent_raises(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES[:2], tokens=["t1", "t1"])
    with pytest.raises(PaginationLoopError):
        list(client.paginate("sessions", chatbot_id="bot1"))
    assert fake.calls(SESSIONS_PATH) == 2


def test_empty_page_with_token_raises(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", [PAGES[0], []], tokens=["t1", "t2"])
    with pytest.raises(PaginationLoopError, match="empty") as caught:
        list(client.paginate("sessions", chatbot_id="bot1"))
    assert caught.value.page == 2
    assert caught.value.endpoint == "sessions"


def test_empty_page_without_token_is_the_end(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", [[]])
    pages = list(client.paginate("sessions", chatbot_id="bot1"))
    assert [(p.number, p.items, p.token) for p in pages] == [(1, [], None)]


def test_page_cap(fake: FakeRobofy, make_client: Callable[..., RobofyClient]) -> None:
    api = make_client(max_pages=2)
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES)
    received = []
    with pytest.raises(PaginationLoopError, match="max_pages=2"):
        received.extend(api.paginate("sessions", chatbot_id="bot1"))
    assert [p.number for p in received] == [1, 2]
    assert fake.calls(SESSIONS_PATH) == 2  # the third page is never requested


def test_page_cap_allows_exactly_max_pages(
    fake: FakeRobofy, make_client: Callable[..., RobofyClient]
) -> None:
    api = make_client(max_pages=3)
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES)
    assert len(list(api.paginate("sessions", chatbot_id="bot1"))) == 3


def test_unknown_envelope_names_endpoint_page_and_keys_but_not_values(
    fake: FakeRobofy, client: RobofyClient
) -> None:
    fake.add(SESSIONS_PATH, {"message": "ok", "data": {"items": [{"secret_value": "xyz"}]}, "x": 1})
    with pytest.raises(RobofyContractError) as caught:
        list(client.paginate("sessions", chatbot_id="bot1"))
    message = str(caught.value)
    assert "sessions" in message
    assert "page 1" in message
    assert "data, message, x" in message
    assert "xyz" not in message
    assert not isinstance(caught.value, PaginationLoopError)


def test_non_object_items_are_a_contract_error(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add(SESSIONS_PATH, {"data": {"sessions": ["s1", "s2"]}})
    with pytest.raises(RobofyContractError, match="str item"):
        list(client.paginate("sessions", chatbot_id="bot1"))


def test_null_collection_is_an_empty_last_page(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add(
        SESSIONS_PATH, {"message": "none", "data": {"sessions": None, "next_page_token": None}}
    )
    pages = list(client.paginate("sessions", chatbot_id="bot1"))
    assert [(p.items, p.envelope) for p in pages] == [([], "data.sessions")]


def test_pages_are_lazy(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add_pages(SESSIONS_PATH, "sessions", PAGES)
    pages = client.paginate("sessions", chatbot_id="bot1")
    assert fake.calls(SESSIONS_PATH) == 0
    next(pages)
    assert fake.calls(SESSIONS_PATH) == 1


def test_bad_parameters_fail_at_call_time(client: RobofyClient) -> None:
    with pytest.raises(TypeError, match="missing"):
        client.paginate("sessions")
    with pytest.raises(TypeError, match="unexpected"):
        client.paginate("sessions", chatbot_id="a", project_id=1)
    with pytest.raises(KeyError):
        client.paginate("nope")
    with pytest.raises(TypeError, match="get_one"):
        client.paginate("project", project_id=1)


# -- the resolver, directly ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "label"),
    [
        ({"data": {"sessions": [{"a": 1}]}}, "sessions", "data.sessions"),
        ({"sessions": [{"a": 1}]}, "sessions", "sessions"),
        ({"message": "ok", "data": [{"a": 1}]}, "sessions", "data[]"),
        ([{"a": 1}], "sessions", "[]"),
        ({"data": {"report": {"rows": [{"a": 1}]}}}, "report.rows", "data.report.rows"),
        ({"report": {"rows": [{"a": 1}]}}, "report.rows", "report.rows"),
        ({"data": {"messages": [{"a": 1}], "next_page_token": None}}, "messages", "data.messages"),
        ({"messages": [{"a": 1}], "next_page_token": None}, "messages", "messages"),
        ({"data": {"data_points": [{"a": 1}]}}, "data_points", "data.data_points"),
    ],
)
def test_extract_items_variants(body: object, key: str, label: str) -> None:
    assert extract_items(body, key) == ([{"a": 1}], label)


@pytest.mark.parametrize(
    "body",
    [{"data": {"other": []}}, {"data": "agent_12345"}, "text", 42, None, {"data": {"sessions": 3}}],
)
def test_extract_items_rejects_unknown_shapes(body: object) -> None:
    assert extract_items(body, "sessions") is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": {"next_page_token": "a"}}, ("a", "data.next_page_token")),
        ({"data": {"nextPageToken": "a"}}, ("a", "data.nextPageToken")),
        ({"data": {"report": {"next_page_token": "a"}}}, ("a", "data.report.next_page_token")),
        ({"next_page_token": "a"}, ("a", "next_page_token")),
        ({"nextPageToken": "a"}, ("a", "nextPageToken")),
        ({"data": {"next_page_token": ""}}, (None, "data.next_page_token")),
        ({"data": {"next_page_token": None}}, (None, "data.next_page_token")),
        ({"data": {"next_page_token": 2}}, ("2", "data.next_page_token")),
        ({"data": {}}, (None, None)),
        ([{"a": 1}], (None, None)),
    ],
)
def test_extract_token_locations(body: object, expected: tuple[str | None, str | None]) -> None:
    assert extract_token(body) == expected


def test_every_list_endpoint_has_an_items_key() -> None:
    for endpoint in ENDPOINTS.values():
        assert endpoint.single or endpoint.items_key
