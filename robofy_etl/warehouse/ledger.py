"""What did not load, and what a scan missed: ``meta.outstanding`` and ``meta.missing``.

A glitchy response must never lose stored data. These two tables hold the pipeline's memory of
what went wrong, written in the same transaction as the data:

- ``meta.outstanding``: work that did not arrive complete (a transcript that answered 404, ended
  early or held a malformed message; a list scan that failed). Every later run retries it until
  it arrives, and ``robofy-etl status`` lists it.
- ``meta.missing``: stored rows a scan did not list, with how many scans in a row missed them.
  A row is deleted only on evidence: its own endpoint answering 404, or several misses in a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

__all__ = [
    "Outstanding",
    "clear_missing",
    "clear_outstanding",
    "count_misses",
    "mark_outstanding",
    "outstanding",
    "stored_keys",
]


@dataclass(frozen=True)
class Outstanding:
    """One piece of work that did not load completely."""

    stream: str
    chatbot_id: str
    item: str
    slice: str | None
    reason: str
    attempts: int


def outstanding(conn: duckdb.DuckDBPyConnection, stream: str | None = None) -> list[Outstanding]:
    """Everything outstanding (of ``stream``), oldest first."""
    where, params = ("where stream = ?", [stream]) if stream else ("", [])
    rows = conn.execute(
        f"""select stream, chatbot_id, item, slice, reason, attempts from meta.outstanding
            {where} order by first_seen_at, stream, chatbot_id, item""",
        params,
    ).fetchall()
    return [Outstanding(*row) for row in rows]


def mark_outstanding(
    conn: duckdb.DuckDBPyConnection,
    stream: str,
    items: Sequence[tuple[str, str, str | None, str]],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Record ``(chatbot_id, item, slice, reason)`` as outstanding (attempts counted up)."""
    if not items:
        return
    batch = pa.table(
        {
            name: pa.array([row[i] for row in items], pa.string())
            for i, name in enumerate(("chatbot_id", "item", "slice", "reason"))
        }
    )
    conn.register("_robofy_outstanding", batch)
    try:
        conn.execute(
            """
            insert into meta.outstanding as o
            select distinct on (chatbot_id, item)
                $stream, chatbot_id, item, slice, reason, 1, $now, $now, $run_id
            from _robofy_outstanding
            on conflict (stream, chatbot_id, item) do update
            set reason = excluded.reason, slice = excluded.slice,
                attempts = o.attempts + 1, last_seen_at = excluded.last_seen_at,
                last_run_id = excluded.last_run_id
            """,
            {"stream": stream, "now": now, "run_id": run_id},
        )
    finally:
        conn.unregister("_robofy_outstanding")


def clear_outstanding(
    conn: duckdb.DuckDBPyConnection, stream: str, items: Iterable[tuple[str, str]]
) -> None:
    """Forget ``(chatbot_id, item)`` pairs that have now loaded completely."""
    pairs = list(items)
    if not pairs:
        return
    conn.register(
        "_robofy_done",
        pa.table(
            {
                "chatbot_id": pa.array([c for c, _ in pairs], pa.string()),
                "item": pa.array([i for _, i in pairs], pa.string()),
            }
        ),
    )
    try:
        conn.execute(
            """delete from meta.outstanding o where stream = ? and exists (
                   select 1 from _robofy_done d
                   where d.chatbot_id = o.chatbot_id and d.item = o.item)""",
            [stream],
        )
    finally:
        conn.unregister("_robofy_done")


def count_misses(
    conn: duckdb.DuckDBPyConnection,
    stream: str,
    missed: Sequence[tuple[str, str | None, str | None]],
    *,
    run_id: str,
    now: datetime,
) -> Mapping[str, int]:
    """Count one more miss for each ``(key, chatbot_id, slice)``; returns key -> misses in a row."""
    if not missed:
        return {}
    conn.register(
        "_robofy_missed",
        pa.table(
            {
                name: pa.array([row[i] for row in missed], pa.string())
                for i, name in enumerate(("key", "chatbot_id", "slice"))
            }
        ),
    )
    try:
        conn.execute(
            """
            insert into meta.missing as m
            select distinct on (key) $stream, key, chatbot_id, slice, 1, $now, $now, $run_id
            from _robofy_missed
            on conflict (stream, key) do update
            set misses = m.misses + 1, last_missed_at = excluded.last_missed_at,
                last_run_id = excluded.last_run_id
            """,
            {"stream": stream, "now": now, "run_id": run_id},
        )
        rows = conn.execute(
            """select m.key, m.misses from meta.missing m
               where m.stream = ? and m.key in (select key from _robofy_missed)""",
            [stream],
        ).fetchall()
    finally:
        conn.unregister("_robofy_missed")
    return {str(key): int(misses) for key, misses in rows}


def clear_missing(conn: duckdb.DuckDBPyConnection, stream: str, keys: Iterable[str]) -> None:
    """Forget the misses of keys that were listed again (or removed)."""
    values = list(keys)
    if not values:
        return
    conn.register("_robofy_seen", pa.table({"key": pa.array(values, pa.string())}))
    try:
        conn.execute(
            "delete from meta.missing where stream = ? and key in (select key from _robofy_seen)",
            [stream],
        )
    finally:
        conn.unregister("_robofy_seen")


def stored_keys(
    conn: duckdb.DuckDBPyConnection,
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
    conn.register("_robofy_chatbots", pa.table({"v": pa.array(list(chatbot_ids), pa.string())}))
    try:
        rows = conn.execute(
            f"""select chatbot_id, {key_column}, _slice from raw.{table}
                where _slice >= ? and _slice < ?
                  and chatbot_id in (select v from _robofy_chatbots)""",
            [day_from, day_to],
        ).fetchall()
    finally:
        conn.unregister("_robofy_chatbots")
    return [(str(c), str(k), str(s)) for c, k, s in rows]
