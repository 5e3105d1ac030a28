"""Row mapping: one API record -> one raw-table row (typed keys, ``_payload``, ``_slice``).

Python lands records faithfully; typing and business logic live in ``sql/staging``. Each
function here maps the records of one stream; the key fields they read are those the stream
registry (``robofy_etl.sync.registry``) names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from robofy_etl.sync.registry import MESSAGES
from robofy_etl.warehouse.load import encode_payload

if TYPE_CHECKING:
    from robofy_etl.sync.report import Tracker

MESSAGES_TABLE = MESSAGES.name
# Plausible timestamps: anything earlier, or more than this far ahead of the clock, is a glitch.
PLAUSIBLE_FROM = datetime(2015, 1, 1)
PLAUSIBLE_AHEAD = timedelta(days=1)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def day_of(moment: datetime) -> str:
    return moment.date().isoformat()


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --------------------------------------------------------------------------- snapshots


def project_row(t: Tracker, record: Mapping[str, Any], project_id: int) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "created_at": t.ts(record.get("created_on")),
        "updated_at": t.ts(record.get("updated_on")),
        "_payload": record,
        "_slice": "snapshot",
    }


def chatbot_row(
    t: Tracker, record: Mapping[str, Any], chatbot_id: str, project_id: int
) -> dict[str, Any]:
    return {
        "chatbot_id": chatbot_id,
        "project_id": as_int(record.get("project_id")) or project_id,
        "created_at": t.ts(record.get("created_on")),
        "updated_at": t.ts(record.get("updated_on")),
        "_payload": record,
        "_slice": "snapshot",
    }


# --------------------------------------------------------------------------- sessions


class SessionRow(NamedTuple):
    """One listed session, compact: its payload is already serialized (far smaller than the
    record dict while a pass's listing is held in memory)."""

    chatbot_id: str
    session_id: str
    project_id: int
    started_at: datetime
    last_message_at: datetime | None
    payload: str  # the record as JSON (``_payload``)
    day: str  # its start day (``_slice``)

    @property
    def key(self) -> tuple[str, str]:
        return (self.chatbot_id, self.session_id)


_SESSION_COLUMNS = (
    ("chatbot_id", pa.string()),
    ("session_id", pa.string()),
    ("project_id", pa.int64()),
    ("started_at", pa.timestamp("us")),
    ("last_message_at", pa.timestamp("us")),
    ("_payload", pa.string()),
    ("_slice", pa.string()),
)


def session_row(
    t: Tracker,
    chatbot_id: str,
    session_id: str,
    project_id: int,
    started_at: datetime,
    record: Mapping[str, Any],
) -> SessionRow:
    """One listed session as a compact row in its start day's slice."""
    return SessionRow(
        chatbot_id,
        session_id,
        project_id,
        started_at,
        t.ts(record.get("last_message_time")),
        encode_payload(record),
        day_of(started_at),
    )


def session_table(rows: Sequence[SessionRow]) -> pa.Table:
    """Session rows as the Arrow batch the warehouse loads (payloads already serialized)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in _SESSION_COLUMNS]
    return pa.table(
        {
            name: pa.array(list(values), type=typ)
            for (name, typ), values in zip(_SESSION_COLUMNS, columns, strict=True)
        }
    )


def watermark(record: Mapping[str, Any]) -> str | None:
    """A session's ``last_message_time`` as received: compared with the stored one."""
    value = record.get("last_message_time")
    return None if value is None else str(value)


def digest(payload: str) -> str:
    """The md5 of a serialized payload, as DuckDB's ``md5(_payload::varchar)`` computes it."""
    return hashlib.md5(payload.encode(), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------- transcripts


def message_rows(
    t: Tracker,
    chatbot_id: str,
    session_id: str,
    project_id: int,
    day: str,
    records: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """One transcript's rows, and how many of its messages were quarantined.

    ``ordinal`` counts the messages kept, in API order. A message without an id, or with an
    impossible time (year 1, year 9999), is quarantined; a message repeated (the same id twice,
    e.g. across pages) is kept once, where it first appeared. Neither shifts the ordinals.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    rejected = 0
    for record in records:
        t.observe(MESSAGES_TABLE, record)
        message_id = as_str(record.get("id", record.get("message_id")))
        if message_id is None:
            t.reject(
                MESSAGES_TABLE,
                "missing message id ('id')",
                {**record, "chatbot_id": chatbot_id, "session_id": session_id},
            )
            rejected += 1
            continue
        if message_id in seen:
            continue
        sent_at, bad = t.checked_ts(message_time(record))
        if bad == "implausible":
            t.reject(
                MESSAGES_TABLE,
                f"implausible message time (before {PLAUSIBLE_FROM.year} or more than a day "
                f"ahead): {message_time(record)!r}",
                {**record, "chatbot_id": chatbot_id, "session_id": session_id},
            )
            rejected += 1
            continue
        seen.add(message_id)
        rows.append(
            {
                "chatbot_id": chatbot_id,
                "session_id": session_id,
                "message_id": message_id,
                "project_id": project_id,
                "ordinal": len(rows),
                "sent_at": sent_at,
                "_payload": record,
                "_slice": day,
            }
        )
    return rows, rejected


def message_time(record: Mapping[str, Any]) -> Any:
    """A message's time: its first part's ``data.time`` (InboxChatDto), else a top-level one."""
    parts = record.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("data"), dict):
                value = part["data"].get("time")
                if value:
                    return value
    for name in ("time", "created_at", "created_on", "timestamp"):
        if record.get(name):
            return record[name]
    return None


# --------------------------------------------------------------------------- leads, stats


def lead_row(
    record: Mapping[str, Any],
    lead_id: str,
    chatbot_id: str,
    project_id: int,
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "project_id": project_id,
        "chatbot_id": chatbot_id,
        "session_id": as_str(record.get("session_id")),
        "created_at": created_at,
        "_payload": record,
        "_slice": day_of(created_at),
    }


def stats_row(
    record: Mapping[str, Any], chatbot_id: str, project_id: int, stat_date: date
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "chatbot_id": chatbot_id,
        "stat_date": stat_date,
        "_payload": record,
        "_slice": stat_date.isoformat(),
    }
