"""Advisory locks: writers of the same slice take turns, writers of different slices do not.

Keys are transaction-scoped (``pg_advisory_xact_lock``): PostgreSQL releases them at COMMIT or
ROLLBACK, so a crashed writer never leaves one behind. Two levels, so that a slice of days and a
whole-table load (a snapshot merge) also exclude each other:

- a load of a window of days takes the table's key in *shared* mode, then one *exclusive* key
  per day of the window, in order (the same order everywhere: no deadlock);
- any other load (no day bounds, or a window longer than ``MAX_DAY_LOCKS`` days) takes the
  table's key in *exclusive* mode, waiting for every load of that table.

Model builds take none of these: they read one REPEATABLE READ snapshot and keep their
watermark as a transaction id (``pg/build_sql.py``), so loads of any slice run while a build
does and none is missed. (Waiting for the loads in flight, ``lock_tables``, would not be enough
for a ``_loaded_at`` watermark: a load's transaction begins, and stamps its time, before it
takes its locks.)

Conditions on other columns (``within``, ``keys``) do not narrow the lock: two loads of the same
day for different chatbots take turns, which is safe and costs little (a load of one day takes
milliseconds), whereas proving two such slices disjoint would not be worth its risk.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import sqlalchemy as sa

from robofy_etl.warehouse.load import Slice, day_string

__all__ = ["MAX_DAY_LOCKS", "lock_key", "lock_slice", "lock_tables"]

# A longer window locks its table instead: every advisory lock takes a slot of the server's
# shared lock table (max_locks_per_transaction x max_connections, 6,400 by default).
MAX_DAY_LOCKS = 62


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit key for ``parts`` (the same in every process and Python)."""
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _days(slc: Slice) -> list[str] | None:
    """The days a slice's window covers, or None if it has no closed window of few days."""
    if slc.day_from is None or slc.day_to is None:
        return None
    try:
        first = date.fromisoformat(day_string(slc.day_from))
        end = date.fromisoformat(day_string(slc.day_to))
    except ValueError:
        return None
    count = (end - first).days
    if count > MAX_DAY_LOCKS:
        return None
    return [(first + timedelta(days=i)).isoformat() for i in range(max(count, 0))]


def lock_slice(conn: sa.Connection, table: str, slc: Slice) -> list[int]:
    """Wait for, then hold until the transaction ends, the locks of ``slc`` of ``table``.

    Returns:
        The keys taken (the table's first), for logs and tests.
    """
    table_key = lock_key("robofy", table)
    days = _days(slc)
    if days is None:
        conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": table_key})
        return [table_key]
    keys = [lock_key("robofy", table, day) for day in days]
    conn.execute(sa.text("select pg_advisory_xact_lock_shared(:k)"), {"k": table_key})
    if keys:
        conn.execute(
            sa.text("select pg_advisory_xact_lock(k) from unnest(cast(:keys as bigint[])) k"),
            {"keys": sorted(keys)},
        )
    return [table_key, *sorted(keys)]


def lock_tables(conn: sa.Connection, tables: list[str] | tuple[str, ...]) -> list[int]:
    """Wait for every load of ``tables`` to end, then hold them off until the transaction ends.

    Returns:
        The keys taken, in the order taken (sorted: no deadlock between two callers).
    """
    keys = sorted(lock_key("robofy", table) for table in set(tables))
    if keys:
        conn.execute(
            sa.text("select pg_advisory_xact_lock(k) from unnest(cast(:keys as bigint[])) k"),
            {"keys": keys},
        )
    return keys
