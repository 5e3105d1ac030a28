"""What a sync reads from the warehouse before it asks the API: the stored state it compares.

The sync never runs SQL itself: it calls ``Warehouse.active_chatbots()``, ``stored_keys()``...
(``interface.WarehouseLike``), which open a short connection and return the plain named tuples
below, so the sync layer holds no connection while it talks HTTP. The functions here are the
DuckDB queries behind those methods; ``pg/state.py`` has their PostgreSQL twins.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

__all__ = [
    "Chatbot",
    "StoredKey",
    "StoredSession",
    "active_chatbots",
    "active_project_ids",
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


ACTIVE_PROJECTS_SQL = "select project_id from raw.robofy__projects where not _is_deleted order by 1"
ACTIVE_CHATBOTS_SQL = (
    "select chatbot_id, project_id from raw.robofy__chatbots where not _is_deleted order by 1"
)


def active_project_ids(conn: duckdb.DuckDBPyConnection) -> list[int]:
    """Every project not marked deleted."""
    return [int(r[0]) for r in conn.execute(ACTIVE_PROJECTS_SQL).fetchall()]


def active_chatbots(conn: duckdb.DuckDBPyConnection) -> list[Chatbot]:
    """Every chatbot not marked deleted, by chatbot_id."""
    return [Chatbot(str(r[0]), int(r[1])) for r in conn.execute(ACTIVE_CHATBOTS_SQL).fetchall()]
