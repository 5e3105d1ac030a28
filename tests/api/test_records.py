"""The tolerant reader: key casing, aliases, secret stripping, timestamps and drift.

Field names and timestamp formats vary across Robofy's docs and clients; these tables pin what
the reader accepts, and what it must never keep (secrets).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from robofy_etl.api import ENDPOINTS, find_drift, normalize_record, parse_timestamp
from robofy_etl.api.records import (
    is_secret_key,
    iter_path,
    redact_text,
    snake_case,
    timestamp_format,
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("session_id", "session_id"),
        ("sessionId", "session_id"),
        ("SessionId", "session_id"),
        ("createdOn", "created_on"),
        ("lastMessageTime", "last_message_time"),
        ("contextId", "context_id"),
        ("LLMApiKey", "llm_api_key"),
        ("isReady", "is_ready"),
        ("avatarURL", "avatar_url"),
        ("website-url", "website_url"),
        ("id", "id"),
        ("data_points", "data_points"),
        ("field2Name", "field2_name"),
    ],
)
def test_snake_case(key: str, expected: str) -> None:
    assert snake_case(key) == expected


def test_normalize_converts_keys_recursively_and_keeps_values() -> None:
    raw = {
        "id": "m1",
        "role": "ASSISTANT",
        "parts": [
            {
                "type": "text",
                "text": "Hi camelCase stays",
                "data": {"time": "2026-04-23 10:30:00", "contextId": "c1", "websiteUrl": "u"},
            }
        ],
    }
    record = normalize_record(ENDPOINTS["transcript"], raw)
    assert record == {
        "id": "m1",
        "role": "ASSISTANT",
        "parts": [
            {
                "type": "text",
                "text": "Hi camelCase stays",
                "data": {"time": "2026-04-23 10:30:00", "context_id": "c1", "website_url": "u"},
            }
        ],
    }
    assert raw["parts"][0]["data"]["contextId"] == "c1"  # the input is not modified


@pytest.mark.parametrize(
    ("endpoint", "raw", "expected"),
    [
        ("chatbots", {"id": "bot1", "name": "A"}, {"chatbot_id": "bot1", "name": "A"}),
        ("chatbot", {"Id": "bot1"}, {"chatbot_id": "bot1"}),
        # both present: the canonical key wins and the alias stays visible as drift
        ("chatbots", {"id": 7, "chatbotId": "bot1"}, {"id": 7, "chatbot_id": "bot1"}),
        ("sessions", {"visitorName": "Ann"}, {"user_profile_name": "Ann"}),
        ("sessions", {"visitor_name": "Ann"}, {"user_profile_name": "Ann"}),
        (
            "sessions",
            {"user_profile_name": "Ann", "visitor_name": "B"},
            {"user_profile_name": "Ann", "visitor_name": "B"},
        ),
        ("projects", {"id": 3}, {"id": 3}),  # no alias outside chatbots
        ("sessions", {"createdOn": "x"}, {"created_on": "x"}),
    ],
)
def test_aliases(endpoint: str, raw: dict, expected: dict) -> None:
    assert normalize_record(ENDPOINTS[endpoint], raw) == expected


@pytest.mark.parametrize(
    ("key", "stripped"),
    [
        # stripped: the final word-part names a secret
        ("llm_api_key", True),
        ("llmApiKey", True),
        ("api_key", True),
        ("apiKey", True),
        ("apikey", True),
        ("x-api-key", True),
        ("secret", True),
        ("client_secret", True),
        ("webhook_secret", True),
        ("password", True),
        ("smtp_password", True),
        ("passwd", True),
        ("token", True),
        ("access_token", True),
        ("refreshToken", True),
        ("auth_token", True),
        ("private_key", True),
        ("secret_key", True),
        ("aws_access_key", True),
        ("credentials", True),
        ("openai_key", True),
        ("openaiKey", True),
        ("llm_key", True),
        ("license_key", True),
        ("api_keys", True),
        ("private_key_pem", True),
        ("api_key_v2", True),
        ("client_secrets", True),
        ("signing_key", True),
        ("authorization", True),
        ("db_passwords", True),
        # stripped whatever the case and separators (issue 8)
        ("LLMAPIKEY", True),
        ("llmapikey", True),
        ("Llm.Api.Key", True),
        ("LLM_API_KEY", True),
        ("API-KEY", True),
        ("APIKEYS", True),
        ("AUTHTOKEN", True),
        ("githubtoken", True),
        ("bearer", True),
        ("Bearer", True),
        ("bearerToken", True),
        ("pwd", True),
        ("user_pwd", True),
        ("userPwd", True),
        ("PASSWORD", True),
        ("SMTPPASSWORD", True),
        ("ClientSecret", True),
        ("clientsecret", True),
        ("PRIVATEKEYPEM", True),
        ("Authorization", True),
        ("CREDENTIALS", True),
        # kept: pagination, counters, ordinary fields that merely mention the words
        ("next_page_token", False),
        ("nextPageToken", False),
        ("tokens_used", False),
        ("token_count", False),
        ("prompt_tokens", False),
        ("password_set_at", False),
        ("secretary", False),
        ("key", False),
        ("key_fields", False),
        ("monkey", False),
        ("session_id", False),
        ("context_id", False),
        ("page_token", False),
        ("primary_key", False),
        ("sort_key", False),
        ("keyboard_layout", False),
        ("NEXTPAGETOKEN", False),
        ("next-page-token", False),
        ("nexttoken", False),
        ("PrimaryKey", False),
        ("keywords", False),
        ("KEYWORDS", False),
        ("MONKEY", False),
        ("hockey_team", False),
        ("OPENAIKEY", False),  # `key` glued to a word cannot be told from `monkey`
        ("maxtokens", False),
        ("signature", False),  # an e-mail signature, not a credential
        ("passwordsetat", False),
    ],
)
def test_secret_rule(key: str, stripped: bool) -> None:
    assert is_secret_key(snake_case(key)) is stripped
    record = normalize_record(ENDPOINTS["chatbots"], {"name": "a", key: "s3cr3t"})
    assert ("s3cr3t" not in record.values()) is stripped


def test_secrets_are_stripped_at_any_depth() -> None:
    raw = {
        "chatbotId": "bot1",
        "settings": {"llmApiKey": "sk-live", "tone": "warm", "nested": [{"accessToken": "t"}]},
        "integrations": [{"name": "crm", "clientSecret": "cs", "apiKey": "k"}],
    }
    record = normalize_record(ENDPOINTS["chatbots"], raw)
    assert record == {
        "chatbot_id": "bot1",
        "settings": {"tone": "warm", "nested": [{}]},
        "integrations": [{"name": "crm"}],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-15 10:30:00", datetime(2025, 1, 15, 10, 30)),
        ("2026-04-23T10:30:00", datetime(2026, 4, 23, 10, 30)),
        ("2026-08-12T01:02:03.000Z", datetime(2026, 8, 12, 1, 2, 3)),
        ("2026-08-12T01:02:03.123456Z", datetime(2026, 8, 12, 1, 2, 3, 123456)),
        ("2026-08-12T01:02:03+02:00", datetime(2026, 8, 11, 23, 2, 3)),
        ("2026-08-12T01:02:03.5-05:30", datetime(2026, 8, 12, 6, 32, 3, 500000)),
        ("2026-08-12 01:02:03+00:00", datetime(2026, 8, 12, 1, 2, 3)),
        (" 2026-04-23T10:30:00 ", datetime(2026, 4, 23, 10, 30)),
        ("2026-04-23", datetime(2026, 4, 23)),
        (None, None),
        ("", None),
        ("string", None),
        ("23/04/2026 10:30", None),
        ("2026-13-45T99:00:00", None),
        (1714000000, None),
        (["2026-04-23"], None),
    ],
)
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    result = parse_timestamp(value)
    assert result == expected
    if result is not None:
        assert result.tzinfo is None


def test_parse_timestamp_reads_naive_values_in_the_configured_zone() -> None:
    assert parse_timestamp("2026-07-01 12:00:00", "Europe/Berlin") == datetime(2026, 7, 1, 10, 0)
    assert parse_timestamp("2026-01-01 12:00:00", "Europe/Berlin") == datetime(2026, 1, 1, 11, 0)
    # an explicit offset wins over the naive zone
    assert parse_timestamp("2026-07-01T12:00:00Z", "Europe/Berlin") == datetime(2026, 7, 1, 12, 0)


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("2025-01-15 10:30:00", "naive-space"),
        ("2026-04-23T10:30:00", "iso"),
        ("2026-04-23T10:30:00Z", "iso-z"),
        ("2026-08-12T01:02:03.000Z", "iso-fraction-z"),
        ("2026-04-23T10:30:00.25", "iso-fraction"),
        ("2026-04-23T10:30:00+02:00", "iso-offset"),
        ("2026-04-23", "date"),
        ("string", "unparseable"),
        ("", "empty"),
        (None, "null"),
        (12, "not-a-string"),
    ],
)
def test_timestamp_format(value: object, label: str) -> None:
    assert timestamp_format(value) == label


def test_iter_path_walks_lists() -> None:
    message = {
        "parts": [{"data": {"time": "a"}}, {"data": {}}, {"text": "x"}, {"data": {"time": "b"}}]
    }
    assert list(iter_path(message, "parts[].data.time")) == ["a", "b"]
    assert list(iter_path({"created_on": "x"}, "created_on")) == ["x"]
    assert list(iter_path({}, "created_on")) == []


def test_find_drift() -> None:
    record = {"session_id": "s", "created_on": "x", "surprise": 1}
    added, missing = find_drift(ENDPOINTS["sessions"], record)
    assert added == {"surprise"}
    assert missing == {
        "last_message_time",
        "last_message",
        "last_message_direction",
        "user_profile_name",
        "website_url",
        "status",
        "platform",
    }


def test_registry_key_fields_are_contract_fields() -> None:
    for endpoint in ENDPOINTS.values():
        assert set(endpoint.key_fields) <= set(endpoint.fields), endpoint.name
        top_level_timestamps = {
            p.split(".")[0].removesuffix("[]") for p in endpoint.timestamp_fields
        }
        assert top_level_timestamps <= set(endpoint.fields), endpoint.name


# --------------------------------------------------------------------------- secrets in values
# Issue 8: a secret must not reach raw.* because it sat in a value rather than under a secret
# key: a JSON document stored as a string, a URL with a key in its query, a pasted credential.

SK = "sk-proj-4fJk29XbQ7mZp1LrT8vWc3Yd"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.s1gnatur3Xyz"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # secret query parameters: the URL stays, the value is replaced
        ("https://hooks.example/in?key=abc123def456", "https://hooks.example/in?key=REDACTED"),
        (
            "https://api.example/v1?page=2&token=t0k3n&lang=en",
            "https://api.example/v1?page=2&token=REDACTED&lang=en",
        ),
        ("https://x.example/?api_key=AbC&q=1", "https://x.example/?api_key=REDACTED&q=1"),
        ("https://x.example/?API_KEY=AbC", "https://x.example/?API_KEY=REDACTED"),
        ("https://x.example/?apiKey=AbC", "https://x.example/?apiKey=REDACTED"),
        (
            "https://x.example/cb#access_token=xyz&state=s",
            "https://x.example/cb#access_token=REDACTED&state=s",
        ),
        (
            "https://x.example/?secret=s&password=p",
            "https://x.example/?secret=REDACTED&password=REDACTED",
        ),
        (
            "https://bucket.example/f.pdf?X-Amz-Signature=9a8b&X-Amz-Credential=AK%2F1&v=1",
            "https://bucket.example/f.pdf?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&v=1",
        ),
        ("https://x.example/?sig=abc%3D%3D", "https://x.example/?sig=REDACTED"),
        ("https://x.example/?signature=abc==", "https://x.example/?signature=REDACTED"),
        ("see https://x.example/?key=abc123 now", "see https://x.example/?key=REDACTED now"),
        (
            "<a href='https://x.example/?a=1&amp;token=zz'>",
            "<a href='https://x.example/?a=1&amp;token=REDACTED'>",
        ),
        # credentials by shape, anywhere in a string
        (f"Bearer {BEARER}", "Bearer REDACTED"),
        (f"authorization: bearer {BEARER}", "authorization: bearer REDACTED"),
        (f"my key is {SK}, thanks", "my key is REDACTED, thanks"),
        ("sk_live_51HqLyjWDarjtT1zdp7dcXQ2", "REDACTED"),
        ("sk-ant-api03-Xq9s8d7f6g5h4j3k2l1", "REDACTED"),
    ],
)
def test_secrets_inside_strings_are_redacted(value: str, expected: str) -> None:
    record = normalize_record(ENDPOINTS["sessions"], {"session_id": "s1", "website_url": value})
    assert record == {"session_id": "s1", "website_url": expected}


@pytest.mark.parametrize(
    "value",
    [
        # ordinary URLs and prose stay byte for byte
        "https://www.acme-dental.example/pricing?utm_source=google&utm_medium=cpc&q=monkey",
        "https://shop.example/search?keywords=key+rings&page=2&sort=price",
        "https://x.example/?next_page_token=abc&nextPageToken=def&page_token=g",
        "https://x.example/?primary_key=5&keyboard=de",
        "The bearer of this letter, Ann, may collect parcel 1234567890.",
        "Bearer bonds pay 5% until 2030; ask about our sk-8 parks and sk_rental desks.",
        "I used sk-learn for that, and scikit-learn-contrib-2024 too",
        "x = 1 + 2 == 3",
        "a?b=c is not a URL but keeps its value",
        "2026-04-23 10:30:00",
        '{"tone": "warm", "model": "gpt-4o", "url": "https://x.example/?page=2"}',
        '{"broken json": ',
        '["a", "b"]',
        '"quoted"',
        "",
    ],
)
def test_ordinary_strings_are_kept_exactly(value: str) -> None:
    record = normalize_record(ENDPOINTS["sessions"], {"last_message": value})
    assert record["last_message"] is value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f'{{"llmApiKey": "{SK}", "model": "gpt-4o"}}', {"model": "gpt-4o"}),
        ('{"LLMAPIKEY": "x", "model": "m"}', {"model": "m"}),
        ('{"settings": {"pwd": "hunter2", "tone": "warm"}}', {"settings": {"tone": "warm"}}),
        ('[{"name": "crm", "apiKey": "k"}, {"name": "mail"}]', [{"name": "crm"}, {"name": "mail"}]),
        (
            '{"callback": "https://x.example/?token=abc"}',
            {"callback": "https://x.example/?token=REDACTED"},
        ),
        ('{"note": "Bearer abcdefgh12345678XYZ"}', {"note": "Bearer REDACTED"}),
        # a JSON string inside a JSON string
        (
            '{"config": "{\\"secret\\": \\"s\\", \\"a\\": 1}"}',
            {"config": '{"a": 1}'},
        ),
        # keys keep their spelling: this is data, not a record
        ('{"llmApiKey": "k", "chatbotId": "b1"}', {"chatbotId": "b1"}),
    ],
)
def test_json_strings_lose_their_secret_keys(value: str, expected: object) -> None:
    record = normalize_record(ENDPOINTS["chatbots"], {"chatbot_id": "b1", "settings_json": value})
    assert json.loads(record["settings_json"]) == expected
    assert record["chatbot_id"] == "b1"


def test_ids_and_paging_tokens_are_never_rewritten() -> None:
    raw = {
        "id": f"{SK}",
        "session_id": "sk-session-0000000000000000000001",
        "contextId": "a?key=b",
        "next_page_token": "eyJvZmZzZXQiOjUwfQ==?token=1",
        "text": f"paste: {SK}",
    }
    record = normalize_record(ENDPOINTS["transcript"], raw)
    assert record == {
        "id": SK,
        "session_id": "sk-session-0000000000000000000001",
        "context_id": "a?key=b",
        "next_page_token": "eyJvZmZzZXQiOjUwfQ==?token=1",
        "text": "paste: REDACTED",
    }


def test_secrets_in_strings_are_redacted_at_any_depth_and_in_lists() -> None:
    raw = {
        "parts": [
            {"text": f"key {SK}", "data": {"websiteUrl": "https://x.example/?token=abc"}},
            [f"Bearer {BEARER}", "plain"],
        ],
    }
    record = normalize_record(ENDPOINTS["transcript"], raw)
    assert record == {
        "parts": [
            {"text": "key REDACTED", "data": {"website_url": "https://x.example/?token=REDACTED"}},
            ["Bearer REDACTED", "plain"],
        ]
    }
    assert raw["parts"][0]["text"] == f"key {SK}"  # the input is not modified


def test_redact_text_returns_the_same_object_when_clean() -> None:
    text = "https://www.acme-dental.example/book?utm_source=x"
    assert redact_text(text) is text
