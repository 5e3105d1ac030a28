"""Data quality queries behind the asset checks: unique keys, references, freshness, grain.

Each function runs read-only SQL on an open connection and returns a ``CheckOutcome``; the
Dagster layer only turns outcomes into check results.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from robofy_etl.warehouse.incremental import grain_counts
from robofy_etl.warehouse.tables import RAW_TABLES


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """Every ``child`` row must find its ``parent`` row on ``columns``."""

    child: str
    parent: str
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.child}__references_{self.parent.removeprefix('robofy__')}"


def _ident_list(columns: Sequence[str]) -> str:
    for c in columns:
        if not c.replace("_", "").isalnum():
            raise ValueError(f"not a column name: {c!r}")
    return ", ".join(columns)


def unique_key(conn: duckdb.DuckDBPyConnection, relation: str, key: Sequence[str]) -> CheckOutcome:
    """No two rows of ``relation`` share ``key``, and no key column is null."""
    cols = _ident_list(key)
    total, duplicates, null_keys = grain_counts(conn, relation, key)
    sample = conn.execute(
        f"select {cols}, count(*) as n from {relation} group by all having n > 1 limit 5"
    ).fetchall()
    return CheckOutcome(
        passed=duplicates == 0 and null_keys == 0,
        description=f"{relation} is unique on ({cols})",
        metadata={
            "rows": total,
            "duplicate_keys": duplicates,
            "null_keys": null_keys,
            "sample_duplicates": str(sample) if sample else "none",
        },
    )


def raw_unique_key(
    conn: duckdb.DuckDBPyConnection, table: str, run_id: str | None = None
) -> CheckOutcome:
    """``raw.<table>`` is unique on its key: over the keys the run ``run_id`` wrote (rows whose
    data did not change keep the run that wrote them, and were checked then), or the whole
    table without a run."""
    spec = RAW_TABLES[table]
    if run_id is None:
        return unique_key(conn, spec.relation, spec.key)
    cols = _ident_list(spec.key)
    # The rows of the run's keys, read once into a temp table (a scan of the key columns at
    # any history size) rather than once for the counts and again for the sample.
    scoped = f"robofy_check_{uuid.uuid4().hex}"
    conn.execute(
        f"create temp table {scoped} as select {cols} from {spec.relation} where ({cols}) in"
        f" (select {cols} from {spec.relation} where _run_id = $run_id)",
        {"run_id": run_id},
    )
    try:
        outcome = unique_key(conn, scoped, spec.key)
    finally:
        conn.execute(f"drop table if exists {scoped}")
    return CheckOutcome(
        passed=outcome.passed,
        description=f"{spec.relation} is unique on ({cols}) for the keys this run wrote",
        metadata={**outcome.metadata, "scope": "keys written by this run"},
    )


def _literal(value: str) -> str:
    return value.replace("'", "''")


def orphans(
    conn: duckdb.DuckDBPyConnection, ref: Reference, run_id: str | None = None
) -> CheckOutcome:
    """Rows of the child table whose parent row is missing from the warehouse: the rows the run
    ``run_id`` wrote, and the rows whose parent that run removed (or every row, without a run).
    """
    cols = _ident_list(ref.columns)
    on = " and ".join(f"c.{col} = p.{col}" for col in ref.columns)
    child = f"raw.{ref.child}"
    if run_id is not None:
        parent = RAW_TABLES[ref.parent]
        removed = ", ".join(f"(row_data->>'{col}')::{parent.base_type(col)}" for col in ref.columns)
        orphaned_by_run = (
            f"select {removed} from meta.removed_rows"
            f" where stream = '{ref.parent}' and run_id = '{_literal(run_id)}'"
        )
        child = f"(select {cols} from raw.{ref.child} where _run_id = '{_literal(run_id)}'"
        # Rows whose parent the run removed: looked for only when it removed one, since the
        # lookup reads the key columns of the whole child table.
        if conn.execute(f"select exists ({orphaned_by_run})").fetchall()[0][0]:
            child += (
                f" union all select {cols} from raw.{ref.child}"
                f" where ({cols}) in ({orphaned_by_run})"
            )
        child += ")"
    # The orphans, found once: their count and a sample come from the same rows.
    keys = ", ".join("c." + c for c in ref.columns)
    (count, sample) = conn.execute(
        f"""with orphan as materialized (
            select {keys} from {child} c anti join raw.{ref.parent} p on {on})
        select (select count(*) from orphan),
            (select list(k) from (select distinct * from orphan limit 5) as k)"""
    ).fetchall()[0]
    sample = [tuple(row.values()) for row in sample or []]
    return CheckOutcome(
        passed=count == 0,
        description=f"every raw.{ref.child} row has its raw.{ref.parent} row on ({cols})",
        metadata={
            "orphan_rows": count,
            "sample": str(sample) if sample else "none",
            "scope": "whole table" if run_id is None else "rows this run wrote or orphaned",
        },
    )


def model_grain(conn: duckdb.DuckDBPyConnection, model: str, key: Sequence[str]) -> CheckOutcome:
    """A model's grain, as its last build checked it: over the rows that build wrote (the whole
    table after a full build, the touched keys after an incremental one; see incremental.py)."""
    rows = conn.execute(
        "select mode, grain_rows, grain_duplicates, grain_null_keys, keys_rebuilt"
        " from meta.model_state where model = ?",
        [model],
    ).fetchall()
    if not rows or rows[0][1] is None:
        return unique_key(conn, model, key)  # never checked by a build: check it whole
    mode, checked, duplicates, null_keys, keys = rows[0]
    return CheckOutcome(
        passed=duplicates == 0 and null_keys == 0,
        description=f"{model} is unique on ({', '.join(key)}) where its last build wrote",
        metadata={
            "build": mode,
            "rows_checked": checked,
            "keys_rebuilt": keys,
            "duplicate_keys": duplicates,
            "null_keys": null_keys,
        },
    )


def latest_load(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    max_age: timedelta,
    now: datetime,
    wanted: date | None = None,
) -> CheckOutcome:
    """The day ``wanted`` (default: yesterday) is fresh: a load within ``max_age`` of ``now``
    (naive UTC) covered it or a later day, per ``meta.load_audit``."""
    wanted = wanted or now.date() - timedelta(days=1)
    row = conn.execute(
        """
        select max(finished_at), max(try_cast(split_part(slice, '..', 2) as date))
        from meta.load_audit
        where stream = ? and try_cast(split_part(slice, '..', 2) as date) >= ?
        """,
        [table, wanted],
    ).fetchone()
    last, last_day = (row[0], row[1]) if row else (None, None)
    age = None if last is None else now - last
    return CheckOutcome(
        passed=age is not None and age <= max_age and last_day is not None and last_day >= wanted,
        description=f"raw.{table} was loaded in the last {max_age}, up to {wanted} or later",
        metadata={
            "last_load_at": "never" if last is None else last.isoformat(sep=" "),
            "age_hours": None if age is None else round(age.total_seconds() / 3600, 2),
            "latest_day_loaded": "none" if last_day is None else last_day.isoformat(),
        },
    )


def reconcile_daily_activity(
    conn: duckdb.DuckDBPyConnection,
    *,
    tolerance: float = 0.02,
    min_abs: int = 5,
    settle_days: int = 2,
    days: tuple[date, date] | None = None,
) -> CheckOutcome:
    """Daily message totals from transcripts agree with the stats API within a tolerance.

    Only settled days are compared: days both sources cover, more than ``settle_days`` before
    the latest day (the platform still aggregates and restates recent stats), and far enough
    after the first day with data that no conversation started before it can still have
    messages on them. Those conversations are not loaded (they started outside the synced
    range), but the stats count their messages; a conversation can go on for days, so the
    first ``span`` days are skipped, ``span`` being the longest conversation loaded, in days.
    A day disagrees when the difference is above ``min_abs`` messages and above ``tolerance``
    of the stats total. ``days`` (first, last): compare only those days (a run's window).
    """
    total_days, bad_days, transcript_msgs, stats_msgs, worst, span = conn.execute(
        """
        with span as (
            select coalesce(
                max(date_diff('day', started_at::date, last_message_at::date)), 0
            )::integer as days
            from marts.sessions
        ),
        bounds as (
            select min(activity_date) as first_day, max(activity_date) as last_day
            from marts.chatbot_daily_activity
        ),
        compared as (
            select activity_date, chatbot_id, messages, stats_total_messages,
                   abs(messages - stats_total_messages) as diff
            from marts.chatbot_daily_activity, bounds, span
            where messages is not null and stats_total_messages is not null
              and activity_date > first_day + span.days
              and activity_date <= last_day - ?::integer
              and activity_date between ? and ?
        )
        select count(*),
               count(*) filter (where diff > ? and diff > ? * stats_total_messages),
               coalesce(sum(messages), 0), coalesce(sum(stats_total_messages), 0),
               coalesce(max(diff), 0), (select days from span)
        from compared
        """,
        [settle_days, *(days or (date.min, date.max)), min_abs, tolerance],
    ).fetchone() or (0, 0, 0, 0, 0, 0)
    return CheckOutcome(
        passed=bad_days == 0,
        description="transcript message counts reconcile with the stats API per chatbot-day",
        metadata={
            "days_compared": total_days,
            "longest_conversation_days": span,
            "days_out_of_tolerance": bad_days,
            "transcript_messages": transcript_msgs,
            "stats_messages": stats_msgs,
            "difference": transcript_msgs - stats_msgs,
            "largest_daily_difference": worst,
            "tolerance": f"{tolerance:.0%} and more than {min_abs} messages",
        },
    )
