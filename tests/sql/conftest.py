"""Fixtures for the SQL model tests: a DuckDB file whose raw.* tables hold a small, hand-written
Robofy account, and the same file with every model built.

The hand-written rows cover the awkward cases on purpose: a WhatsApp session without a
platform, multi-part and non-text messages, every role alias, a lead with a session and one
without, a soft-deleted chatbot, two versions of one key with different ``_loaded_at``, and
stats days with and without transcripts.

``seeded_warehouse`` is the seam: override it (for example with a warehouse filled by the real
pipeline from the simulator) and every generic test (grain, types, comments, docs/queries.md)
runs against that data instead. Tests that check hand-computed values ask for
``hand_seeded_warehouse`` directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from robofy_etl.warehouse import models
from robofy_etl.warehouse.tables import RAW_TABLES

LOADED_OLD = datetime(2026, 4, 24, 0, 0, 0)
LOADED = datetime(2026, 4, 26, 0, 0, 0)

BOT_WEB = "bot-web_1"
BOT_WA = "bot_wa-2"
BOT_OLD = "bot-old"
S1 = "a1b2c3d4-0000-4000-8000-000000000001"  # answered, multi-part, has a lead
S2 = "a1b2c3d4-0000-4000-8000-000000000002"  # greeting, then the visitor is left unanswered
S3 = "4915112345678"  # WhatsApp: phone number as session id, no platform field
S4 = "a1b2c3d4-0000-4000-8000-000000000004"  # listed, transcript not loaded


def ts(text: str) -> datetime:
    """A naive UTC timestamp, as the pipeline stores typed columns."""
    return datetime.fromisoformat(text)


def create_raw_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and raw tables exactly as tables.py describes them."""
    for schema in ("raw", "staging", "marts", "meta"):
        conn.execute(f"create schema if not exists {schema}")
    for table in RAW_TABLES.values():
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type in table.all_columns)
        conn.execute(f"create table {table.relation} ({columns})")


def insert_raw(conn: duckdb.DuckDBPyConnection, stream: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows into raw.<stream> through a pandas DataFrame.

    Each row gives the typed key columns plus ``payload`` (a dict, stored as ``_payload``);
    the lineage columns default to one seed run loaded at ``LOADED``.
    """
    table = RAW_TABLES[stream]
    records = []
    for row in rows:
        record = {name: row.get(name) for name, _ in table.columns}
        record["_payload"] = json.dumps(row["payload"])
        record["_loaded_at"] = row.get("_loaded_at", LOADED)
        record["_run_id"] = row.get("_run_id", "seed-run")
        record["_slice"] = row.get("_slice", "seed")
        if table.snapshot:
            record["_is_deleted"] = row.get("_is_deleted", False)
            record["_deleted_at"] = row.get("_deleted_at")
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    conn.register("seed_frame", frame)
    try:
        conn.execute(f"insert into {table.relation} by name select * from seed_frame")
    finally:
        conn.unregister("seed_frame")


def message(
    message_id: str,
    ordinal: int,
    role: str,
    sent_at: str,
    parts: list[dict[str, Any]],
    *,
    chatbot_id: str = BOT_WEB,
    session_id: str = S1,
    loaded_at: datetime = LOADED,
) -> dict[str, Any]:
    """One raw chat message row."""
    return {
        "chatbot_id": chatbot_id,
        "session_id": session_id,
        "message_id": message_id,
        "project_id": 1,
        "ordinal": ordinal,
        "sent_at": ts(sent_at),
        "_loaded_at": loaded_at,
        "payload": {"id": message_id, "role": role, "parts": parts},
    }


def text_part(text: str | None, time: str, url: str | None = None, **extra: Any) -> dict[str, Any]:
    """One message part; ``time`` is kept raw, as the API sends it."""
    data: dict[str, Any] = {"time": time, "context_id": "ctx-1"}
    if url is not None:
        data["website_url"] = url
    return {"type": extra.pop("type", "text"), "text": text, "data": data, **extra}


PRICING = "https://acme.example/pricing"

PROJECTS = [
    {
        "project_id": 1,
        "created_at": ts("2025-01-10 08:00:00"),
        "_loaded_at": LOADED_OLD,
        "payload": {"id": 1, "name": "Acme (old name)", "created_on": "2025-01-10 08:00:00"},
    },
    {
        "project_id": 1,
        "created_at": ts("2025-01-10 08:00:00"),
        "updated_at": ts("2026-04-20 12:00:00"),
        "payload": {
            "id": 1,
            "name": "Acme Support",
            "description": "Support bots",
            "website_url": "https://acme.example",
            "timezone": "Europe/Berlin",
            "created_on": "2025-01-10 08:00:00",
            "updated_on": "2026-04-20T12:00:00.000Z",
            "some_new_field": {"nested": True},
        },
    },
    {
        "project_id": 2,
        "created_at": ts("2025-06-01 00:00:00"),
        "payload": {"id": 2, "name": "Beta Shop", "created_on": "2025-06-01T02:00:00+02:00"},
    },
]

CHATBOTS = [
    {
        "chatbot_id": BOT_WEB,
        "project_id": 1,
        "created_at": ts("2025-02-01 09:00:00"),
        "updated_at": ts("2026-04-01 09:00:00"),
        "payload": {
            "chatbot_id": BOT_WEB,
            "project_id": 1,
            "name": "Acme Web Assistant",
            "type": 1,
            "access_type": 0,
            "llm_source": 2,
            "language": "en",
            "is_ready": True,
            "file_usage": 3,
            "link_usage": 12,
            "storage_size": 2048,
        },
    },
    {
        "chatbot_id": BOT_WA,
        "project_id": 1,
        "created_at": ts("2025-03-01 09:00:00"),
        "payload": {
            "chatbot_id": BOT_WA,
            "project_id": 1,
            "name": "Acme WhatsApp",
            "language": "de",
            "is_ready": True,
        },
    },
    {
        "chatbot_id": BOT_OLD,
        "project_id": 2,
        "_is_deleted": True,
        "_deleted_at": ts("2026-04-10 00:00:00"),
        "payload": {
            "chatbot_id": BOT_OLD,
            "project_id": 2,
            "name": "Legacy bot",
            "is_ready": False,
        },
    },
]

SESSIONS = [
    {
        "chatbot_id": BOT_WEB,
        "session_id": S1,
        "project_id": 1,
        "started_at": ts("2026-04-23 10:30:00"),
        "last_message_at": ts("2026-04-23 10:34:00"),
        "_loaded_at": LOADED_OLD,
        "payload": {"session_id": S1, "status": "active", "platform": "web"},
    },
    {
        "chatbot_id": BOT_WEB,
        "session_id": S1,
        "project_id": 1,
        "started_at": ts("2026-04-23 10:30:00"),
        "last_message_at": ts("2026-04-23 10:35:00"),
        "payload": {
            "session_id": S1,
            "created_on": "2026-04-23T10:30:00",
            "last_message_time": "2026-04-23 10:35:00",
            "last_message": "Thanks!",
            "last_message_direction": "USER",
            "user_profile_name": "Jane Doe",
            "website_url": PRICING,
            "status": "Closed",
            "platform": "web",
        },
    },
    {
        "chatbot_id": BOT_WEB,
        "session_id": S2,
        "project_id": 1,
        "started_at": ts("2026-04-23 14:00:00"),
        "last_message_at": ts("2026-04-23 14:00:20"),
        "payload": {
            "session_id": S2,
            "last_message": "Is anyone there?",
            "last_message_direction": "user",
            "website_url": "https://acme.example/",
            "status": "active",
            "platform": "web",
        },
    },
    {
        "chatbot_id": BOT_WA,
        "session_id": S3,
        "project_id": 1,
        "started_at": ts("2026-04-24 09:00:00"),
        "last_message_at": ts("2026-04-24 09:01:30"),
        "payload": {
            "session_id": S3,
            "last_message": "Gern, ich schicke es Ihnen.",
            "last_message_direction": "Assistant",
            "user_profile_name": "Max Muster",
            "website_url": None,
            "status": "active",
        },
    },
    {
        "chatbot_id": BOT_WEB,
        "session_id": S4,
        "project_id": 1,
        "started_at": ts("2026-04-25 18:00:00"),
        "last_message_at": ts("2026-04-25 18:02:00"),
        "payload": {"session_id": S4, "status": "active"},
    },
]

MESSAGES = [
    # S1: user, assistant, visitor (text + image), agent (text + buttons), user
    message(
        "m1", 0, "user", "2026-04-23 10:30:00", [text_part("Hi", "2026-04-23 10:30:00", PRICING)]
    ),
    message(
        "m2",
        1,
        "assistant",
        "2026-04-23 10:30:05",
        [text_part("Hello", "2026-04-23T10:30:05Z", PRICING)],
        loaded_at=LOADED_OLD,
    ),
    message(
        "m2",
        1,
        "assistant",
        "2026-04-23 10:30:05",
        [text_part("Hello! How can I help?", "2026-04-23T10:30:05Z", PRICING)],
    ),
    message(
        "m3",
        2,
        "Visitor",
        "2026-04-23 10:31:00",
        [
            text_part("What does the Pro plan cost?", "2026-04-23 10:31:00", PRICING),
            text_part("Per month?", "2026-04-23 10:31:00", PRICING),
            text_part(
                None,
                "2026-04-23 10:31:00",
                PRICING,
                type="image",
                image_url="https://cdn.example/screenshot.png",
            ),
        ],
    ),
    message(
        "m4",
        3,
        "AGENT",
        "2026-04-23 10:31:30",
        [
            text_part("Pro is 49 EUR per month.", "2026-04-23T12:31:30+02:00"),
            text_part(None, "2026-04-23T12:31:30+02:00", type="buttons"),
        ],
    ),
    message(
        "m5",
        4,
        "user",
        "2026-04-23 10:35:00",
        [text_part("Thanks!", "2026-04-23 10:35:00", PRICING)],
    ),
    # S2: greeting, then an unanswered question
    message(
        "m6",
        0,
        "assistant",
        "2026-04-23 14:00:00",
        [text_part("Welcome!", "2026-04-23 14:00:00")],
        session_id=S2,
    ),
    message(
        "m7",
        1,
        "user",
        "2026-04-23 14:00:20",
        [text_part("Is anyone there?", "2026-04-23 14:00:20")],
        session_id=S2,
    ),
    # S3 (WhatsApp): inbound/outbound roles, no website URL anywhere
    message(
        "w1",
        0,
        "inbound",
        "2026-04-24 09:00:00",
        [text_part("Hallo", "2026-04-24 09:00:00")],
        chatbot_id=BOT_WA,
        session_id=S3,
    ),
    message(
        "w2",
        1,
        "outbound",
        "2026-04-24 09:00:12",
        [text_part("Hi! Wie kann ich helfen?", "2026-04-24 09:00:12")],
        chatbot_id=BOT_WA,
        session_id=S3,
    ),
    message(
        "w3",
        2,
        "user",
        "2026-04-24 09:01:00",
        [text_part("Ich brauche ein Angebot", "2026-04-24 09:01:00")],
        chatbot_id=BOT_WA,
        session_id=S3,
    ),
    message(
        "w4",
        3,
        "assistant",
        "2026-04-24 09:01:30",
        [text_part("Gern, ich schicke es Ihnen.", "2026-04-24 09:01:30")],
        chatbot_id=BOT_WA,
        session_id=S3,
    ),
]

LEADS = [
    {
        "lead_id": "lead_1",
        "project_id": 1,
        "chatbot_id": BOT_WEB,
        "session_id": S1,
        "created_at": ts("2026-04-23 10:34:00"),
        "payload": {
            "id": "lead_1",
            "created_at": "2026-04-23 10:34:00",
            "source": "chatbot",
            "page_url": PRICING,
            "ip_address": "192.168.1.1",
            "session_id": S1,
            "lead_data": [
                {"field_name": "name", "field_type": "text", "field_value": "Jane Doe"},
                {
                    "field_name": "email",
                    "field_type": "email",
                    "field_value": " Jane.Doe@Example.com ",
                },
                {"field_name": "phone", "field_type": "phone", "field_value": "+49 151 000000"},
                {"field_name": "company", "field_type": "text", "field_value": "Doe GmbH"},
            ],
        },
    },
    {
        "lead_id": "lead_2",
        "project_id": 1,
        "chatbot_id": BOT_WEB,
        "session_id": None,
        "created_at": ts("2026-04-24 08:00:00"),
        "payload": {
            "id": "lead_2",
            "created_at": "2026-04-24T08:00:00Z",
            "source": "form",
            "page_url": "https://acme.example/contact",
            "lead_data": [
                {"field_name": "first_name", "field_type": "text", "field_value": "Max"},
                {"field_name": "last_name", "field_type": "text", "field_value": "Muster"},
                {"field_name": "E-Mail", "field_type": "email", "field_value": "max@example.com"},
                {"field_name": "first_name", "field_type": "text", "field_value": "Maximilian"},
            ],
        },
    },
    {
        "lead_id": "lead_3",
        "project_id": 1,
        "chatbot_id": BOT_WA,
        "session_id": S3,
        "created_at": ts("2026-04-24 09:02:00"),
        "payload": {
            "id": "lead_3",
            "source": "chatbot",
            "lead_data": [
                {"field_name": "phone", "field_type": "tel", "field_value": "+4915112345678"}
            ],
        },
    },
]


def stats(
    day: str, total: int, user: int, ai: int, sessions: int, leads: int, **row: Any
) -> dict[str, Any]:
    """One raw message-stats row for the web chatbot."""
    return {
        "project_id": 1,
        "chatbot_id": row.pop("chatbot_id", BOT_WEB),
        "stat_date": datetime.fromisoformat(day).date(),
        **row,
        "payload": {
            "date": day,
            "total_messages": total,
            "user_messages": user,
            "ai_messages": ai,
            "sessions": sessions,
            "leads": leads,
            "failed_messages": 0,
        },
    }


MESSAGE_STATS = [
    stats("2026-04-22", 0, 0, 0, 0, 0),  # a quiet day: stats only
    stats("2026-04-23", 5, 3, 2, 2, 1, _loaded_at=LOADED_OLD),  # restated later
    stats("2026-04-23", 7, 4, 3, 2, 1),  # agrees with the transcripts
    stats("2026-04-24", 3, 2, 1, 1, 1),  # no transcripts that day: disagrees
]


def seed(conn: duckdb.DuckDBPyConnection) -> None:
    """Create raw.* and fill it with the hand-written account above."""
    create_raw_tables(conn)
    insert_raw(conn, "robofy__projects", PROJECTS)
    insert_raw(conn, "robofy__chatbots", CHATBOTS)
    insert_raw(conn, "robofy__inbox_sessions", SESSIONS)
    insert_raw(conn, "robofy__chat_messages", MESSAGES)
    insert_raw(conn, "robofy__leads", LEADS)
    insert_raw(conn, "robofy__message_stats", MESSAGE_STATS)


@pytest.fixture(scope="session")
def hand_seeded_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file whose raw.* tables hold the hand-written rows of this module."""
    path = tmp_path_factory.mktemp("hand_seeded") / "robofy.duckdb"
    with duckdb.connect(str(path)) as conn:
        seed(conn)
    return path


@pytest.fixture(scope="session")
def seeded_warehouse(hand_seeded_warehouse: Path) -> Path:
    """The DuckDB file the generic tests run on: raw.* filled, nothing built yet.

    Override this fixture to run the generic tests on other data.
    """
    return hand_seeded_warehouse


@pytest.fixture(scope="session")
def _built_warehouses() -> Iterator[dict[Path, duckdb.DuckDBPyConnection]]:
    """Build each seeded file once per session; hand out one read-only connection to it."""
    built: dict[Path, duckdb.DuckDBPyConnection] = {}
    yield built
    for conn in built.values():
        conn.close()


def _build_once(
    path: Path, built: dict[Path, duckdb.DuckDBPyConnection]
) -> duckdb.DuckDBPyConnection:
    if path not in built:
        with duckdb.connect(str(path)) as conn:
            conn.execute("begin")
            models.build(conn)
            conn.execute("commit")
        built[path] = duckdb.connect(str(path), read_only=True)
    return built[path]


@pytest.fixture(scope="session")
def warehouse(
    seeded_warehouse: Path, _built_warehouses: dict[Path, duckdb.DuckDBPyConnection]
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``seeded_warehouse`` with every model built."""
    return _build_once(seeded_warehouse, _built_warehouses)


@pytest.fixture(scope="session")
def hand_warehouse(
    hand_seeded_warehouse: Path, _built_warehouses: dict[Path, duckdb.DuckDBPyConnection]
) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the hand-seeded warehouse with every model built."""
    return _build_once(hand_seeded_warehouse, _built_warehouses)
