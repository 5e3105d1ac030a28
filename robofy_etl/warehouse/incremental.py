"""Incremental model builds: a run rebuilds the rows of what its loads changed, not history.

Every raw write stamps the rows it inserts or changes with ``_loaded_at`` and copies what it
removes into ``meta.removed_rows`` (``removed_at``), and DuckDB serializes writers, so "what
changed since the last build" is exactly the raw rows stamped, and the rows removed, after the
build's watermark (``meta.model_state``). From there, model by model in dependency order:

1. the *touched keys* of the model (its header's ``incremental: key``) are those of the rows that
   changed in the relations it reads, mapped through the header's source lines (old and new
   versions of each changed row, so a row that moved from one key to another touches both);
2. the model's SQL runs with each mapped source cut down to the rows of the touched keys (a
   temporary table, so the SQL itself stays one plain SELECT), and the model's rows of those
   keys are replaced by the result;
3. the replaced rows, old and new, are the model's own change set for the models downstream.

A model is rebuilt in full when it is missing, its SQL (or this engine) changed since it was
built (a fingerprint in ``meta.model_state``), a full refresh is asked for, something it reads
was rebuilt in full, or it reads a relation its header does not map. Every build runs in the
caller's transaction: readers see the previous build or the new one, never a mix.

The planning (touched keys, cuts, deltas, when to go full, the state kept) is the same on every
back end; what each spells its own way goes through a ``BuildSQL`` object: ``DuckDBSQL`` below,
``pg.build_sql.PgBuildSQL`` for PostgreSQL (``ctid`` for ``rowid``, no ``exclude``, no
``create or replace`` for temp tables, ``->>`` read through the try-cast helpers, and a
watermark that is a transaction id rather than a time: see that module for why).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import duckdb

from robofy_etl.warehouse.tables import RAW_TABLES

if TYPE_CHECKING:
    from robofy_etl.warehouse.models import Model, Source, Span

logger = logging.getLogger(__name__)

__all__ = [
    "ENGINE_VERSION",
    "SPANS",
    "STATE_DDL",
    "BuildSQL",
    "Change",
    "DuckDBSQL",
    "Planner",
    "TimeRange",
    "cluster_by_time",
    "fingerprint",
    "full_reason",
    "span_table",
    "unclustered",
]

# Part of every model's fingerprint: a change to how models are built rebuilds them all.
ENGINE_VERSION = "incremental-1"

# One row per model: what its last build saw, and its grain check over the rows it wrote (the
# whole table after a full build, the touched keys' rows after an incremental one), so the
# grain check's cost follows the change, not the history.
STATE_DDL = """create table if not exists meta.model_state (
    model VARCHAR NOT NULL PRIMARY KEY,
    fingerprint VARCHAR NOT NULL,
    watermark TIMESTAMP,
    built_at TIMESTAMP NOT NULL,
    mode VARCHAR NOT NULL,
    keys_rebuilt BIGINT,
    grain_rows BIGINT,
    grain_duplicates BIGINT,
    grain_null_keys BIGINT)"""

Mode = Literal["full", "incremental", "unchanged"]
# What a model's last build had seen: on DuckDB the newest raw change (a time), on PostgreSQL
# the oldest transaction then in flight (a transaction id); None: nothing yet.
Watermark = datetime | int | None


@dataclass(frozen=True)
class TimeRange:
    """Where some rows' time column lies: between ``lo`` and ``hi`` (None: no row has a
    time), or null where ``nulls``."""

    column: str
    lo: date | None
    hi: date | None
    nulls: bool

    def union(self, other: TimeRange) -> TimeRange:
        los = [v for v in (self.lo, other.lo) if v is not None]
        his = [v for v in (self.hi, other.hi) if v is not None]
        return TimeRange(
            self.column,
            min(los) if los else None,
            max(his) if his else None,
            self.nulls or other.nulls,
        )

    def condition(self) -> str:
        """A condition true for every row in the range ("false" when it holds no row)."""
        parts = []
        if self.lo is not None and self.hi is not None:
            parts.append(_between(self.column, (self.lo, self.hi)).removeprefix(" and "))
        if self.nulls:
            parts.append(f"{_q(self.column)} is null")
        return f"({' or '.join(parts) or 'false'})"


@dataclass
class Change:
    """What one model build did.

    Attributes:
        mode: ``full`` (rebuilt from everything), ``incremental`` (the touched keys' rows
            replaced) or ``unchanged`` (nothing it reads changed).
        keys: how many keys were touched (incremental builds).
        delta: a temporary table with the replaced rows, old and new (incremental builds).
        reason: why a build was full.
        deleted: how many rows of the model an incremental build deleted (its touched keys'
            old rows).
        inserted: how many rows it inserted (their new rows): the table then holds its
            previous count minus ``deleted`` plus ``inserted``.
    """

    mode: Mode
    keys: int = 0
    delta: str | None = None
    reason: str = ""
    deleted: int = 0
    inserted: int = 0
    new: str | None = None  # the rows an incremental build wrote (a temp table)
    touched: str | None = None  # the keys an incremental build replaced (a temp table)
    # where the replaced rows, old and new, lie in time (a model that keeps a span)
    span: TimeRange | None = None


def fingerprint(sql: str) -> str:
    """The fingerprint of a model's SQL under this engine."""
    return hashlib.md5(f"{ENGINE_VERSION}\n{sql}".encode(), usedforsecurity=False).hexdigest()


def watermark_now(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    """The newest change in the raw tables: the latest ``_loaded_at`` or ``removed_at``."""
    parts = [f"select max(_loaded_at) from {t.relation}" for t in RAW_TABLES.values()]
    parts.append("select max(removed_at) from meta.removed_rows")
    row = conn.execute(f"select max(m) from ({' union all '.join(parts)}) as t(m)").fetchall()
    value = row[0][0] if row else None
    return value if isinstance(value, datetime) else None


def load_state(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, datetime | None]]:
    """``model -> (fingerprint, watermark)`` of every model built so far."""
    conn.execute(STATE_DDL)
    rows = conn.execute("select model, fingerprint, watermark from meta.model_state").fetchall()
    return {str(m): (str(f), w) for m, f, w in rows}


def save_state(
    conn: duckdb.DuckDBPyConnection,
    model: str,
    sql: str,
    watermark: datetime | None,
    change: Change,
    grain: tuple[int, int, int] | None,
) -> None:
    """Record a model's build: fingerprint, watermark, mode and its grain check's counts
    ``(rows, duplicate keys, null keys)`` (None: not checked this time, previous kept)."""
    previous = conn.execute(
        "select grain_rows, grain_duplicates, grain_null_keys from meta.model_state"
        " where model = ?",
        [model],
    ).fetchall()
    if grain is None:
        grain = previous[0] if previous else None
    conn.execute(
        """insert or replace into meta.model_state
           values (?, ?, ?, now()::timestamp, ?, ?, ?, ?, ?)""",
        [model, fingerprint(sql), watermark, change.mode, change.keys, *(grain or (None,) * 3)],
    )


def grain_sql(relation: str, key: Sequence[str]) -> str:
    """The query of ``grain_counts`` (the same SQL on both back ends)."""
    nulls = " or ".join(f"{_q(c)} is null" for c in key)
    return (
        f"select count(*), count(*) - count(distinct ({_cols(key)})),"
        f" count(*) filter (where {nulls}) from {relation}"
    )


def grain_counts(
    conn: duckdb.DuckDBPyConnection, relation: str, key: Sequence[str]
) -> tuple[int, int, int]:
    """``(rows, duplicate keys, rows with a null key column)`` of ``relation`` on ``key``."""
    row = conn.execute(grain_sql(relation, key)).fetchall()[0]
    return int(row[0]), int(row[1]), int(row[2])


# The marts' change log, for publishing only what changed (see Warehouse.publish): one row per
# build of a mart, and per mart the keys each incremental build replaced. Not published.
CHANGELOG = "changelog"
BUILDS_DDL = f"""create table if not exists {CHANGELOG}.builds (
    build_id BIGINT NOT NULL,
    model VARCHAR NOT NULL,
    mode VARCHAR NOT NULL)"""
# Where an incremental build's replaced rows lay in time (null: not known), so publishing can
# find them in the copy by time before key; added to change logs made before.
BUILDS_SPAN_DDL = tuple(
    f"alter table {CHANGELOG}.builds add column if not exists {column}"
    for column in (
        "span_column VARCHAR",
        "span_lo TIMESTAMP",
        "span_hi TIMESTAMP",
        "span_nulls BOOLEAN",
    )
)


# Per model that declares a span (``--   span: sent_at per chatbot_id, session_id``), one
# table holding, per key, the range of the model's time column over its rows: the rows of a
# few touched conversations are then found by a cheap range test before the key lookup, not
# by hashing the key columns of every stored message (see Planner._stored_range). Not
# published. DuckDB only: PostgreSQL scans a table's rows whatever the filter.
SPANS = "spans"


def next_build_id(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute(f"create schema if not exists {CHANGELOG}")
    conn.execute(BUILDS_DDL)
    for ddl in BUILDS_SPAN_DDL:
        conn.execute(ddl)
    row = conn.execute(f"select coalesce(max(build_id), 0) + 1 from {CHANGELOG}.builds").fetchall()
    return int(row[0][0])


def changes_table(model: Model) -> str:
    """The change log of one mart's keys: ``changelog.<schema>__<relation>``."""
    return f"{CHANGELOG}.{model.schema}__{model.relation}"


def log_change(
    conn: duckdb.DuckDBPyConnection, model: Model, change: Change, build_id: int
) -> None:
    """Log what this build did to ``model`` (a mart), for the next publish."""
    if change.mode == "unchanged":
        return
    span = change.span
    conn.execute(
        f"insert into {CHANGELOG}.builds"
        " (build_id, model, mode, span_column, span_lo, span_hi, span_nulls)"
        " values (?, ?, ?, ?, ?, ?, ?)",
        [
            build_id,
            model.name,
            change.mode,
            *((span.column, span.lo, span.hi, span.nulls) if span else (None,) * 4),
        ],
    )
    if change.mode != "incremental" or change.touched is None:
        return
    table = changes_table(model)
    conn.execute(
        f"create table if not exists {table} as select {build_id}::bigint as _build_id, *"
        f" from {change.touched} limit 0"
    )
    conn.execute(f"insert into {table} select {build_id}, * from {change.touched}")


def forget_state(conn: duckdb.DuckDBPyConnection, models: Iterable[str]) -> None:
    """Mark models as needing a full rebuild next time (their inputs moved without them)."""
    for model in models:
        conn.execute("delete from meta.model_state where model = ?", [model])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cols(names: Sequence[str], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + _q(n) for n in names)


def _tuple(names: Sequence[str], alias: str = "") -> str:
    inner = _cols(names, alias)
    return f"({inner})" if len(names) > 1 else inner


def exists(conn: duckdb.DuckDBPyConnection, relation: str) -> bool:
    schema, name = relation.split(".", 1)
    rows = conn.execute(
        "select count(*) from duckdb_tables() where database_name = current_database()"
        " and schema_name = ? and table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows[0][0])


# An incremental build touching more than this share of a model's rows rebuilds it in full
# instead (cheaper, and its change set would be most of the table anyway).
FULL_ABOVE_SHARE = 0.25
# A full build reads its inputs in chunks of about this many rows (by a hash of the model's
# key), so its memory stays bounded whatever the history: each chunk is an incremental build
# of the keys it holds. Sized so a chunk of messages builds well inside 160MB.
CHUNK_ROWS = 200_000


class BuildSQL(Protocol):
    """What a back end spells its own way in an incremental build (``DuckDBSQL``,
    ``pg.build_sql.PgBuildSQL``); the planning above it is shared.

    ``params`` are passed back to the object that made them (``changed_since``), so their
    style is the back end's.
    """

    # The column naming a stored row's physical position (``rowid``, ``ctid``).
    row_id: str
    # Whether builds keep and use the models' time spans (``SPANS``).
    spans: bool

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        ...

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement."""
        ...

    def temp_name(self, tag: str, kind: str, relation: str, n: int) -> str:
        """A name for this build's ``n``-th temporary table, of ``kind`` for ``relation``."""
        ...

    def temp_table(self, name: str, select: str, params: Mapping[str, Any] | None = None) -> None:
        """Create (or replace) the temporary table ``name`` as ``select``."""
        ...

    def temp_view(self, name: str, select: str) -> None:
        """Create (or replace) the temporary view ``name`` as ``select``."""
        ...

    def cut_in_place(self, relation: str, column: str, keys: int) -> bool:
        """Whether a cut of ``relation`` to ``keys`` values of ``column`` is read in place (a
        view) instead of copied: when it holds most of the table, its copy costs what reading
        the table does, and more."""
        ...

    def changed_since(self, stamp: str, since: Watermark) -> tuple[str, dict[str, Any]]:
        """A condition on a raw table (or ``meta.removed_rows``) keeping the rows written
        after ``since``: ``stamp`` is their time column (``_loaded_at``, ``removed_at``)."""
        ...

    def removed_key(self, column: str, sql_type: str) -> str:
        """A key column read back from ``meta.removed_rows.row_data`` (null if it does not
        parse as ``sql_type``, a ``tables.py`` type)."""
        ...

    def delete_rows(self, relation: str, old: str) -> int:
        """Delete from ``relation`` the rows whose ``row_id`` is in ``old._row``; returns how
        many it deleted."""
        ...

    def insert_rows(self, relation: str, new: str) -> int:
        """Insert every row of the table ``new`` into ``relation``; returns how many."""
        ...

    def needed_columns(self, sql: str) -> Mapping[str, Sequence[str]] | None:
        """The columns ``sql`` reads of each stored relation it scans, by ``schema.relation``
        (None, or a relation missing: unknown, so a cut of it keeps every column)."""
        ...

    def about_rows(self, relation: str) -> int:
        """How many rows a table holds, near enough to weigh a change against its size."""
        ...


class DuckDBSQL:
    """The DuckDB spellings of an incremental build (see ``BuildSQL``)."""

    row_id = "rowid"
    spans = True

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, dict(params) if params else None).fetchall()

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.conn.execute(sql, dict(params) if params else None)

    def temp_name(self, tag: str, kind: str, relation: str, n: int) -> str:
        del n
        return f"{tag}_{kind}_{relation.replace('.', '__')}"

    def temp_table(self, name: str, select: str, params: Mapping[str, Any] | None = None) -> None:
        self.run(f"create or replace temp table {name} as\n{select}", params)

    def temp_view(self, name: str, select: str) -> None:
        self.run(f"create or replace temp view {name} as\n{select}")

    def cut_in_place(self, relation: str, column: str, keys: int) -> bool:
        # A DuckDB cut copies only the columns the model reads (needed_columns), and scans
        # them alone: cheap whatever its share of the table.
        del relation, column, keys
        return False

    def changed_since(self, stamp: str, since: Watermark) -> tuple[str, dict[str, Any]]:
        floor = since if isinstance(since, datetime) else datetime(1, 1, 1)
        return f"{stamp} > $since", {"since": floor}

    def removed_key(self, column: str, sql_type: str) -> str:
        return f"try_cast(row_data->>'{column}' as {sql_type})"

    def delete_rows(self, relation: str, old: str) -> int:
        return self._count(f"delete from {relation} where rowid in (select _row from {old})")

    def insert_rows(self, relation: str, new: str) -> int:
        return self._count(f"insert into {relation} select * from {new}")

    def _count(self, statement: str) -> int:
        """Run ``statement`` (an insert or a delete) and return the rows it changed."""
        row = self.conn.execute(statement).fetchone()
        return int(row[0]) if row else 0

    def about_rows(self, relation: str) -> int:
        return int(self.rows(f"select count(*) from {relation}")[0][0])  # exact, and cheap

    def needed_columns(self, sql: str) -> Mapping[str, Sequence[str]] | None:
        # DuckDB's optimizer already knows which columns each scan needs: read them from the
        # plan. With filter pushdown off, a column used only in a filter is a projection too;
        # with the optimizers that read the data's statistics off, a column is left out only
        # when the SQL does not use it (not, say, because it holds one value today).
        try:
            self.conn.execute(f"set disabled_optimizers = '{_PLAN_WITHOUT}'")
            try:
                plan = self.conn.execute(f"explain (format json)\n{sql}").fetchall()
            finally:
                self.conn.execute("reset disabled_optimizers")
            return _scanned_columns(json.loads(plan[0][1]))
        except (duckdb.Error, ValueError, LookupError, TypeError):
            logger.debug("no column list from the plan; cuts keep every column", exc_info=True)
            return None


# See DuckDBSQL.needed_columns.
_PLAN_WITHOUT = "filter_pushdown,statistics_propagation,empty_result_pullup"


def _scanned_columns(plan: Any) -> dict[str, list[str]]:
    """``schema.relation -> columns`` of every sequential scan in a DuckDB JSON plan; a
    relation scanned once without a column list maps to ``[]`` (read every column)."""
    found: dict[str, list[str]] = {}
    todo = list(plan) if isinstance(plan, list) else [plan]
    while todo:
        node = todo.pop()
        todo.extend(node.get("children", []))
        info = node.get("extra_info") or {}
        if node.get("name") != "SEQ_SCAN" or "Table" not in info:
            continue
        relation = ".".join(str(info["Table"]).split(".")[-2:])
        columns = info.get("Projections")
        if isinstance(columns, str):
            columns = [columns]
        if not columns or (relation in found and not found[relation]):
            found[relation] = []
        else:
            found[relation] = list(dict.fromkeys([*found.get(relation, []), *columns]))
    return found


class Planner:
    """Builds models incrementally from their sources' change sets, within one build.

    Args:
        sql: the build's back end (its connection inside the build's transaction); a DuckDB
            connection stands for ``DuckDBSQL(conn)``.
        tag: a unique prefix for this build's temporary tables.
        models: every model of the build: which keep a span, and which columns of each
            relation the models reading it map (its change set carries those).
    """

    def __init__(
        self,
        sql: BuildSQL | duckdb.DuckDBPyConnection,
        tag: str,
        models: Sequence[Model] = (),
    ) -> None:
        self.sql: BuildSQL = DuckDBSQL(sql) if isinstance(sql, duckdb.DuckDBPyConnection) else sql
        self.tag = tag
        self.deltas: dict[str, str] = {}  # relation -> temp table of its changed rows
        self._temps: list[str] = []
        self._views: set[str] = set()  # the temps that are views (cuts read in place)
        # relation -> its model's span (see SPANS); none where the back end keeps no spans
        self.spans: dict[str, Span] = {
            m.name: m.span for m in models if m.span is not None and self.sql.spans
        }
        self._span_ready: set[str] = set()
        # relation -> the columns of its change set that the models reading it map (a change
        # set carries only those: copying every column of the old rows of a few thousand
        # conversations' messages is most of what finding them costs)
        self.needs: dict[str, list[str]] = {}
        for model in models:
            for source in model.sources:
                needed = self.needs.setdefault(source.relation, [])
                needed.extend(c for c in (*source.columns, *source.using) if c not in needed)

    def _temp(self, kind: str, relation: str) -> str:
        name = self.sql.temp_name(self.tag, kind, relation, len(self._temps))
        self._temps.append(name)
        return name

    def drop_all(self) -> None:
        # Newest first: a view goes before the tables it reads.
        for name in reversed(self._temps):
            kind = "view" if name in self._views else "table"
            self.sql.run(f"drop {kind} if exists {name}")
        self._temps.clear()
        self._views.clear()

    def _raw_delta(self, relation: str, since: Watermark) -> str:
        """A raw table's change set since ``since``: the keys of rows stamped after it, and of
        rows removed after it."""
        table = RAW_TABLES[relation.removeprefix("raw.")]
        name = self._temp("delta", relation)
        removed = ", ".join(
            f"{self.sql.removed_key(c, table.base_type(c))} as {_q(c)}" for c in table.key
        )
        loaded, params = self.sql.changed_since("_loaded_at", since)
        removed_at, more = self.sql.changed_since("removed_at", since)
        self.sql.temp_table(
            name,
            f"""select {_cols(table.key)} from {table.relation} where {loaded}
                union all
                select {removed} from meta.removed_rows
                where stream = '{table.name}' and {removed_at}""",
            {**params, **more},
        )
        return name

    def _touched(self, model: Model, deltas: dict[Source, str]) -> tuple[str, int]:
        key = model.incremental_key
        selects = []
        for source, delta in deltas.items():
            if source.lookup:
                selects.append(
                    f"select {_cols(key)} from {model.name} where {_tuple(source.columns)}"
                    f" in ({_changed_lookups(source, delta)})"
                )
            else:
                pairs = zip(source.columns, key, strict=True)
                selects.append(
                    f"select {', '.join(f'{_q(a)} as {_q(b)}' for a, b in pairs)} from {delta}"
                )
        name = self._temp("touched", model.name)
        self.sql.temp_table(
            name, f"select distinct * from ({' union all '.join(selects)}) as _touched"
        )
        rows = self.sql.rows(f"select count(*) from {name}")
        return name, int(rows[0][0])

    # -- spans ------------------------------------------------------------------------------

    def refresh_span(self, model: Model) -> None:
        """Compute ``model``'s span table from all its rows (after a full build); drop a span
        table it no longer declares."""
        if not self.sql.spans:
            return
        self.sql.run(f"create schema if not exists {SPANS}")
        if model.span is None:
            self.sql.run(f"drop table if exists {span_table(model.name)}")
            return
        self.sql.run(
            f"create or replace table {span_table(model.name)} as\n"
            + _span_rows(model.span, model.name)
        )
        self._span_ready.add(model.name)

    def _ready(self, relation: str, span: Span) -> str:
        """The span table of ``relation``, computed now if it is missing (a warehouse built
        before spans were kept)."""
        table = span_table(relation)
        if relation not in self._span_ready:
            # DuckDB skips the query when the table exists (6 ms against 1.7 s at 365 days).
            self.sql.run(f"create schema if not exists {SPANS}")
            self.sql.run(f"create table if not exists {table} as\n{_span_rows(span, relation)}")
            self._span_ready.add(relation)
        return table

    def _stored_range(
        self, relation: str, pairs: Sequence[tuple[str, str]], touched: str
    ) -> TimeRange | None:
        """Where the stored rows of the touched keys lie in ``relation``'s time column, from
        its span table; None when ``relation`` keeps no span or the touched keys do not name
        every column it is kept per.

        ``pairs`` map ``relation``'s columns onto the columns of ``touched``. Exact: the span
        table covers every stored row (full builds compute it, incremental ones widen it).
        """
        span = self.spans.get(relation)
        mapping = dict(pairs)
        if span is None or not all(c in mapping for c in span.per):
            return None
        table = self._ready(relation, span)
        probe = _cols([mapping[c] for c in span.per])
        lo, hi, nulls = self.sql.rows(
            f"select min(lo), max(hi), coalesce(bool_or(nulls), false) from {table}"
            f" where {_tuple(span.per)} in (select {probe} from {touched})"
        )[0]
        return _range(span.column, lo, hi, nulls)

    def _widen_span(self, relation: str, new: str) -> TimeRange | None:
        """Widen ``relation``'s span table by the rows an incremental build wrote (``new``);
        returns where those rows lie in time (None: ``relation`` keeps no span)."""
        span = self.spans.get(relation)
        if span is None:
            return None
        table = self._ready(relation, span)
        per = _cols(span.per)
        widened = self._temp("span", relation)
        self.sql.temp_table(
            widened,
            f"select {per}, min(lo) as lo, max(hi) as hi, bool_or(nulls) as nulls from ("
            f" select * from {table} where {_tuple(span.per)} in (select {per} from {new})"
            f" union all {_span_rows(span, new)}) as _spans group by all",
        )
        self.sql.run(
            f"delete from {table} where {_tuple(span.per)} in (select {per} from {widened})"
        )
        self.sql.run(f"insert into {table} select * from {widened}")
        column = _q(span.column)
        lo, hi, nulls = self.sql.rows(
            f"select min({column}), max({column}), coalesce(bool_or({column} is null), false)"
            f" from {new}"
        )[0]
        return _range(span.column, lo, hi, nulls)

    def _bounds(self, touched: str, key: Sequence[str]) -> dict[str, tuple[date, date]]:
        """The range of each date or time column of the touched keys.

        A filter ``column between lo and hi`` beside the key lookup is exact (every touched
        key's value lies in it), and DuckDB tests it before the key: on a year of messages,
        finding a few days' (chatbot, day) keys took 0.07 s with it and 0.94 s without.
        """
        spans = ", ".join(f"min({_q(c)}), max({_q(c)})" for c in key)
        row = self.sql.rows(f"select {spans} from {touched}")[0]
        bounds: dict[str, tuple[date, date]] = {}
        for i, column in enumerate(key):
            lo, hi = row[2 * i], row[2 * i + 1]
            if isinstance(lo, date) and isinstance(hi, date):
                bounds[column] = (lo, hi)
        return bounds

    def apply(self, model: Model, since: Watermark) -> Change:
        """Replaces the rows of ``model``'s touched keys; ``unchanged`` when none was touched.

        Returns a ``full`` change (and builds nothing) when so much changed that a full build
        is cheaper: the caller then builds it in full.
        """
        deltas: dict[Source, str] = {}
        for source in model.sources:
            if source.relation.startswith("raw."):
                deltas[source] = self._raw_delta(source.relation, since)
            elif source.relation in self.deltas:
                deltas[source] = self.deltas[source.relation]
        if not deltas:
            return Change("unchanged")
        touched, n = self._touched(model, deltas)
        if n == 0:
            return Change("unchanged")
        total = self.sql.about_rows(model.name)
        if n > FULL_ABOVE_SHARE * max(total, 1) and n > 1000:
            return Change("full", keys=n, reason=f"{n} of {total} keys changed")
        key = _tuple(model.incremental_key)
        bounds = self._bounds(touched, model.incremental_key)
        needed = self.sql.needed_columns(model.sql) or {}
        replacements: dict[str, str] = {}
        for source in model.sources:
            if source.lookup:
                continue
            cut = self._temp("source", f"{model.name}__{source.relation}")
            params: dict[str, Any] = {}
            columns = "*"
            in_place = False
            if source.relation.startswith("raw."):
                # One row per key in raw: the touched keys' rows are the ones stamped after
                # the watermark (a cheap filter: raw rows are stored in load order).
                where, params = self.sql.changed_since("_loaded_at", since)
            else:
                pairs = list(zip(source.columns, model.incremental_key, strict=True))
                where = f"{_tuple(source.columns)} in (select * from {touched})" + "".join(
                    _between(column, bounds[k]) for column, k in pairs if k in bounds
                )
                stored = self._stored_range(source.relation, pairs, touched)
                if stored is not None:
                    where += f" and {stored.condition()}"
                # Only the columns the model reads: a cut of a wide table (texts) costs its
                # copy, and a rollup reading four columns of every session need not copy 23.
                if needed.get(source.relation):
                    columns = _cols(needed[source.relation])
                # Most of the table: a copy would write (and analyze) about all of it, where
                # reading it in place filters it on the way (marts.chatbots' cut of
                # marts.sessions: every chatbot is touched every hour).
                in_place = len(pairs) == 1 and self.sql.cut_in_place(
                    source.relation, pairs[0][0], n
                )
            if in_place:
                self._views.add(cut)
                self.sql.temp_view(cut, f"select * from {source.relation} where {where}")
            else:
                self.sql.temp_table(
                    cut, f"select {columns} from {source.relation} where {where}", params
                )
            replacements[source.relation] = cut
        old, new = self._temp("old", model.name), self._temp("new", model.name)
        # The old rows are found by key once, with their row ids: deleting them by row id
        # costs no second scan of the model's key columns (measured at 365 days: 0.02 s
        # against 0.2-0.5 s a model).
        carried = _cols(
            list(dict.fromkeys([*model.incremental_key, *self.needs.get(model.name, [])]))
        )
        stored = self._stored_range(model.name, [(k, k) for k in model.incremental_key], touched)
        self.sql.temp_table(
            old,
            f"select {self.sql.row_id} as _row, {carried} from {model.name}"
            f" where {key} in (select * from {touched})"
            + "".join(_between(k, bounds[k]) for k in model.incremental_key if k in bounds)
            + (f" and {stored.condition()}" if stored else ""),
        )
        self.sql.temp_table(new, rewrite_sources(model.sql, replacements))
        deleted = self.sql.delete_rows(model.name, old)
        inserted = self.sql.insert_rows(model.name, new)
        written = self._widen_span(model.name, new)
        delta = self._temp("delta", model.name)
        self.sql.temp_table(
            delta,
            f"select 'old' as _side, {carried} from {old}"
            f" union all select 'new' as _side, {carried} from {new}",
        )
        self.deltas[model.name] = delta
        replaced = stored.union(written) if stored and written else None
        return Change(
            "incremental",
            keys=n,
            delta=delta,
            new=new,
            touched=touched,
            span=replaced,
            deleted=deleted,
            inserted=inserted,
        )


def build_in_chunks(
    conn: duckdb.DuckDBPyConnection,
    model: Model,
    tag: str,
    chunk_rows: int | None = None,
    into: str | None = None,
) -> int:
    """Builds ``model`` in full, in chunks of its key space, when its inputs are large.

    The keys are split by a hash into ``n`` chunks of about ``chunk_rows`` input rows; each
    chunk runs the model's SQL over the input rows of its keys only (lookups whole) and appends
    the result. A source's rows are cut by the hash of its mapped columns, a filter on the scan
    (cheaper than joining a key list: measured 0.2 s against 0.5 s per chunk of 5M rows). Returns
    the number of chunks, or 0 when the inputs are small (or the model declares no key mapping):
    the caller then builds it in one statement.
    """
    keyed = [source for source in model.sources if not source.lookup]
    if not model.incremental_key or not keyed:
        return 0
    rows = max(
        int(conn.execute(f"select count(*) from {source.relation}").fetchall()[0][0])
        for source in keyed
    )
    chunks = -(-rows // (chunk_rows or CHUNK_ROWS))
    if chunks <= 1:
        return 0
    for chunk in range(chunks):
        cuts = {}
        for source in keyed:
            # The same values hash alike whatever the column names; as text, whatever the
            # types (a DATE and a TIMESTAMP::DATE, an INTEGER and a BIGINT). The cut is a
            # subquery, not a temp table: a table made and dropped inside the build's
            # transaction keeps its memory until the commit, a copy of every input row.
            hashed = ", ".join(f"{_q(c)}::varchar" for c in source.columns)
            cuts[source.relation] = (
                f"(select rowid, * from {source.relation}"
                f" where hash({hashed}) % {chunks} = {chunk})"
            )
        sql = rewrite_sources(model.sql, cuts)
        if chunk == 0:
            conn.execute(f"create or replace table {into or model.name} as\n{sql}")
        else:
            conn.execute(f"insert into {into or model.name} select * from (\n{sql}\n)")
    return chunks


def unclustered(model: Model) -> str:
    """The scratch table a full build of a model that keeps a span writes first."""
    return f"{model.name}__robofy_unclustered"


def cluster_by_time(
    conn: duckdb.DuckDBPyConnection, model: Model, built: str, chunk_rows: int | None = None
) -> int:
    """Create ``model``'s table from ``built`` (its full build, a scratch table), in the
    order of its span's time column, and drop ``built``.

    A full build writes rows in the order of its key chunks, which are hashes: the rows of the
    last few days' conversations then sit in every row group of the table, so each hourly run
    reads and deletes a little in all of them. Deleting in a row group keeps some of its
    memory until the commit: on a year of messages (103 row groups) that was ~65 MB, enough to
    run a 160MB build out of memory; with the rows in time order the same run touches 3 row
    groups. Incremental builds append, so the order lasts. The rows are copied a time range at
    a time (ranges of about ``chunk_rows`` rows, by hour), so memory stays bounded; rows without
    a time go last. Returns the number of ranges.
    """
    span = model.span
    if span is None:
        raise ValueError(f"{model.name} keeps no span to order it by")
    column = _q(span.column)
    schema, name = built.split(".", 1)
    kind = conn.execute(
        "select data_type from duckdb_columns() where database_name = current_database()"
        " and schema_name = ? and table_name = ? and column_name = ?",
        [schema, name, span.column],
    ).fetchall()
    bucket = column if kind and kind[0][0] == "DATE" else f"date_trunc('hour', {column})"
    counts = conn.execute(
        f"select {bucket}, count(*) from {built} where {column} is not null"
        " group by all order by all"
    ).fetchall()
    starts: list[Any] = []
    filled = limit = chunk_rows or CHUNK_ROWS
    for start, rows in counts:
        if filled + rows > limit and filled:
            starts.append(start)
            filled = 0
        filled += rows
    ranges: list[tuple[str, dict[str, Any]]] = []
    for i, start in enumerate(starts):
        if i + 1 < len(starts):
            where = f"{column} >= $start and {column} < $until"
            ranges.append((where, {"start": start, "until": starts[i + 1]}))
        else:
            ranges.append((f"{column} >= $start", {"start": start}))
    ranges.append((f"{column} is null", {}))
    for i, (where, params) in enumerate(ranges):
        # The first range creates the table: a table made empty (``limit 0``) and then filled
        # in the same transaction read back empty in it (DuckDB 2.0).
        head = f"create or replace table {model.name} as" if i == 0 else f"insert into {model.name}"
        conn.execute(f"{head} select * from {built} where {where}", params or None)
    conn.execute(f"drop table {built}")
    return len(starts)


def _range(column: str, lo: Any, hi: Any, nulls: Any) -> TimeRange:
    if isinstance(lo, date) and isinstance(hi, date):
        return TimeRange(column, lo, hi, bool(nulls))
    return TimeRange(column, None, None, bool(nulls))


def span_table(relation: str) -> str:
    """The span table of a model: ``spans.<schema>__<relation>``."""
    return f"{SPANS}." + relation.replace(".", "__")


def _span_rows(span: Span, relation: str) -> str:
    """The span rows of ``relation``: per key, the range of its time column and whether any
    row's time is null."""
    column = _q(span.column)
    return (
        f"select {_cols(span.per)}, min({column}) as lo, max({column}) as hi,"
        f" bool_or({column} is null) as nulls from {relation} group by all"
    )


def _between(column: str, bounds: tuple[date, date]) -> str:
    """`` and column between <lo> and <hi>``, as literals both back ends read."""
    kind = "timestamp" if isinstance(bounds[0], datetime) else "date"
    lo, hi = (
        value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
        for value in bounds
    )
    return f" and {_q(column)} between {kind} '{lo}' and {kind} '{hi}'"


def _changed_lookups(source: Source, delta: str) -> str:
    """The lookup keys whose row was added or removed, or changed in the columns used."""
    keys = _cols(source.columns)
    if not source.using:
        return f"select distinct {keys} from {delta}"
    return (
        f"select {keys} from {delta} group by {keys} having count(distinct _side) = 1"
        f" union select {keys} from (select distinct {keys}, {_cols(source.using)} from {delta})"
        f" as _versions group by {keys} having count(*) > 1"
    )


def full_reason(
    model: Model,
    state: tuple[str, Watermark] | None,
    exists: bool,
    full_refresh: bool,
    rebuilt: set[str],
) -> str:
    """Why ``model`` must be built in full this time, or "" when it can be built incrementally."""
    if full_refresh:
        return "a full refresh was asked for"
    if not exists:
        return "it does not exist yet"
    if state is None:
        return "it has no incremental state yet"
    if state[0] != fingerprint(model.sql):
        return "its SQL changed since it was built"
    if not model.incremental_key:
        return "its header names no incremental key"
    upstream = sorted(dep for dep in model.deps if dep in rebuilt)
    if upstream:
        return f"{upstream[0]} was rebuilt in full"
    mapped = {source.relation for source in model.sources}
    unmapped = sorted(dep for dep in model.deps if dep not in mapped)
    if unmapped:
        return f"it reads {unmapped[0]}, which its incremental header does not map"
    return ""


def rewrite_sources(sql: str, replacements: dict[str, str]) -> str:
    """``sql`` reading each relation of ``replacements`` from its replacement (a temp table or
    a parenthesized subquery)."""
    for relation, table in replacements.items():
        pattern = re.compile(rf"\b(from|join)(\s+){re.escape(relation)}\b", re.IGNORECASE)
        sql = pattern.sub(rf"\g<1>\g<2>{table}", sql)
    return sql
