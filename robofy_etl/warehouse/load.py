"""Bulk loads into raw tables: replace exactly one slice, or merge a snapshot, set-based."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import duckdb
import numpy as np
import pyarrow as pa

from robofy_etl.warehouse.errors import WarehouseError
from robofy_etl.warehouse.tables import RAW_TABLES, RawTable

if TYPE_CHECKING:  # pandas costs ~0.3 s to import; only DataFrame input needs it
    import pandas as pd

__all__ = [
    "LoadCounts",
    "Rows",
    "Slice",
    "build_batch",
    "count_slice",
    "day_string",
    "encode_payload",
    "get_raw_table",
    "merge_snapshot",
    "replace_slice",
]

logger = logging.getLogger(__name__)

Rows: TypeAlias = "Sequence[Mapping[str, Any]] | pd.DataFrame | pa.Table"

# DuckDB type (first word of the declared type) -> Arrow type used for the incoming batch.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int16(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
}
# Column holding each incoming row's position, so "last occurrence wins" is well defined.
_ORD = "_ord"
_names = itertools.count()


def _json_dumps_reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _make_payload_encoder() -> Callable[[Any], str]:
    """Return a function producing exactly ``_json_dumps_reference``'s text, as fast as possible.

    ``json.dumps`` with options builds a new encoder per call and its Python wrapper costs about
    a quarter of the time on small records, so build the C encoder once (the same object
    ``JSONEncoder.iterencode`` builds internally). Falls back to a shared ``JSONEncoder`` if the
    C accelerator is missing or behaves differently on this Python.
    """
    fallback = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback
    try:
        # markers=None: no cycle check (records parsed from JSON cannot be cyclic).
        c_encode = make(
            None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True
        )

        def encode(value: Any) -> str:
            return "".join(c_encode(value, 0))

        probe = {
            "b": [1, 2.5, None, True],
            "a": {"z": "\u00e9\n", "y": date(2026, 1, 2)},
            "c": 1e16,
        }
        if encode(probe) == _json_dumps_reference(probe):
            return encode
    except (TypeError, ValueError):  # pragma: no cover - depends on the Python build
        pass
    return fallback  # pragma: no cover


# Serializes every _payload: the one unavoidable per-row Python cost of a load.
encode_payload: Callable[[Any], str] = _make_payload_encoder()


@dataclass(frozen=True)
class LoadCounts:
    """What one load changed, by key comparison of the stored slice with the incoming rows.

    Attributes:
        inserted: keys that were not in the slice (or, for snapshots, were soft-deleted).
        updated: keys whose payload or typed columns changed.
        deleted: keys removed from the slice (for snapshots: newly soft-deleted).
        unchanged: keys stored identically; their lineage (``_loaded_at``, ``_run_id``) is kept.
    """

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    @property
    def rows(self) -> int:
        """Rows the slice holds after the load (live rows, for snapshots)."""
        return self.inserted + self.updated + self.unchanged

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict, e.g. for Dagster metadata."""
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True)
class Slice:
    """The rows one load replaces: every row matching ALL of the given conditions.

    ``Slice()`` (no condition) is the whole table.

    Attributes:
        day_from: first day (inclusive) of a half-open window on ``_slice`` ('YYYY-MM-DD').
        day_to: end day (exclusive) of that window.
        within: column -> allowed values (``column IN values``); an empty sequence matches
            nothing.
        keys: ``(columns, tuples)``: the row's values in ``columns`` form one of ``tuples``.
    """

    day_from: date | str | None = None
    day_to: date | str | None = None
    within: Mapping[str, Sequence[Any]] | None = None
    keys: tuple[tuple[str, ...], Sequence[tuple[Any, ...]]] | None = None

    def describe(self) -> str:
        """A short human-readable label, e.g. ``2026-10-01..2026-10-15 chatbot_id[2]``."""
        parts: list[str] = []
        if self.day_from is not None or self.day_to is not None:
            lo = day_string(self.day_from) if self.day_from is not None else ""
            hi = day_string(self.day_to) if self.day_to is not None else ""
            parts.append(f"{lo}..{hi}")
        for column, values in (self.within or {}).items():
            parts.append(f"{column}[{len(values)}]")
        if self.keys is not None:
            parts.append(f"({','.join(self.keys[0])})[{len(self.keys[1])}]")
        return " ".join(parts) or "all"


def get_raw_table(name: str) -> RawTable:
    """Look up a raw table by name (with or without the ``raw.`` prefix).

    Raises:
        WarehouseError: if no such table is defined in ``tables.py``.
    """
    table = RAW_TABLES.get(name.removeprefix("raw."))
    if table is None:
        raise WarehouseError(f"unknown raw table {name!r}; known: {sorted(RAW_TABLES)}")
    return table


def day_string(value: date | str) -> str:
    """A day as 'YYYY-MM-DD' (the ``_slice`` format); datetimes are truncated to their date."""
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _q(identifier: str) -> str:
    """Quote an identifier (they only ever come from tables.py; quoting is belt and braces)."""
    return '"' + identifier.replace('"', '""') + '"'


def _arrow_type(table: RawTable, column: str) -> pa.DataType:
    return _ARROW_TYPES[table.base_type(column)]


def _to_array(values: Any, typ: pa.DataType, table: RawTable, column: str) -> pa.Array:
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise WarehouseError(
            f"{table.relation}.{column}: cannot convert values to {typ}: {exc}"
        ) from exc


def build_batch(table: RawTable, rows: Rows) -> pa.Table:
    """Build the typed Arrow batch for ``rows``: typed columns, ``_payload`` (JSON), ``_slice``.

    Column types come from ``tables.py``, so a column that is entirely None is still typed.
    A ``_ord`` column numbers the rows in arrival order.

    Args:
        table: the target raw table.
        rows: dicts with exactly the table's typed columns plus ``_payload`` (a dict) and
            ``_slice``; or a DataFrame / Arrow table with those columns (``_payload`` as dicts,
            or as already-serialized JSON text).

    Returns:
        The Arrow table, in ``table.columns`` order followed by ``_payload``, ``_slice``, ``_ord``.

    Raises:
        WarehouseError: if a column is missing, a value does not fit its type, or a NOT NULL
            column holds a null.
    """
    names = [*table.column_names, "_payload", "_slice"]
    if isinstance(rows, pa.Table) or _is_dataframe(rows):
        arrays = _columns_from_frame(table, cast("pd.DataFrame | pa.Table", rows), names)
    else:
        arrays = _columns_from_dicts(table, cast("Sequence[Mapping[str, Any]]", rows))
    n = len(arrays[0]) if arrays else 0
    arrays.append(pa.array(np.arange(n, dtype=np.int64)))
    batch = pa.Table.from_arrays(arrays, names=[*names, _ORD])
    for name in names:
        if batch.column(name).null_count and (name == "_slice" or table.is_not_null(name)):
            raise WarehouseError(
                f"{table.relation}: {batch.column(name).null_count} incoming row(s) have no "
                f"value for NOT NULL column {name!r}"
            )
    return batch


def _columns_from_dicts(table: RawTable, rows: Sequence[Mapping[str, Any]]) -> list[pa.Array]:
    if rows:
        expected = {*table.column_names, "_payload", "_slice"}
        got = set(rows[0])
        if got != expected:
            raise WarehouseError(
                f"{table.relation}: rows must have exactly the columns {sorted(expected)}; "
                f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
            )
    arrays: list[pa.Array] = []
    try:
        for column in table.column_names:
            values = [row[column] for row in rows]
            arrays.append(_to_array(values, _arrow_type(table, column), table, column))
        encode = encode_payload
        arrays.append(pa.array([encode(row["_payload"]) for row in rows], type=pa.string()))
        arrays.append(_to_array([row["_slice"] for row in rows], pa.string(), table, "_slice"))
    except KeyError as exc:
        raise WarehouseError(f"{table.relation}: a row has no {exc.args[0]!r} column") from exc
    return arrays


def _is_dataframe(rows: object) -> bool:
    return type(rows).__module__.startswith("pandas") and hasattr(rows, "columns")


def _columns_from_frame(
    table: RawTable, frame: pd.DataFrame | pa.Table, names: list[str]
) -> list[pa.Array]:
    data = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    missing = [name for name in names if name not in data.column_names]
    if missing:
        raise WarehouseError(f"{table.relation}: incoming batch lacks columns {missing}")
    arrays: list[pa.Array] = []
    for name in names:
        column = data.column(name).combine_chunks()
        if name == "_payload" and not pa.types.is_string(column.type):
            encode = encode_payload
            arrays.append(pa.array([encode(v) for v in column.to_pylist()], type=pa.string()))
            continue
        target = pa.string() if name in ("_payload", "_slice") else _arrow_type(table, name)
        if column.type == target:
            arrays.append(column)
            continue
        try:
            arrays.append(column.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise WarehouseError(
                f"{table.relation}.{name}: cannot cast {column.type} to {target}: {exc}"
            ) from exc
    return arrays


class _Predicate:
    """A slice compiled to SQL: conditions with bound parameters and registered value tables."""

    def __init__(self, table: RawTable, slc: Slice, tag: str) -> None:
        allowed = {*table.column_names, "_slice"}
        self._conditions: list[Callable[[str], str]] = []
        self.params: dict[str, Any] = {}
        self.views: dict[str, pa.Table] = {}
        if slc.day_from is not None:
            self.params[f"{tag}_day_from"] = day_string(slc.day_from)
            self._conditions.append(lambda a: f"{a}._slice >= ${tag}_day_from")
        if slc.day_to is not None:
            self.params[f"{tag}_day_to"] = day_string(slc.day_to)
            self._conditions.append(lambda a: f"{a}._slice < ${tag}_day_to")
        for i, (column, values) in enumerate((slc.within or {}).items()):
            self._check(table, column, allowed)
            view = f"{tag}_within_{i}"
            typ = pa.string() if column == "_slice" else _arrow_type(table, column)
            self.views[view] = pa.table({"v": _to_array(list(values), typ, table, column)})

            def within_condition(a: str, c: str = column, v: str = view) -> str:
                return f"{a}.{_q(c)} in (select v from {v})"

            self._conditions.append(within_condition)
        if slc.keys is not None:
            columns, tuples = slc.keys
            if not columns:
                raise WarehouseError(f"{table.relation}: Slice.keys names no columns")
            for column in columns:
                self._check(table, column, allowed)
            view = f"{tag}_keys"
            cols = list(zip(*tuples, strict=True)) if tuples else [() for _ in columns]
            if len(cols) != len(columns):
                raise WarehouseError(
                    f"{table.relation}: Slice.keys tuples must have {len(columns)} values"
                )
            self.views[view] = pa.table(
                {
                    c: _to_array(
                        list(v), pa.string() if c == "_slice" else _arrow_type(table, c), table, c
                    )
                    for c, v in zip(columns, cols, strict=True)
                }
            )

            def keys_condition(a: str, view: str = view, columns: tuple[str, ...] = columns) -> str:
                match = " and ".join(f"k.{_q(c)} = {a}.{_q(c)}" for c in columns)
                return f"exists (select 1 from {view} k where {match})"

            self._conditions.append(keys_condition)

    @staticmethod
    def _check(table: RawTable, column: str, allowed: set[str]) -> None:
        if column not in allowed:
            raise WarehouseError(
                f"{table.relation}: cannot slice on unknown column {column!r}; "
                f"use one of {sorted(allowed)}"
            )

    def sql(self, alias: str) -> str:
        """The predicate for rows of ``alias`` (``true`` for the whole table)."""
        return " and ".join(f"({cond(alias)})" for cond in self._conditions) or "true"


@contextmanager
def _scratch(conn: duckdb.DuckDBPyConnection, views: Mapping[str, pa.Table]) -> Iterator[str]:
    """Register ``views`` and yield a unique temp-table prefix; drop/unregister all afterwards."""
    prefix = f"_robofy_tmp_{next(_names)}"
    for name, data in views.items():
        conn.register(name, data)
    try:
        yield prefix
    finally:
        try:
            for suffix in ("dedup", "status"):
                conn.execute(f"drop table if exists {prefix}_{suffix}")
            for name in views:
                conn.unregister(name)
        except duckdb.Error:
            # The transaction is already aborted; its rollback discards the temp tables.
            logger.debug("cleanup of %s skipped: transaction aborted", prefix)


def _first_row(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> tuple[Any, ...]:
    """First row of a statement's result, read to the end.

    DuckDB 2 refuses ``register()`` on a connection whose last result was not read to the end.
    """
    rows = conn.execute(sql, params or {}).fetchall()
    return tuple(rows[0])


def _prepare_incoming(
    conn: duckdb.DuckDBPyConnection,
    table: RawTable,
    incoming: str,
    prefix: str,
    pred: _Predicate,
    n_in: int,
) -> tuple[str, int]:
    """Deduplicate the batch by key (last occurrence wins) and check it lies inside the slice.

    Returns:
        The relation holding the deduplicated rows, and its row count.

    Raises:
        WarehouseError: if an incoming row falls outside the slice.
    """
    keys = ", ".join(_q(k) for k in table.key)
    (n_keys,) = _first_row(conn, f"select count(*) from (select distinct {keys} from {incoming})")
    relation = incoming
    if n_keys < n_in:
        # Only pay for the window when there are duplicates (it costs more than the load).
        relation = f"{prefix}_dedup"
        conn.execute(
            f"""
            create temp table {relation} as
            select * from {incoming}
            qualify row_number() over (partition by {keys} order by {_ORD} desc) = 1
            """
        )
        logger.warning(
            "%s: %d incoming row(s) repeat a key %s; kept the last occurrence of each",
            table.relation,
            n_in - n_keys,
            table.key,
        )
    if pred.params or pred.views:
        (outside,) = _first_row(
            conn,
            f"select count(*) from {relation} as n where not coalesce({pred.sql('n')}, false)",
            pred.params,
        )
        if outside:
            raise WarehouseError(
                f"{table.relation}: {outside} incoming row(s) fall outside the slice being "
                "replaced (check _slice and the slice's conditions)"
            )
    return relation, n_keys


def _stage_status(
    conn: duckdb.DuckDBPyConnection,
    table: RawTable,
    relation: str,
    status: str,
    old_filter: str,
    params: Mapping[str, Any],
) -> dict[str, int]:
    """Create temp table ``status``: each incoming row with its status against the stored rows.

    ``_status`` is 'i' (new key), 'r' (revived soft-deleted key), 'u' (changed) or 's' (same).

    Returns:
        Row counts per status.
    """
    typed = table.column_names
    key_match = " and ".join(f"o.{_q(k)} = n.{_q(k)}" for k in table.key)
    differs = " or ".join(
        [f"n.{_q(c)} is distinct from o.{_q(c)}" for c in typed if c not in table.key]
        + ["n._payload <> o._payload::varchar", "n._slice <> o._slice"]
    )
    old_cols = ", ".join([*(_q(c) for c in typed), "_payload", "_slice"])
    revived = "when o._is_deleted then 'r'" if table.snapshot else ""
    if table.snapshot:
        old_cols += ", _is_deleted"
    conn.execute(
        f"""
        create temp table {status} as
        with o as (select {old_cols} from {table.relation} where {old_filter})
        select
            {", ".join(f"n.{_q(c)}" for c in typed)},
            n._payload,
            n._slice,
            case when o.{_q(table.key[0])} is null then 'i' {revived}
                 when {differs} then 'u' else 's' end as _status
        from {relation} as n left join o on {key_match}
        """,
        params,
    )
    return dict(conn.execute(f"select _status, count(*) from {status} group by all").fetchall())


def _insert(
    conn: duckdb.DuckDBPyConnection,
    table: RawTable,
    source: str,
    loaded_at: datetime,
    run_id: str,
    where: str = "true",
) -> None:
    cols = [*(_q(c) for c in table.column_names), "_slice"]
    conn.execute(
        f"""
        insert into {table.relation} ({", ".join(cols)}, _payload, _loaded_at, _run_id)
        select {", ".join(cols)}, _payload::json, $loaded_at, $run_id from {source}
        where {where}
        """,
        {"loaded_at": loaded_at, "run_id": run_id},
    )


def replace_slice(
    conn: duckdb.DuckDBPyConnection,
    table_name: str,
    rows: Rows,
    slc: Slice,
    *,
    loaded_at: datetime,
    run_id: str,
    removal_reason: str = "not in the rows that replaced its slice",
) -> LoadCounts:
    """Make the rows of ``slc`` in the table exactly ``rows``; leave every other row untouched.

    Set-based: the batch is registered as an Arrow table, compared with the stored slice by key,
    and only changed keys are deleted and re-inserted, so unchanged rows keep their lineage and a
    re-run leaves the table identical. Run it inside a transaction (``Warehouse.transaction``).
    A stored key the new rows no longer hold is copied, as it was stored, into
    ``meta.removed_rows`` with ``removal_reason`` before it is deleted: nothing is lost for good.

    Args:
        conn: an open connection, inside a transaction.
        table_name: a raw table from ``tables.py``.
        rows: the complete new contents of the slice (see ``build_batch``).
        slc: which stored rows the load replaces.
        loaded_at: the transaction's load timestamp (naive UTC).
        run_id: the run writing the rows.
        removal_reason: why keys absent from ``rows`` are removed (kept with their copy).

    Returns:
        The counts by key comparison.

    Raises:
        WarehouseError: if a row falls outside the slice, a column is unknown, or a value is
            missing or of the wrong type.
    """
    table = get_raw_table(table_name)
    batch = build_batch(table, rows)
    pred = _Predicate(table, slc, f"_robofy_s{next(_names)}")
    incoming = f"_robofy_in_{next(_names)}"
    with _scratch(conn, {**pred.views, incoming: batch}) as prefix:
        relation, n_new = _prepare_incoming(conn, table, incoming, prefix, pred, batch.num_rows)
        (n_old,) = _first_row(
            conn, f"select count(*) from {table.relation} as t where {pred.sql('t')}", pred.params
        )
        if n_old == 0:
            # First load of the slice (backfills): nothing to compare, insert straight away.
            _insert(conn, table, relation, loaded_at, run_id)
            counts = LoadCounts(inserted=n_new)
        else:
            status = f"{prefix}_status"
            by_status = _stage_status(
                conn, table, relation, status, pred.sql(table.relation), pred.params
            )
            key_match = " and ".join(f"s.{_q(k)} = t.{_q(k)}" for k in table.key)
            _archive_removed(
                conn, table, pred, status, key_match, removal_reason, run_id, loaded_at
            )
            (removed,) = _first_row(
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
    logger.debug("%s [%s]: %s", table.relation, slc.describe(), counts)
    return counts


def _archive_removed(
    conn: duckdb.DuckDBPyConnection,
    table: RawTable,
    pred: _Predicate,
    status: str,
    key_match: str,
    reason: str,
    run_id: str,
    removed_at: datetime,
) -> None:
    """Copy the slice's rows whose key the incoming rows lack into ``meta.removed_rows``."""
    key = ", ".join(f"t.{_q(k)}" for k in table.key)
    conn.execute(
        f"""
        insert into meta.removed_rows
        select $stream, concat_ws('/', {key}), t._slice, $reason, to_json(t), $run_id,
               $removed_at
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


def merge_snapshot(
    conn: duckdb.DuckDBPyConnection,
    table_name: str,
    rows: Rows,
    within: Mapping[str, Sequence[Any]] | None = None,
    *,
    loaded_at: datetime,
    run_id: str,
) -> LoadCounts:
    """Merge a full snapshot into a snapshot table, soft-deleting keys that vanished.

    Keys are matched across the whole table (a chatbot that moved project is updated, not
    duplicated). Keys stored within ``within`` but absent from ``rows`` get ``_is_deleted = true``
    and ``_deleted_at = loaded_at`` (once: an already deleted row is left as it is); a deleted key
    that reappears is revived and counted as inserted. Unchanged rows keep their lineage.

    Args:
        conn: an open connection, inside a transaction.
        table_name: a snapshot table (``RawTable.snapshot``).
        rows: every live record in the scope (see ``build_batch``).
        within: the snapshot's scope, e.g. ``{"project_id": [1, 2]}``; None for the whole table.
        loaded_at: the transaction's load timestamp (naive UTC).
        run_id: the run writing the rows.

    Returns:
        The counts by key comparison.

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
    pred = _Predicate(table, scope, f"_robofy_s{next(_names)}")
    incoming = f"_robofy_in_{next(_names)}"
    with _scratch(conn, {**pred.views, incoming: batch}) as prefix:
        relation, _ = _prepare_incoming(conn, table, incoming, prefix, pred, batch.num_rows)
        status = f"{prefix}_status"
        by_status = _stage_status(conn, table, relation, status, "true", {})
        key_match = " and ".join(f"s.{_q(k)} = t.{_q(k)}" for k in table.key)
        (vanished,) = _first_row(
            conn,
            f"""
            update {table.relation} as t
            set _is_deleted = true, _deleted_at = $loaded_at, _loaded_at = $loaded_at,
                _run_id = $run_id
            where {pred.sql("t")} and not t._is_deleted
              and not exists (select 1 from {status} s where {key_match})
            """,
            {**pred.params, "loaded_at": loaded_at, "run_id": run_id},
        )
        conn.execute(
            f"""
            delete from {table.relation} as t
            where exists (select 1 from {status} s where s._status in ('u', 'r') and {key_match})
            """
        )
        _insert(conn, table, status, loaded_at, run_id, where="_status <> 's'")
    counts = LoadCounts(
        inserted=by_status.get("i", 0) + by_status.get("r", 0),
        updated=by_status.get("u", 0),
        deleted=vanished,
        unchanged=by_status.get("s", 0),
    )
    logger.debug("%s snapshot [%s]: %s", table.relation, scope.describe(), counts)
    return counts


def count_slice(conn: duckdb.DuckDBPyConnection, table_name: str, slc: Slice) -> int:
    """Rows of ``raw.<table_name>`` inside ``slc`` (soft-deleted snapshot rows excluded)."""
    table = get_raw_table(table_name)
    predicate = _Predicate(table, slc, "count")
    alive = " and not t._is_deleted" if table.snapshot else ""
    with _scratch(conn, predicate.views):
        row = conn.execute(
            f"select count(*) from {table.relation} t where {predicate.sql('t')}{alive}",
            predicate.params,
        ).fetchone()
    return int(row[0]) if row else 0
