"""The pipeline's own records in ``meta``: sync state, schema drift, quarantine and load audit."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from robofy_etl.warehouse.load import LoadCounts, encode_payload

__all__ = [
    "EXAMPLE_MAX_CHARS",
    "audit",
    "get_state",
    "quarantine",
    "record_drift",
    "set_state",
]

logger = logging.getLogger(__name__)

EXAMPLE_MAX_CHARS = 200


def get_state(conn: duckdb.DuckDBPyConnection, stream: str, scope: str) -> dict[str, Any] | None:
    """Read the sync state of ``(stream, scope)``, or None if it was never written."""
    rows = conn.execute(
        "select value from meta.sync_state where stream = ? and scope = ?", [stream, scope]
    ).fetchall()
    if not rows:
        return None
    value: dict[str, Any] = json.loads(rows[0][0])
    return value


def set_state(
    conn: duckdb.DuckDBPyConnection,
    stream: str,
    scope: str,
    value: Mapping[str, Any],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Upsert the sync state of ``(stream, scope)``; call it in the data's own transaction."""
    conn.execute(
        """
        insert into meta.sync_state (stream, scope, value, run_id, updated_at)
        values (?, ?, ?, ?, ?)
        on conflict (stream, scope) do update
        set value = excluded.value, run_id = excluded.run_id, updated_at = excluded.updated_at
        """,
        [stream, scope, encode_payload(dict(value)), run_id, now],
    )


def _example(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= EXAMPLE_MAX_CHARS else text[: EXAMPLE_MAX_CHARS - 3] + "..."


def record_drift(
    conn: duckdb.DuckDBPyConnection,
    stream: str,
    *,
    added: Mapping[str, Any] | Iterable[str] = (),
    missing: Mapping[str, Any] | Iterable[str] = (),
    run_id: str,
    now: datetime,
) -> int:
    """Count fields the API added to or dropped from a stream's records.

    Each call adds one occurrence per field; ``first_*`` stay as first recorded, ``last_*`` move.

    Args:
        conn: an open connection.
        stream: the stream (raw table name) the records belong to.
        added: fields seen but not modelled, as ``{field: example value}`` or just field names.
        missing: modelled fields absent from the records, likewise.
        run_id: the run that saw the drift.
        now: the transaction's timestamp.

    Returns:
        The number of (field, change) pairs recorded.
    """
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
    batch = pa.table(
        {
            "field_name": pa.array(fields, pa.string()),
            "change": pa.array(changes, pa.string()),
            "example": pa.array(examples, pa.string()),
        }
    )
    conn.register("_robofy_drift", batch)
    try:
        conn.execute(
            """
            insert into meta.schema_drift as d
            select $stream, field_name, change, 1, example, $now, $now, $run_id, $run_id
            from _robofy_drift
            on conflict (stream, field_name, change) do update
            set occurrences = d.occurrences + 1,
                example = coalesce(excluded.example, d.example),
                last_seen_at = excluded.last_seen_at,
                last_run_id = excluded.last_run_id
            """,
            {"stream": stream, "now": now, "run_id": run_id},
        )
    finally:
        conn.unregister("_robofy_drift")
    logger.info(
        "%s: schema drift: added %s, missing %s",
        stream,
        [f for f, c in zip(fields, changes, strict=True) if c == "added"],
        [f for f, c in zip(fields, changes, strict=True) if c == "missing"],
    )
    return len(fields)


def quarantine(
    conn: duckdb.DuckDBPyConnection,
    stream: str,
    items: Sequence[tuple[str, Any]],
    *,
    slice_label: str | None,
    run_id: str,
    now: datetime,
) -> int:
    """Keep malformed records, with the reason, instead of loading or dropping them.

    Args:
        conn: an open connection.
        stream: the stream the records came from.
        items: ``(reason, payload)`` pairs; payloads are stored as JSON.
        slice_label: the slice being loaded when the records were seen.
        run_id: the current run.
        now: the transaction's timestamp.

    Returns:
        The number of records quarantined.
    """
    if not items:
        return 0
    batch = pa.table(
        {
            "reason": pa.array([reason for reason, _ in items], pa.string()),
            "payload": pa.array([encode_payload(payload) for _, payload in items], pa.string()),
        }
    )
    conn.register("_robofy_quarantine", batch)
    try:
        conn.execute(
            """
            insert into meta.quarantine (stream, reason, payload, run_id, slice, quarantined_at)
            select $stream, reason, payload::json, $run_id, $slice, $now from _robofy_quarantine
            """,
            {"stream": stream, "run_id": run_id, "slice": slice_label, "now": now},
        )
    finally:
        conn.unregister("_robofy_quarantine")
    logger.warning("%s: quarantined %d malformed record(s)", stream, len(items))
    return len(items)


def audit(
    conn: duckdb.DuckDBPyConnection,
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
        """
        insert into meta.load_audit (run_id, stream, slice, rows_inserted, rows_updated,
            rows_deleted, rows_unchanged, api_requests, started_at, finished_at)
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            run_id,
            stream,
            slice_label,
            counts.inserted,
            counts.updated,
            counts.deleted,
            counts.unchanged,
            api_requests,
            started_at,
            finished_at,
        ],
    )
