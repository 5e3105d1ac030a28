"""A glitch in one response never loses data (issue 8): multi-megabyte messages build.

A transcript message of a few megabytes used to load into raw.robofy__chat_messages and then
make every later model build fail with DuckDB's "Out of Memory Error" under the default memory
limit (ROBOFY_DUCKDB_MEMORY_LIMIT=160MB): the staging views parsed each payload up to three
times, and DuckDB's JSON parser keeps every document of a vector in memory at several times its
size. These tests build the repository's models with the ``Warehouse``'s default settings over
the hand-written rows of conftest.py plus such messages, and check that nothing is lost.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from robofy_etl.warehouse import Warehouse, models

from .conftest import BOT_WEB, SESSIONS, insert_raw, message, seed, text_part

# 10 MB of text with what JSON must escape: quotes, backslashes, newlines, non-ASCII.
LINE = 'He said "see C:\\docs" \u2013 \u00fcber?\n'
BIG_TEXT = (LINE * (10_000_000 // len(LINE) + 1))[:10_000_000]
BIG_DAY = "2026-04-25 09:00:00"


def glitch_session(session_id: str, preview: str) -> dict[str, Any]:
    """A listed session whose last-message preview repeats the huge message, as the API does."""
    row = dict(SESSIONS[-1])
    row["session_id"] = session_id
    row["payload"] = {**row["payload"], "session_id": session_id, "last_message": preview}
    return row


def big_message(session_id: str, message_id: str) -> dict[str, Any]:
    return message(
        message_id, 0, "user", BIG_DAY, [text_part(BIG_TEXT, BIG_DAY)], session_id=session_id
    )


def ordinary_messages(session_id: str, count: int) -> list[dict[str, Any]]:
    """Messages of other transcripts, loaded between two large ones."""
    return [
        message(
            f"{session_id}-{n}",
            n,
            "assistant",
            BIG_DAY,
            [text_part(f"hi {n}", BIG_DAY)],
            session_id=session_id,
        )
        for n in range(count)
    ]


def build_with_defaults(path: Path) -> None:
    """Build every model the way the pipeline does: one Warehouse transaction, default limits."""
    wh = Warehouse(path)
    with wh.transaction(run_id="build") as tx:
        models.build(tx.conn)


def digest(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def texts(conn: duckdb.DuckDBPyConnection, message_ids: list[str]) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "select message_id, md5(text), length(text), role, part_count, content_types "
        "from marts.messages where list_contains(?, message_id)",
        [message_ids],
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "robofy.duckdb"
    with duckdb.connect(str(path)) as conn:
        seed(conn)
    return path


def test_a_10_mb_message_builds_under_the_default_memory_limit(
    seeded: Path, hand_warehouse: duckdb.DuckDBPyConnection
) -> None:
    with duckdb.connect(str(seeded)) as conn:
        insert_raw(conn, "robofy__inbox_sessions", [glitch_session("glitch", BIG_TEXT)])
        insert_raw(conn, "robofy__chat_messages", [big_message("glitch", "big")])

    build_with_defaults(seeded)

    with duckdb.connect(str(seeded), read_only=True) as conn:
        assert texts(conn, ["big"]) == {"big": (digest(BIG_TEXT), len(BIG_TEXT), "user", 1, "text")}
        preview = conn.execute(
            "select md5(last_message_preview), message_count from marts.sessions "
            "where chatbot_id = ? and session_id = 'glitch'",
            [BOT_WEB],
        ).fetchall()
        assert preview == [(digest(BIG_TEXT), 1)]
        # the ordinary rows come out exactly as without the large message
        for relation, where in [
            ("marts.messages", "message_id <> 'big'"),
            ("marts.sessions", "session_id <> 'glitch'"),
        ]:
            query = f"select * from {relation} where {where} order by all"
            assert conn.execute(query).fetchall() == hand_warehouse.execute(query).fetchall()


def test_several_10_mb_messages_build_under_the_default_memory_limit(seeded: Path) -> None:
    """Large messages from different days, with other transcripts loaded between them."""
    big_ids = [f"big{n}" for n in range(3)]
    with duckdb.connect(str(seeded)) as conn:
        for n, message_id in enumerate(big_ids):
            insert_raw(conn, "robofy__chat_messages", [big_message(f"glitch{n}", message_id)])
            # more than a DuckDB vector (2,048 rows) of other messages
            insert_raw(conn, "robofy__chat_messages", ordinary_messages(f"other{n}", 2_100))

    build_with_defaults(seeded)

    with duckdb.connect(str(seeded), read_only=True) as conn:
        expected = (digest(BIG_TEXT), len(BIG_TEXT), "user", 1, "text")
        assert texts(conn, big_ids) == dict.fromkeys(big_ids, expected)
        counts = conn.execute(
            "select count(*), count(distinct session_id) from marts.messages "
            "where session_id like 'other%'"
        ).fetchall()
        assert counts == [(3 * 2_100, 3)]
