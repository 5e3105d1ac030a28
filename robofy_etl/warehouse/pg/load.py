"""Bulk loads into PostgreSQL raw tables: the semantics of ``warehouse.load``, through COPY.

Same contract as the DuckDB functions of the same names (``replace_slice``, ``merge_snapshot``,
``count_slice``): same arguments (a SQLAlchemy ``Connection`` inside a transaction instead of a
DuckDB connection), same ``LoadCounts``, same lineage rules (unchanged rows keep ``_loaded_at``
and ``_run_id``), and every removed row archived in ``meta.removed_rows`` first.

The batch is built by ``load.build_batch`` (so both back ends type and check input the same
way), written as CSV by ``pyarrow.csv`` and sent with psycopg 3's ``COPY ... FROM STDIN`` into
a temporary table on the same connection, inside the caller's transaction; the comparison with
the stored slice is then set-based SQL, as on DuckDB. Only changed and removed keys are deleted
(``DELETE``, never ``TRUNCATE``: readers keep their MVCC snapshot), so a reader sees the slice
before or after the load, never half of it. The slice's advisory locks (``locks.lock_slice``)
are taken first: writers of the same slice take turns.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from robofy_etl.warehouse.errors import WarehouseError

try:
    import psycopg
except ModuleNotFoundError as exc:  # the postgres extra is not installed
    raise WarehouseError(
        "the PostgreSQL warehouse needs psycopg 3: pip install 'robofy-etl[postgres]'"
    ) from exc
from robofy_etl.warehouse.load import (
    _ORD,
    LoadCounts,
    Rows,
    Slice,
    _arrow_type,
    _q,
    _to_array,
    build_batch,
    day_string,
    get_raw_table,
)
from robofy_etl.warehouse.pg.locks import lock_slice
from robofy_etl.warehouse.pg.schema import CURRENT_XID
from robofy_etl.warehouse.tables import RawTable

__all__ = ["copy_arrow", "count_slice", "merge_snapshot", "replace_slice"]

logger = logging.getLogger(__name__)

_names = itertools.count()
# tables.py type (first word) -> PostgreSQL type of the incoming temp table and of casts.
_PG_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "DOUBLE": "double precision",
    "BOOLEAN": "boolean",
    "VARCHAR": "varchar",
    "JSON": "text",  # the incoming payload stays text until it lands (cast to json there)
    "TIMESTAMP": "timestamp",
    "DATE": "date",
}
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, batch_size=8192)


def _driver(conn: sa.Connection) -> psycopg.Connection[Any]:
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise WarehouseError(
            "the PostgreSQL warehouse needs the psycopg (3) driver (postgresql+psycopg://)"
        )
    return raw


def copy_arrow(conn: sa.Connection, relation: str, data: pa.Table) -> int:
    """Append ``data`` to ``relation`` (its columns by name) with ``COPY ... FROM STDIN``.

    The CSV is written by ``pyarrow.csv``: strings always quoted, nulls as empty fields, which
    is how PostgreSQL's CSV format tells an empty string from a null.

    Returns:
        Rows copied.
    """
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(data, sink, _CSV_OPTIONS)
    columns = ", ".join(_q(c) for c in data.column_names)
    with (
        _driver(conn).cursor() as cursor,
        cursor.copy(f"copy {relation} ({columns}) from stdin (format csv)") as copy,
    ):
        copy.write(memoryview(sink.getvalue()))
    return int(data.num_rows)


class _Predicate:
    """A slice as a PostgreSQL condition with bound parameters (psycopg ``%(name)s`` style)."""

    def __init__(self, table: RawTable, slc: Slice, tag: str) -> None:
        allowed = {*table.column_names, "_slice"}
        self._conditions: list[Callable[[str], str]] = []
        self.params: dict[str, Any] = {}
        if slc.day_from is not None:
            self.params[f"{tag}_from"] = day_string(slc.day_from)
            self._conditions.append(lambda a: f"{a}._slice >= %({tag}_from)s")
        if slc.day_to is not None:
            self.params[f"{tag}_to"] = day_string(slc.day_to)
            self._conditions.append(lambda a: f"{a}._slice < %({tag}_to)s")
        for i, (column, values) in enumerate((slc.within or {}).items()):
            _check(table, column, allowed)
            name = f"{tag}_w{i}"
            self.params[name] = _values(table, column, list(values))
            pg_type = _pg_type(table, column)

            def within(a: str, c: str = column, n: str = name, t: str = pg_type) -> str:
                return f"{a}.{_q(c)} = any(%({n})s::{t}[])"

            self._conditions.append(within)
        if slc.keys is not None:
            columns, tuples = slc.keys
            if not columns:
                raise WarehouseError(f"{table.relation}: Slice.keys names no columns")
            for column in columns:
                _check(table, column, allowed)
            cols = list(zip(*tuples, strict=True)) if tuples else [() for _ in columns]
            if len(cols) != len(columns):
                raise WarehouseError(
                    f"{table.relation}: Slice.keys tuples must have {len(columns)} values"
                )
            arrays = []
            for i, (column, values) in enumerate(zip(columns, cols, strict=True)):
                self.params[f"{tag}_k{i}"] = _values(table, column, list(values))
                arrays.append(f"%({tag}_k{i})s::{_pg_type(table, column)}[]")
            aliases = ", ".join(f"c{i}" for i in range(len(columns)))
            source = f"unnest({', '.join(arrays)}) as k({aliases})"

            def keys(a: str, cs: tuple[str, ...] = columns, src: str = source) -> str:
                match = " and ".join(f"k.c{i} = {a}.{_q(c)}" for i, c in enumerate(cs))
                return f"exists (select 1 from {src} where {match})"

            self._conditions.append(keys)

    def sql(self, alias: str) -> str:
        """The condition on rows of ``alias`` (``true`` for the whole table)."""
        return " and ".join(f"({cond(alias)})" for cond in self._conditions) or "true"


def _check(table: RawTable, column: str, allowed: set[str]) -> None:
    if column not in allowed:
        raise WarehouseError(
            f"{table.relation}: cannot slice on unknown column {column!r}; "
            f"use one of {sorted(allowed)}"
        )


def _pg_type(table: RawTable, column: str) -> str:
    return "varchar" if column == "_slice" else _PG_TYPES[table.base_type(column)]


def _values(table: RawTable, column: str, values: list[Any]) -> list[Any]:
    """``values`` checked and converted as the DuckDB back end does (through Arrow)."""
    typ = pa.string() if column == "_slice" else _arrow_type(table, column)
    converted: list[Any] = _to_array(values, typ, table, column).to_pylist()
    return converted


def _scalar(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    with _driver(conn).cursor() as cursor:
        cursor.execute(sql.encode(), params or {})
        row = cursor.fetchone()
    return row[0] if row else None


def _run(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> int:
    """Execute one statement; returns its row count."""
    with _driver(conn).cursor() as cursor:
        cursor.execute(sql.encode(), params or {})
        return cursor.rowcount


def _stage(conn: sa.Connection, table: RawTable, batch: pa.Table, pred: _Predicate) -> str:
    """COPY the batch into a temp table, keep each key's last occurrence, check the slice.

    Returns:
        The temp table holding the deduplicated incoming rows.

    Raises:
        WarehouseError: if an incoming row falls outside the slice.
    """
    name = f"_robofy_in_{next(_names)}"
    columns = [
        *(f"{_q(c)} {_PG_TYPES[table.base_type(c)]}" for c in table.column_names),
        "_payload text",
        "_slice varchar",
        f"{_ORD} bigint",
    ]
    _run(conn, f"create temp table {name} ({', '.join(columns)}) on commit drop")
    copy_arrow(conn, name, batch)
    keys = ", ".join(_q(k) for k in table.key)
    n_keys = _scalar(conn, f"select count(*) from (select distinct {keys} from {name}) d")
    if n_keys < batch.num_rows:
        deduped = f"{name}_dedup"
        _run(
            conn,
            f"""create temp table {deduped} on commit drop as
                select distinct on ({keys}) * from {name} order by {keys}, {_ORD} desc""",
        )
        _run(conn, f"drop table {name}")
        logger.warning(
            "%s: %d incoming row(s) repeat a key %s; kept the last occurrence of each",
            table.relation,
            batch.num_rows - n_keys,
            table.key,
        )
        name = deduped
    _run(conn, f"analyze {name}")  # the planner knows nothing of a fresh temp table
    if pred.params:
        outside = _scalar(
            conn,
            f"select count(*) from {name} as n where not coalesce({pred.sql('n')}, false)",
            pred.params,
        )
        if outside:
            raise WarehouseError(
                f"{table.relation}: {outside} incoming row(s) fall outside the slice being "
                "replaced (check _slice and the slice's conditions)"
            )
    return name


def _stage_status(
    conn: sa.Connection,
    table: RawTable,
    incoming: str,
    old_filter: str,
    params: Mapping[str, Any],
) -> tuple[str, dict[str, int]]:
    """A temp table of each incoming row with its ``_status`` against the stored rows:
    'i' (new key), 'r' (revived soft-deleted key), 'u' (changed) or 's' (same)."""
    status = f"{incoming}_status"
    typed = table.column_names
    key_match = " and ".join(f"o.{_q(k)} = n.{_q(k)}" for k in table.key)
    differs = " or ".join(
        [f"n.{_q(c)} is distinct from o.{_q(c)}" for c in typed if c not in table.key]
        + ["n._payload <> o._payload::text", "n._slice <> o._slice"]
    )
    old_cols = ", ".join([*(_q(c) for c in typed), "_payload", "_slice"])
    revived = "when o._is_deleted then 'r'" if table.snapshot else ""
    if table.snapshot:
        old_cols += ", _is_deleted"
    _run(
        conn,
        f"""
        create temp table {status} on commit drop as
        with o as (select {old_cols} from {table.relation} where {old_filter})
        select
            {", ".join(f"n.{_q(c)}" for c in typed)},
            n._payload,
            n._slice,
            case when o.{_q(table.key[0])} is null then 'i' {revived}
                 when {differs} then 'u' else 's' end as _status
        from {incoming} as n left join o on {key_match}
        """,
        params,
    )
    _run(conn, f"analyze {status}")
    with _driver(conn).cursor() as cursor:
        cursor.execute(f"select _status, count(*) from {status} group by _status".encode())
        return status, {str(s): int(n) for s, n in cursor.fetchall()}


def _insert(
    conn: sa.Connection,
    table: RawTable,
    source: str,
    loaded_at: datetime,
    run_id: str,
    where: str = "true",
) -> int:
    cols = ", ".join([*(_q(c) for c in table.column_names), "_slice"])
    return _run(
        conn,
        f"""
        insert into {table.relation} ({cols}, _payload, _loaded_at, _run_id, _xid)
        select {cols}, _payload::json, %(loaded_at)s, %(run_id)s, {CURRENT_XID} from {source}
        where {where}
        """,
        {"loaded_at": loaded_at, "run_id": run_id},
    )


def _archive_removed(
    conn: sa.Connection,
    table: RawTable,
    pred: _Predicate,
    status: str,
    reason: str,
    run_id: str,
    removed_at: datetime,
) -> None:
    """Copy the slice's rows whose key the incoming rows lack into ``meta.removed_rows``."""
    key = ", ".join(f"t.{_q(k)}" for k in table.key)
    key_match = " and ".join(f"s.{_q(k)} = t.{_q(k)}" for k in table.key)
    # The row as DuckDB archives it: its declared columns, not the PostgreSQL-only _xid.
    row = ", ".join(f"t.{_q(name)}" for name, _ in table.all_columns)
    _run(
        conn,
        f"""
        insert into meta.removed_rows
            (stream, key, slice, reason, row_data, run_id, removed_at, _xid)
        select %(stream)s, concat_ws('/', {key}), t._slice, %(reason)s,
               (select to_json(r) from (select {row}) as r), %(run_id)s, %(removed_at)s,
               {CURRENT_XID}
        from {table.relation} as t
        where {pred.sql("t")} and not exists (select 1 from {status} s where {key_match})
        """,
        {
            **pred.params,
            "stream": table.name,
            "reason": reason,
            "run_id": run_id,
            "removed_at": removed_at,
        },
    )


def _drop(conn: sa.Connection, *names: str) -> None:
    """Drop temp tables now rather than at commit: a sync runs many loads per transaction."""
    _run(conn, f"drop table if exists {', '.join(names)}")


def replace_slice(
    conn: sa.Connection,
    table_name: str,
    rows: Rows,
    slc: Slice,
    *,
    loaded_at: datetime,
    run_id: str,
    removal_reason: str = "not in the rows that replaced its slice",
) -> LoadCounts:
    """Make the rows of ``slc`` in the table exactly ``rows``; leave every other row untouched.

    PostgreSQL twin of ``warehouse.load.replace_slice`` (same arguments, counts and lineage);
    ``conn`` is a SQLAlchemy connection on ``postgresql+psycopg`` inside a transaction.

    Raises:
        WarehouseError: if a row falls outside the slice, a column is unknown, or a value is
            missing or of the wrong type.
    """
    table = get_raw_table(table_name)
    batch = build_batch(table, rows)
    pred = _Predicate(table, slc, f"s{next(_names)}")
    lock_slice(conn, table.name, slc)
    incoming = _stage(conn, table, batch, pred)
    n_new = _scalar(conn, f"select count(*) from {incoming}")
    n_old = _scalar(
        conn, f"select count(*) from {table.relation} as t where {pred.sql('t')}", pred.params
    )
    if n_old == 0:
        _insert(conn, table, incoming, loaded_at, run_id)
        counts = LoadCounts(inserted=n_new)
        _drop(conn, incoming)
    else:
        status, by_status = _stage_status(
            conn, table, incoming, pred.sql(table.relation), pred.params
        )
        _archive_removed(conn, table, pred, status, removal_reason, run_id, loaded_at)
        key_match = " and ".join(f"s.{_q(k)} = t.{_q(k)}" for k in table.key)
        removed = _run(
            conn,
            f"""
            delete from {table.relation} as t
            where {pred.sql("t")}
              and not exists (select 1 from {status} s where s._status = 's' and {key_match})
            """,
            pred.params,
        )
        _insert(conn, table, status, loaded_at, run_id, where="_status <> 's'")
        updated = by_status.get("u", 0)
        counts = LoadCounts(
            inserted=by_status.get("i", 0),
            updated=updated,
            deleted=removed - updated,
            unchanged=by_status.get("s", 0),
        )
        _drop(conn, incoming, status)
    logger.debug("%s [%s]: %s", table.relation, slc.describe(), counts)
    return counts


def merge_snapshot(
    conn: sa.Connection,
    table_name: str,
    rows: Rows,
    within: Mapping[str, Sequence[Any]] | None = None,
    *,
    loaded_at: datetime,
    run_id: str,
) -> LoadCounts:
    """Merge a full snapshot into a snapshot table, soft-deleting keys that vanished.

    PostgreSQL twin of ``warehouse.load.merge_snapshot`` (same arguments, counts and lineage).

    Raises:
        WarehouseError: if the table is not a snapshot table or a row is outside ``within``.
    """
    table = get_raw_table(table_name)
    if not table.snapshot:
        raise WarehouseError(
            f"{table.relation} is not a snapshot table; load it with replace() and a Slice"
        )
    batch = build_batch(table, rows)
    scope = Slice(within=within)
    pred = _Predicate(table, scope, f"s{next(_names)}")
    lock_slice(conn, table.name, scope)
    incoming = _stage(conn, table, batch, pred)
    status, by_status = _stage_status(conn, table, incoming, "true", {})
    key_match = " and ".join(f"s.{_q(k)} = t.{_q(k)}" for k in table.key)
    vanished = _run(
        conn,
        f"""
        update {table.relation} as t
        set _is_deleted = true, _deleted_at = %(loaded_at)s, _loaded_at = %(loaded_at)s,
            _run_id = %(run_id)s, _xid = {CURRENT_XID}
        where {pred.sql("t")} and not t._is_deleted
          and not exists (select 1 from {status} s where {key_match})
        """,
        {**pred.params, "loaded_at": loaded_at, "run_id": run_id},
    )
    _run(
        conn,
        f"""
        delete from {table.relation} as t
        where exists (select 1 from {status} s where s._status in ('u', 'r') and {key_match})
        """,
    )
    _insert(conn, table, status, loaded_at, run_id, where="_status <> 's'")
    _drop(conn, incoming, status)
    counts = LoadCounts(
        inserted=by_status.get("i", 0) + by_status.get("r", 0),
        updated=by_status.get("u", 0),
        deleted=vanished,
        unchanged=by_status.get("s", 0),
    )
    logger.debug("%s snapshot [%s]: %s", table.relation, scope.describe(), counts)
    return counts


def count_slice(conn: sa.Connection, table_name: str, slc: Slice) -> int:
    """Rows of ``raw.<table_name>`` inside ``slc`` (soft-deleted snapshot rows excluded)."""
    table = get_raw_table(table_name)
    pred = _Predicate(table, slc, "count")
    alive = " and not t._is_deleted" if table.snapshot else ""
    return int(
        _scalar(
            conn,
            f"select count(*) from {table.relation} t where {pred.sql('t')}{alive}",
            pred.params,
        )
    )
