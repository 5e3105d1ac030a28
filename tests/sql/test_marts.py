"""The marts are the public interface (design.md section 3): these tests pin its contract.

Generic checks (columns, types, grain, comments) run on ``warehouse``, which any seeded DuckDB
file can feed; the hand-computed values run on the hand-written rows of conftest.py.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from robofy_etl.warehouse import docs, models

# ids of the hand-written rows in conftest.py (conftest is not importable as a module)
BOT_WEB = "bot-web_1"
BOT_WA = "bot_wa-2"
BOT_OLD = "bot-old"
S1 = "a1b2c3d4-0000-4000-8000-000000000001"
S2 = "a1b2c3d4-0000-4000-8000-000000000002"
S3 = "4915112345678"
S4 = "a1b2c3d4-0000-4000-8000-000000000004"

# design.md section 3: minimum columns, with the type where the contract states one (or where
# "all timestamps are UTC TIMESTAMP" and the obvious key types make it unambiguous).
CONTRACT: dict[str, dict[str, str | None]] = {
    "marts.projects": {
        "project_id": "BIGINT",
        "name": None,
        "created_at": "TIMESTAMP",
        "is_deleted": "BOOLEAN",
    },
    "marts.chatbots": {
        "chatbot_id": "VARCHAR",
        "project_id": "BIGINT",
        "name": None,
        "language": None,
        "is_ready": "BOOLEAN",
        "created_at": "TIMESTAMP",
        "updated_at": "TIMESTAMP",
        "is_deleted": "BOOLEAN",
    },
    "marts.sessions": {
        "chatbot_id": "VARCHAR",
        "session_id": "VARCHAR",
        "project_id": "BIGINT",
        "platform": None,
        "status": None,
        "visitor_name": None,
        "website_url": None,
        "started_at": "TIMESTAMP",
        "last_message_at": "TIMESTAMP",
        "message_count": "INTEGER",
        "has_lead": "BOOLEAN",
    },
    "marts.messages": {
        "chatbot_id": "VARCHAR",
        "session_id": "VARCHAR",
        "message_id": "VARCHAR",
        "project_id": "BIGINT",
        "ordinal": "INTEGER",
        "role": None,
        "text": None,
        "sent_at": "TIMESTAMP",
        "website_url": None,
    },
    "marts.leads": {
        "lead_id": "VARCHAR",
        "project_id": "BIGINT",
        "chatbot_id": "VARCHAR",
        "session_id": "VARCHAR",
        "created_at": "TIMESTAMP",
        "source": None,
        "page_url": None,
        "name": None,
        "email": None,
        "phone": None,
    },
    "marts.lead_fields": {
        "lead_id": "VARCHAR",
        "field_name": "VARCHAR",
        "field_type": None,
        "field_value": None,
    },
    "marts.message_stats_daily": {
        "project_id": "BIGINT",
        "chatbot_id": "VARCHAR",
        "stat_date": "DATE",
        "total_messages": None,
        "user_messages": None,
        "ai_messages": None,
        "sessions": None,
        "leads": None,
        "failed_messages": None,
    },
    "marts.chatbot_daily_activity": {
        "chatbot_id": "VARCHAR",
        "activity_date": "DATE",
        "sessions_started": None,
        "messages": None,
        "user_messages": None,
        "ai_messages": None,
        "leads": None,
        "stats_total_messages": None,
        "stats_user_messages": None,
        "stats_ai_messages": None,
        "stats_sessions": None,
        "stats_leads": None,
        "stats_failed_messages": None,
        "messages_diff": None,
    },
}

MODELS = models.discover()
MARTS = [m for m in MODELS if m.schema == "marts"]


def test_every_design_mart_has_a_model_file() -> None:
    assert {m.name for m in MARTS} == set(CONTRACT)


@pytest.mark.parametrize("relation", sorted(CONTRACT))
def test_mart_has_the_contract_columns_and_types(
    warehouse: duckdb.DuckDBPyConnection, relation: str
) -> None:
    columns = {name: data_type for name, data_type, _ in docs.describe(warehouse)[relation]}
    missing = sorted(set(CONTRACT[relation]) - set(columns))
    assert not missing, f"{relation} lacks contract columns {missing}"
    wrong = {
        name: (columns[name], expected)
        for name, expected in CONTRACT[relation].items()
        if expected is not None and columns[name] != expected
    }
    assert not wrong, f"{relation}: (actual, expected) types {wrong}"


@pytest.mark.parametrize("relation", sorted(CONTRACT))
def test_timestamp_columns_are_utc_timestamps(
    warehouse: duckdb.DuckDBPyConnection, relation: str
) -> None:
    for name, data_type, _ in docs.describe(warehouse)[relation]:
        if name.endswith("_at"):
            assert data_type == "TIMESTAMP", f"{relation}.{name} is {data_type}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_grain_is_unique_and_keys_not_null(
    warehouse: duckdb.DuckDBPyConnection, model: models.Model
) -> None:
    keys = model.key_columns
    assert keys, f"{model.path}: header has no parseable '-- grain: one row per ...' line"
    key_list = ", ".join(keys)
    duplicates = warehouse.execute(
        f"select {key_list}, count(*) from {model.name} group by all having count(*) > 1 limit 5"
    ).fetchall()
    assert not duplicates, f"{model.name} grain ({key_list}) is not unique: {duplicates}"
    null_keys = " or ".join(f"{key} is null" for key in keys)
    nulls = warehouse.execute(f"select count(*) from {model.name} where {null_keys}").fetchall()
    assert nulls[0][0] == 0, f"{model.name} has rows with a null key column"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_column_has_a_comment(
    warehouse: duckdb.DuckDBPyConnection, model: models.Model
) -> None:
    described = docs.describe(warehouse)[model.name]
    undocumented = [name for name, _, comment in described if not (comment or "").strip()]
    assert not undocumented, f"{model.path}: add header docs for {undocumented}"
    table_comment = warehouse.execute(
        "select comment from duckdb_tables() where schema_name = ? and table_name = ? "
        "union all "
        "select comment from duckdb_views() where schema_name = ? and view_name = ?",
        [model.schema, model.relation] * 2,
    ).fetchall()
    assert table_comment
    assert model.grain in table_comment[0][0]


def test_marts_and_staging_are_tables(warehouse: duckdb.DuckDBPyConnection) -> None:
    """Staging is materialized too: each payload is parsed once, when its raw row changes."""
    tables = {
        f"{schema}.{name}"
        for schema, name in warehouse.execute(
            "select schema_name, table_name from duckdb_tables()"
            " where schema_name in ('marts', 'staging')"
        ).fetchall()
    }
    assert tables == {m.name for m in MODELS}


def test_marts_are_not_empty(warehouse: duckdb.DuckDBPyConnection) -> None:
    empty = [
        m.name
        for m in MARTS
        if warehouse.execute(f"select count(*) from {m.name}").fetchall()[0][0] == 0
    ]
    assert not empty


# --- hand-computed values on the rows of conftest.py ---------------------------------------


def one(conn: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> dict[str, object]:
    """The single row a query returns, as a column -> value dict."""
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(names, rows[0], strict=True))


def session(conn: duckdb.DuckDBPyConnection, chatbot_id: str, session_id: str) -> dict[str, object]:
    return one(
        conn,
        "select * from marts.sessions where chatbot_id = ? and session_id = ?",
        [chatbot_id, session_id],
    )


def test_answered_session_measures(hand_warehouse: duckdb.DuckDBPyConnection) -> None:
    row = session(hand_warehouse, BOT_WEB, S1)
    assert row["message_count"] == 5
    assert (row["user_message_count"], row["assistant_message_count"]) == (3, 2)
    assert row["turns"] == 2
    assert row["first_response_seconds"] == 5.0
    assert row["is_unanswered"] is False
    assert row["has_lead"] is True
    assert row["lead_count"] == 1
    assert row["duration_seconds"] == 300.0
    assert row["status"] == "closed"
    assert row["last_message_direction"] == "user"
    assert row["chatbot_name"] == "Acme Web Assistant"
    assert row["started_date"] == date(2026, 4, 23)


def test_greeting_then_silence_is_unanswered(hand_warehouse: duckdb.DuckDBPyConnection) -> None:
    row = session(hand_warehouse, BOT_WEB, S2)
    assert row["message_count"] == 2
    assert row["turns"] == 0
    assert row["first_response_seconds"] is None
    assert row["is_unanswered"] is True
    assert row["has_lead"] is False


def test_whatsapp_session_without_platform_is_inferred(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    row = session(hand_warehouse, BOT_WA, S3)
    assert row["platform"] == "whatsapp"
    assert row["website_url"] is None
    assert row["turns"] == 2
    assert row["first_response_seconds"] == 12.0
    assert row["has_lead"] is True
    assert row["last_message_direction"] == "assistant"


def test_session_without_transcript_has_zero_messages(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    row = session(hand_warehouse, BOT_WEB, S4)
    assert row["platform"] == "web"
    assert (row["message_count"], row["turns"], row["is_unanswered"]) == (0, 0, False)
    assert row["first_message_at"] is None


def test_messages_normalize_roles_and_join_text_parts(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    rows = hand_warehouse.execute(
        "select message_id, ordinal, role, role_raw, text, part_count, has_non_text, "
        "content_types, website_url, seconds_since_previous "
        "from marts.messages where chatbot_id = ? and session_id = ? order by ordinal",
        [BOT_WEB, S1],
    ).fetchall()
    pricing = "https://acme.example/pricing"
    assert rows == [
        ("m1", 0, "user", "user", "Hi", 1, False, "text", pricing, None),
        (
            "m2",
            1,
            "assistant",
            "assistant",
            "Hello! How can I help?",
            1,
            False,
            "text",
            pricing,
            5.0,
        ),
        (
            "m3",
            2,
            "user",
            "Visitor",
            "What does the Pro plan cost?\nPer month?",
            3,
            True,
            "image,text",
            pricing,
            55.0,
        ),
        # no URL in the parts: falls back to the session's website_url
        (
            "m4",
            3,
            "assistant",
            "AGENT",
            "Pro is 49 EUR per month.",
            2,
            True,
            "buttons,text",
            pricing,
            30.0,
        ),
        ("m5", 4, "user", "user", "Thanks!", 1, False, "text", pricing, 210.0),
    ]
    roles = hand_warehouse.execute(
        "select role_raw, role from marts.messages where session_id = ? order by ordinal", [S3]
    ).fetchall()
    assert roles == [
        ("inbound", "user"),
        ("outbound", "assistant"),
        ("user", "user"),
        ("assistant", "assistant"),
    ]


def test_staging_keeps_the_latest_version_of_a_key(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    assert one(hand_warehouse, "select name from marts.projects where project_id = ?", [1]) == {
        "name": "Acme Support"
    }
    texts = hand_warehouse.execute(
        "select text from staging.stg_robofy__chat_messages where message_id = 'm2'"
    ).fetchall()
    assert texts == [("Hello! How can I help?",)]
    stats = one(
        hand_warehouse,
        "select total_messages from marts.message_stats_daily "
        "where chatbot_id = ? and stat_date = ?",
        [BOT_WEB, date(2026, 4, 23)],
    )
    assert stats == {"total_messages": 7}


def test_deleted_chatbot_is_kept_and_marked(hand_warehouse: duckdb.DuckDBPyConnection) -> None:
    row = one(hand_warehouse, "select * from marts.chatbots where chatbot_id = ?", [BOT_OLD])
    assert row["is_deleted"] is True
    assert row["deleted_at"] is not None
    assert row["project_name"] == "Beta Shop"
    active = one(hand_warehouse, "select * from marts.chatbots where chatbot_id = ?", [BOT_WEB])
    assert (active["is_deleted"], active["storage_size_bytes"]) == (False, 2048)
    assert (active["session_count"], active["message_count"], active["lead_count"]) == (3, 7, 2)


def test_leads_pivot_form_fields(hand_warehouse: duckdb.DuckDBPyConnection) -> None:
    rows = hand_warehouse.execute(
        "select lead_id, session_id, platform, name, email, phone, company, field_count "
        "from marts.leads order by lead_id"
    ).fetchall()
    assert rows == [
        ("lead_1", S1, "web", "Jane Doe", "jane.doe@example.com", "+49 151 000000", "Doe GmbH", 4),
        ("lead_2", None, None, "Max Muster", "max@example.com", None, None, 4),
        ("lead_3", S3, "whatsapp", None, None, "+4915112345678", None, 1),
    ]


def test_lead_fields_keep_the_first_value_of_a_repeated_name(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    rows = hand_warehouse.execute(
        "select field_name, field_value, field_position from marts.lead_fields "
        "where lead_id = 'lead_2' order by field_position"
    ).fetchall()
    assert rows == [
        ("first_name", "Max", 1),
        ("last_name", "Muster", 2),
        ("E-Mail", "max@example.com", 3),
    ]


def test_daily_activity_reconciles_transcripts_with_stats(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    rows = hand_warehouse.execute(
        "select chatbot_id, activity_date, sessions_started, messages, user_messages, "
        "ai_messages, leads, has_stats, stats_total_messages, messages_diff "
        "from marts.chatbot_daily_activity order by chatbot_id, activity_date"
    ).fetchall()
    assert rows == [
        # stats only: a quiet day the stats API reports with zeros
        (BOT_WEB, date(2026, 4, 22), 0, 0, 0, 0, 0, True, 0, 0),
        # both sources agree (the stats row was restated from 5 to 7; the latest wins)
        (BOT_WEB, date(2026, 4, 23), 2, 7, 4, 3, 1, True, 7, 0),
        # stats report 3 messages the transcripts do not have
        (BOT_WEB, date(2026, 4, 24), 0, 0, 0, 0, 1, True, 3, -3),
        # transcripts only: no stats row, so no difference to report
        (BOT_WEB, date(2026, 4, 25), 1, 0, 0, 0, 0, False, None, None),
        (BOT_WA, date(2026, 4, 24), 1, 4, 2, 2, 1, False, None, None),
    ]


def test_project_totals(hand_warehouse: duckdb.DuckDBPyConnection) -> None:
    rows = hand_warehouse.execute(
        "select project_id, chatbot_count, session_count, lead_count, timezone "
        "from marts.projects order by project_id"
    ).fetchall()
    # project 2's only chatbot is deleted, so it has no active chatbots
    assert rows == [(1, 2, 4, 3, "Europe/Berlin"), (2, 0, 0, 0, None)]
