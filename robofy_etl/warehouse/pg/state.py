"""The pipeline's own records in ``meta`` on PostgreSQL: twins of ``state.py`` and ``ledger.py``.

Same functions, arguments and results as the DuckDB modules, with a SQLAlchemy connection (in
the caller's transaction) instead of a DuckDB one. Where DuckDB registers an Arrow table of
values, PostgreSQL gets arrays and ``unnest``: one statement, one round trip. Also the two
window reads the sync makes (``session_watermarks``, ``stored_keys``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from robofy_etl.warehouse.ledger import Outstanding
from robofy_etl.warehouse.load import LoadCounts, day_string, encode_payload
from robofy_etl.warehouse.reads import ACTIVE_CHATBOTS_SQL, ACTIVE_PROJECTS_SQL, Chatbot
from robofy_etl.warehouse.state import _example

__all__ = [
    "active_chatbots",
    "active_project_ids",
    "audit",
    "clear_missing",
    "clear_outstanding",
    "count_misses",
    "get_state",
    "mark_outstanding",
    "outstanding",
    "quarantine",
    "record_drift",
    "session_watermarks",
    "set_state",
    "stored_keys",
]

logger = logging.getLogger(__name__)


def _sql(text: str) -> sa.TextClause:
    return sa.text(text)


# -- state.py ------------------------------------------------------------------------------------


def get_state(conn: sa.Connection, stream: str, scope: str) -> dict[str, Any] | None:
    """Read the sync state of ``(stream, scope)``, or None if it was never written."""
    row = conn.execute(
        _sql("select value::text from meta.sync_state where stream = :stream and scope = :scope"),
        {"stream": stream, "scope": scope},
    ).first()
    if row is None:
        return None
    value: dict[str, Any] = json.loads(row[0])
    return value


def set_state(
    conn: sa.Connection,
    stream: str,
    scope: str,
    value: Mapping[str, Any],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Upsert the sync state of ``(stream, scope)``; call it in the data's own transaction."""
    conn.execute(
        _sql(
            """
            insert into meta.sync_state (stream, scope, value, run_id, updated_at)
            values (:stream, :scope, cast(:value as json), :run_id, :now)
            on conflict (stream, scope) do update
            set value = excluded.value, run_id = excluded.run_id, updated_at = excluded.updated_at
            """
        ),
        {
            "stream": stream,
            "scope": scope,
            "value": encode_payload(dict(value)),
            "run_id": run_id,
            "now": now,
        },
    )


def record_drift(
    conn: sa.Connection,
    stream: str,
    *,
    added: Mapping[str, Any] | Iterable[str] = (),
    missing: Mapping[str, Any] | Iterable[str] = (),
    run_id: str,
    now: datetime,
) -> int:
    """Count fields the API added to or dropped from a stream's records (see ``state``)."""
    fields: list[str] = []
    changes: list[str] = []
    examples: list[str | None] = []
    for change, items in (("added", added), ("missing", missing)):
        for field in items:
            fields.append(field)
            changes.append(change)
            examples.append(_example(items[field]) if isinstance(items, Mapping) else None)
    if not fields:
        return 0
    conn.execute(
        _sql(
            """
            insert into meta.schema_drift as d
            select :stream, field_name, change, 1, example, :now, :now, :run_id, :run_id
            from unnest(cast(:fields as varchar[]), cast(:changes as varchar[]),
                        cast(:examples as varchar[])) as t(field_name, change, example)
            on conflict (stream, field_name, change) do update
            set occurrences = d.occurrences + 1,
                example = coalesce(excluded.example, d.example),
                last_seen_at = excluded.last_seen_at,
                last_run_id = excluded.last_run_id
            """
        ),
        {
            "stream": stream,
            "fields": fields,
            "changes": changes,
            "examples": examples,
            "now": now,
            "run_id": run_id,
        },
    )
    logger.info(
        "%s: schema drift: added %s, missing %s",
        stream,
        [f for f, c in zip(fields, changes, strict=True) if c == "added"],
        [f for f, c in zip(fields, changes, strict=True) if c == "missing"],
    )
    return len(fields)


def quarantine(
    conn: sa.Connection,
    stream: str,
    items: Sequence[tuple[str, Any]],
    *,
    slice_label: str | None,
    run_id: str,
    now: datetime,
) -> int:
    """Keep malformed records, with the reason, instead of loading or dropping them."""
    if not items:
        return 0
    conn.execute(
        _sql(
            """
            insert into meta.quarantine (stream, reason, payload, run_id, slice, quarantined_at)
            select :stream, reason, cast(payload as json), :run_id, :slice, :now
            from unnest(cast(:reasons as varchar[]), cast(:payloads as text[]))
                with ordinality as t(reason, payload, position)
            order by position
            """
        ),
        {
            "stream": stream,
            "reasons": [reason for reason, _ in items],
            "payloads": [encode_payload(payload) for _, payload in items],
            "run_id": run_id,
            "slice": slice_label,
            "now": now,
        },
    )
    logger.warning("%s: quarantined %d malformed record(s)", stream, len(items))
    return len(items)


def audit(
    conn: sa.Connection,
    stream: str,
    *,
    slice_label: str,
    counts: LoadCounts,
    api_requests: int | None,
    started_at: datetime | None,
    run_id: str,
    finished_at: datetime,
) -> None:
    """Append one row to ``meta.load_audit`` describing one load."""
    conn.execute(
        _sql(
            """
            insert into meta.load_audit (run_id, stream, slice, rows_inserted, rows_updated,
                rows_deleted, rows_unchanged, api_requests, started_at, finished_at)
            values (:run_id, :stream, :slice, :inserted, :updated, :deleted, :unchanged,
                :api_requests, :started_at, :finished_at)
            """
        ),
        {
            "run_id": run_id,
            "stream": stream,
            "slice": slice_label,
            **counts.as_dict(),
            "api_requests": api_requests,
            "started_at": started_at,
            "finished_at": finished_at,
        },
    )


# -- ledger.py -----------------------------------------------------------------------------------


def outstanding(conn: sa.Connection, stream: str | None = None) -> list[Outstanding]:
    """Everything outstanding (of ``stream``), oldest first."""
    rows = conn.execute(
        _sql(
            """select stream, chatbot_id, item, slice, reason, attempts from meta.outstanding
               where cast(:stream as varchar) is null or stream = :stream
               order by first_seen_at, stream, chatbot_id, item"""
        ),
        {"stream": stream},
    ).all()
    return [Outstanding(*row) for row in rows]


def mark_outstanding(
    conn: sa.Connection,
    stream: str,
    items: Sequence[tuple[str, str, str | None, str]],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Record ``(chatbot_id, item, slice, reason)`` as outstanding (attempts counted up)."""
    if not items:
        return
    conn.execute(
        _sql(
            """
            insert into meta.outstanding as o
            select distinct on (chatbot_id, item)
                :stream, chatbot_id, item, slice, reason, 1, :now, :now, :run_id
            from unnest(cast(:chatbot_ids as varchar[]), cast(:items as varchar[]),
                        cast(:slices as varchar[]), cast(:reasons as varchar[]))
                with ordinality as t(chatbot_id, item, slice, reason, position)
            order by chatbot_id, item, position desc
            on conflict (stream, chatbot_id, item) do update
            set reason = excluded.reason, slice = excluded.slice,
                attempts = o.attempts + 1, last_seen_at = excluded.last_seen_at,
                last_run_id = excluded.last_run_id
            """
        ),
        {
            "stream": stream,
            "chatbot_ids": [row[0] for row in items],
            "items": [row[1] for row in items],
            "slices": [row[2] for row in items],
            "reasons": [row[3] for row in items],
            "now": now,
            "run_id": run_id,
        },
    )


def clear_outstanding(conn: sa.Connection, stream: str, items: Iterable[tuple[str, str]]) -> None:
    """Forget ``(chatbot_id, item)`` pairs that have now loaded completely."""
    pairs = list(items)
    if not pairs:
        return
    conn.execute(
        _sql(
            """delete from meta.outstanding o where stream = :stream and exists (
                   select 1 from unnest(cast(:chatbot_ids as varchar[]),
                                        cast(:items as varchar[])) as d(chatbot_id, item)
                   where d.chatbot_id = o.chatbot_id and d.item = o.item)"""
        ),
        {"stream": stream, "chatbot_ids": [c for c, _ in pairs], "items": [i for _, i in pairs]},
    )


def count_misses(
    conn: sa.Connection,
    stream: str,
    missed: Sequence[tuple[str, str | None, str | None]],
    *,
    run_id: str,
    now: datetime,
) -> Mapping[str, int]:
    """Count one more miss for each ``(key, chatbot_id, slice)``; returns key -> misses in a row."""
    if not missed:
        return {}
    params = {
        "stream": stream,
        "keys": [row[0] for row in missed],
        "chatbot_ids": [row[1] for row in missed],
        "slices": [row[2] for row in missed],
        "now": now,
        "run_id": run_id,
    }
    conn.execute(
        _sql(
            """
            insert into meta.missing as m
            select distinct on (key) :stream, key, chatbot_id, slice, 1, :now, :now, :run_id
            from unnest(cast(:keys as varchar[]), cast(:chatbot_ids as varchar[]),
                        cast(:slices as varchar[])) as t(key, chatbot_id, slice)
            on conflict (stream, key) do update
            set misses = m.misses + 1, last_missed_at = excluded.last_missed_at,
                last_run_id = excluded.last_run_id
            """
        ),
        params,
    )
    rows = conn.execute(
        _sql(
            """select key, misses from meta.missing
               where stream = :stream and key = any(cast(:keys as varchar[]))"""
        ),
        {"stream": stream, "keys": params["keys"]},
    ).all()
    return {str(key): int(misses) for key, misses in rows}


def clear_missing(conn: sa.Connection, stream: str, keys: Iterable[str]) -> None:
    """Forget the misses of keys that were listed again (or removed)."""
    values = list(keys)
    if not values:
        return
    conn.execute(
        _sql(
            "delete from meta.missing where stream = :stream and key = any(cast(:k as varchar[]))"
        ),
        {"stream": stream, "k": values},
    )


def stored_keys(
    conn: sa.Connection,
    table: str,
    key_column: str,
    chatbot_ids: Sequence[str],
    day_from: str,
    day_to: str,
) -> list[tuple[str, str, str]]:
    """``(chatbot_id, key, _slice)`` of the rows of ``raw.<table>`` in a window, for chatbots.

    ``table`` and ``key_column`` come from the table registry, never from input.
    """
    if not chatbot_ids:
        return []
    rows = conn.execute(
        _sql(
            f"""select chatbot_id, {key_column}, _slice from raw.{table}
                where _slice >= :day_from and _slice < :day_to
                  and chatbot_id = any(cast(:chatbots as varchar[]))"""
        ),
        {"day_from": day_from, "day_to": day_to, "chatbots": list(chatbot_ids)},
    ).all()
    return [(str(c), str(k), str(s)) for c, k, s in rows]


# -- reads of Warehouse ----------------------------------------------------------------------------


def session_watermarks(
    conn: sa.Connection,
    chatbot_ids: Sequence[str] | None,
    day_from: date | str,
    day_to: date | str,
) -> dict[tuple[str, str], tuple[str | None, str, str]]:
    """Stored sessions of a window (see ``Warehouse.session_watermarks``): the md5 of the
    stored listing record is the same as DuckDB's, since ``json`` keeps the loaded text."""
    if chatbot_ids is not None and not chatbot_ids:
        return {}
    rows = conn.execute(
        _sql(
            """
            select chatbot_id, session_id, _payload->>'last_message_time', _slice,
                   md5(_payload::text)
            from raw.robofy__inbox_sessions
            where _slice >= :day_from and _slice < :day_to
              and (cast(:chatbots as varchar[]) is null
                   or chatbot_id = any(cast(:chatbots as varchar[])))
            """
        ),
        {
            "day_from": day_string(day_from),
            "day_to": day_string(day_to),
            "chatbots": None if chatbot_ids is None else list(chatbot_ids),
        },
    ).all()
    return {(c, s): (lmt, sl, digest) for c, s, lmt, sl, digest in rows}


def active_project_ids(conn: sa.Connection) -> list[int]:
    """Every project not marked deleted."""
    return [int(r[0]) for r in conn.execute(_sql(ACTIVE_PROJECTS_SQL)).all()]


def active_chatbots(conn: sa.Connection) -> list[Chatbot]:
    """Every chatbot not marked deleted, by chatbot_id."""
    return [Chatbot(str(r[0]), int(r[1])) for r in conn.execute(_sql(ACTIVE_CHATBOTS_SQL)).all()]
