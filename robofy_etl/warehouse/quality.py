"""Data quality queries behind the asset checks: unique keys, references, freshness, grain.

Each function runs read-only SQL on an open connection of either back end (a DuckDB or a
SQLAlchemy PostgreSQL connection, or a ``reader.Reader``) and returns a ``CheckOutcome``; the
Dagster layer only turns outcomes into check results. The SQL is written once for both: no
DuckDB-only syntax (``group by all``, ``anti join``, ``list()``, ``try_cast``, ``date_diff``),
parameters bound as ``:name`` (see ``reader.py``), casts spelled ``cast(x as type)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import sqlalchemy as sa

from robofy_etl.warehouse.reader import Reader, as_reader
from robofy_etl.warehouse.tables import RAW_TABLES

# What the checks run on: a connection of either back end, or a Reader over one.
Connection = Reader | duckdb.DuckDBPyConnection | sa.Connection


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


def _grain_query(source: str, key: Sequence[str], *, materialized: bool) -> str:
    """Counts and a sample of duplicate keys of ``source`` (a select of the key columns), in
    one statement: every row carries the counts, and one duplicate key (or nulls, when there
    is none); at most 5 rows."""
    cols = _ident_list(key)
    nulls = " or ".join(f"{c} is null" for c in key)
    return f"""with checked as {"" if materialized else "not "}materialized ({source}),
        counts as (
            select count(*) as total_rows,
                count(*) - count(distinct ({cols})) as duplicate_keys,
                count(*) filter (where {nulls}) as null_keys
            from checked),
        sample as (
            select {cols}, count(*) as n from checked
            group by {cols} having count(*) > 1 order by {cols} limit 5)
        select counts.*, sample.* from counts left join sample on true"""


def _grain(
    reader: Reader,
    source: str,
    key: Sequence[str],
    params: Mapping[str, Any] | None = None,
    *,
    materialized: bool = False,
) -> tuple[int, int, int, list[tuple[Any, ...]]]:
    """``(rows, duplicate keys, rows with a null key column, sample of duplicates)``; the
    sample's tuples are a key and its row count."""
    rows = reader.rows(_grain_query(source, key, materialized=materialized), params)
    total, duplicates, null_keys = (int(v) for v in rows[0][:3])
    sample = [(*row[3:-1], int(row[-1])) for row in rows if row[-1] is not None]
    return total, duplicates, null_keys, sample


def _grain_outcome(
    relation: str, key: Sequence[str], counts: tuple[int, int, int, list[tuple[Any, ...]]]
) -> CheckOutcome:
    total, duplicates, null_keys, sample = counts
    return CheckOutcome(
        passed=duplicates == 0 and null_keys == 0,
        description=f"{relation} is unique on ({_ident_list(key)})",
        metadata={
            "rows": total,
            "duplicate_keys": duplicates,
            "null_keys": null_keys,
            "sample_duplicates": str(sample) if sample else "none",
        },
    )


def unique_key(conn: Connection, relation: str, key: Sequence[str]) -> CheckOutcome:
    """No two rows of ``relation`` share ``key``, and no key column is null."""
    source = f"select {_ident_list(key)} from {relation}"
    # Not materialized: the counts and the sample each scan the key columns (as two queries
    # would), rather than copying a whole mart's keys first.
    return _grain_outcome(relation, key, _grain(as_reader(conn), source, key))


def raw_unique_key(conn: Connection, table: str, run_id: str | None = None) -> CheckOutcome:
    """``raw.<table>`` is unique on its key: over the keys the run ``run_id`` wrote (rows whose
    data did not change keep the run that wrote them, and were checked then), or the whole
    table without a run."""
    spec = RAW_TABLES[table]
    if run_id is None:
        return unique_key(conn, spec.relation, spec.key)
    cols = _ident_list(spec.key)
    # The rows of the run's keys, read once (materialized: a scan of the key columns at any
    # history size) for the counts and the sample alike.
    source = (
        f"select {cols} from {spec.relation} where ({cols}) in"
        f" (select {cols} from {spec.relation} where _run_id = :run_id)"
    )
    counts = _grain(as_reader(conn), source, spec.key, {"run_id": run_id}, materialized=True)
    outcome = _grain_outcome(spec.relation, spec.key, counts)
    return CheckOutcome(
        passed=outcome.passed,
        description=f"{spec.relation} is unique on ({cols}) for the keys this run wrote",
        metadata={**outcome.metadata, "scope": "keys written by this run"},
    )


def orphans(conn: Connection, ref: Reference, run_id: str | None = None) -> CheckOutcome:
    """Rows of the child table whose parent row is missing from the warehouse: the rows the run
    ``run_id`` wrote, and the rows whose parent that run removed (or every row, without a run).
    """
    reader = as_reader(conn)
    cols = _ident_list(ref.columns)
    on = " and ".join(f"c.{col} = p.{col}" for col in ref.columns)
    child = f"raw.{ref.child}"
    params: dict[str, Any] = {}
    if run_id is not None:
        parent = RAW_TABLES[ref.parent]
        removed = ", ".join(
            f"cast(row_data->>'{col}' as {parent.base_type(col)})" for col in ref.columns
        )
        orphaned_by_run = (
            f"select {removed} from meta.removed_rows where stream = :parent and run_id = :run_id"
        )
        params = {"parent": ref.parent, "run_id": run_id}
        child = f"(select {cols} from raw.{ref.child} where _run_id = :run_id"
        # Rows whose parent the run removed: looked for only when it removed one, since the
        # lookup reads the key columns of the whole child table.
        if reader.rows(f"select exists ({orphaned_by_run})", params)[0][0]:
            child += (
                f" union all select {cols} from raw.{ref.child}"
                f" where ({cols}) in ({orphaned_by_run})"
            )
        child += ")"
    # The orphans, found once (materialized): their count and a sample come from the same rows.
    keys = ", ".join("c." + c for c in ref.columns)
    rows = reader.rows(
        f"""with orphan as materialized (
            select {keys} from {child} c
            where not exists (select 1 from raw.{ref.parent} p where {on})),
        total as (select count(*) as orphan_rows from orphan),
        sample as (select distinct {cols} from orphan order by {cols} limit 5)
        select total.orphan_rows, sample.* from total left join sample on true""",
        params,
    )
    count = int(rows[0][0])
    sample = [tuple(row[1:]) for row in rows if count]
    return CheckOutcome(
        passed=count == 0,
        description=f"every raw.{ref.child} row has its raw.{ref.parent} row on ({cols})",
        metadata={
            "orphan_rows": count,
            "sample": str(sample) if sample else "none",
            "scope": "whole table" if run_id is None else "rows this run wrote or orphaned",
        },
    )


_MODEL_STATE_EXISTS = (
    "select count(*) from information_schema.tables"
    " where table_schema = 'meta' and table_name = 'model_state'"
)


def model_grain(conn: Connection, model: str, key: Sequence[str]) -> CheckOutcome:
    """A model's grain, as its last build checked it: over the rows that build wrote (the whole
    table after a full build, the touched keys after an incremental one; see incremental.py).
    A model no build checked (no ``meta.model_state`` table, no row, or no counts in it) is
    checked whole."""
    reader = as_reader(conn)
    rows: list[tuple[Any, ...]] = []
    # Asked first rather than caught: on PostgreSQL a failed query aborts the transaction.
    if reader.rows(_MODEL_STATE_EXISTS)[0][0]:
        rows = reader.rows(
            "select mode, grain_rows, grain_duplicates, grain_null_keys, keys_rebuilt"
            " from meta.model_state where model = :model",
            {"model": model},
        )
    if not rows or rows[0][1] is None:
        return unique_key(reader, model, key)  # never checked by a build: check it whole
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


# The last day of a load's slice label ('2026-11-17..2026-11-20'), as a date; null for the
# labels that name no days ('snapshot', '12 continued sessions').
_LAST_DAY = (
    "case when split_part(slice, '..', 2) like '____-__-__'"
    " then cast(split_part(slice, '..', 2) as date) end"
)


def latest_load(
    conn: Connection,
    table: str,
    max_age: timedelta,
    now: datetime,
    wanted: date | None = None,
) -> CheckOutcome:
    """The day ``wanted`` (default: yesterday) is fresh: a load within ``max_age`` of ``now``
    (naive UTC) covered it or a later day, per ``meta.load_audit``."""
    wanted = wanted or now.date() - timedelta(days=1)
    rows = as_reader(conn).rows(
        f"""
        select max(finished_at), max({_LAST_DAY})
        from meta.load_audit
        where stream = :stream and {_LAST_DAY} >= :wanted
        """,
        {"stream": table, "wanted": wanted},
    )
    last, last_day = rows[0] if rows else (None, None)
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
    conn: Connection,
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
    first, last = days or (date.min, date.max)
    rows = as_reader(conn).rows(
        """
        with span as (
            select cast(coalesce(
                max(cast(last_message_at as date) - cast(started_at as date)), 0
            ) as integer) as days
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
              and activity_date <= last_day - cast(:settle_days as integer)
              and activity_date between cast(:first as date) and cast(:last as date)
        )
        select count(*),
               count(*) filter (
                   where diff > cast(:min_abs as integer)
                     and diff > cast(:tolerance as double precision) * stats_total_messages),
               cast(coalesce(sum(messages), 0) as bigint),
               cast(coalesce(sum(stats_total_messages), 0) as bigint),
               cast(coalesce(max(diff), 0) as bigint), (select days from span)
        from compared
        """,
        {
            "settle_days": settle_days,
            "first": first,
            "last": last,
            "min_abs": min_abs,
            "tolerance": tolerance,
        },
    )
    total_days, bad_days, transcript_msgs, stats_msgs, worst, span = rows[0]
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
