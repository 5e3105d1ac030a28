"""What a sync reads from the warehouse before it asks the API: the stored state it compares.

Every read opens a short connection and returns plain named tuples, so the sync layer holds no
connection while it talks HTTP and reads no SQL of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import NamedTuple

from robofy_etl.warehouse import ledger
from robofy_etl.warehouse.duckdb import Warehouse

__all__ = [
    "Chatbot",
    "StoredKey",
    "StoredSession",
    "active_chatbots",
    "active_project_ids",
    "outstanding",
    "stored_keys",
    "stored_sessions",
]


class Chatbot(NamedTuple):
    """A live chatbot and the project it belongs to."""

    chatbot_id: str
    project_id: int


class StoredSession(NamedTuple):
    """What the warehouse holds of one session (see ``Warehouse.session_watermarks``)."""

    watermark: str | None  # its listing's ``last_message_time``, as received
    day: str  # ``_slice``: the day it started
    digest: str  # md5 of the stored listing record


class StoredKey(NamedTuple):
    """One stored row of a windowed raw table."""

    chatbot_id: str
    key: str
    day: str


def active_project_ids(wh: Warehouse) -> list[int]:
    """Every project not marked deleted."""
    with wh.connect(read_only=False) as conn:
        rows = conn.execute(
            "select project_id from raw.robofy__projects where not _is_deleted order by 1"
        ).fetchall()
    return [int(r[0]) for r in rows]


def active_chatbots(wh: Warehouse) -> list[Chatbot]:
    """Every chatbot not marked deleted, by chatbot_id."""
    with wh.connect(read_only=False) as conn:
        rows = conn.execute(
            "select chatbot_id, project_id from raw.robofy__chatbots"
            " where not _is_deleted order by 1"
        ).fetchall()
    return [Chatbot(str(r[0]), int(r[1])) for r in rows]


def stored_sessions(
    wh: Warehouse, chatbot_ids: Sequence[str], day_from: date, day_to: date
) -> dict[tuple[str, str], StoredSession]:
    """``(chatbot_id, session_id) -> StoredSession`` of the sessions that started in
    ``[day_from, day_to)``, for ``chatbot_ids``."""
    return {
        key: StoredSession(*value)
        for key, value in wh.session_watermarks(chatbot_ids, day_from, day_to).items()
    }


def stored_keys(
    wh: Warehouse,
    table: str,
    key_column: str,
    chatbot_ids: Sequence[str],
    day_from: date,
    day_to: date,
) -> list[StoredKey]:
    """The rows of ``raw.<table>`` in ``[day_from, day_to)``, for ``chatbot_ids``.

    ``table`` and ``key_column`` come from the stream registry, never from input.
    """
    with wh.connect() as conn:
        rows = ledger.stored_keys(conn, table, key_column, chatbot_ids, str(day_from), str(day_to))
    return [StoredKey(*row) for row in rows]


def outstanding(wh: Warehouse, table: str) -> dict[tuple[str, str], ledger.Outstanding]:
    """``(chatbot_id, item) -> Outstanding``: the work of ``table`` earlier runs left undone."""
    with wh.connect() as conn:
        return {(o.chatbot_id, o.item): o for o in ledger.outstanding(conn, table)}
