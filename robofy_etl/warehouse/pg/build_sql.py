"""The PostgreSQL spellings of an incremental model build, and its state in ``meta.model_state``.

``incremental.Planner`` plans every build (touched keys, cuts, deltas, when to go full); this
module is what PostgreSQL spells its own way: ``ctid`` for DuckDB's ``rowid`` (deleted with a
TID scan), a column list for ``* exclude (_row)``, ``drop`` + ``create temp table`` for
``create or replace``, short numbered temp-table names (PostgreSQL cuts names at 63 bytes),
removed keys read from ``row_data`` through the try-cast helpers of ``pg/models.py``, and the
watermark.

The watermark is a transaction id, not a time. On DuckDB one writer at a time means "rows
stamped after the last build" is exactly what changed since. On PostgreSQL loads of different
slices run at once and ``_loaded_at`` is when the loading *transaction* began
(``PgTransaction.loaded_at``), before it took any lock: a load that began before the last build
read its watermark and committed after it would stamp its rows earlier than the watermark, and
a time watermark would skip them for good. Waiting for the loads in flight (their advisory
locks) does not close that gap either: a transaction that has begun but not yet taken its
locks is invisible to them.

So a build runs in a REPEATABLE READ transaction, which reads one snapshot from its first
statement to its commit, and records ``watermark_xid``: the snapshot's ``xmin``, the oldest
transaction still in flight when it was taken (``pg_snapshot_xmin(pg_current_snapshot())``).
Every transaction that committed rows the build did *not* see was in flight then or began
later (or got its id later), so its id is at least that ``xmin``. Every raw row and every
``meta.removed_rows`` row records the (top-level, 64-bit) id of the transaction that wrote it
in ``_xid`` (a column default, ``pg_current_xact_id()``; soft deletes set it again), and the
next build treats as changed every row whose ``_xid`` is at least the watermark: nothing
committed after a build's snapshot is ever missed, whatever its ``_loaded_at``; rows a build
saw but whose transaction was younger than its ``xmin`` are simply read twice (replacing a
key's rows is idempotent). ``_xid`` is indexed, so finding the change reads the index range of
the transactions since, not the table: measured on 5 million raw messages, a filter on the
``xmin`` system column (which has no index) read the whole table (0.5-0.6 s, growing with the
history).

Builds take turns through ``models.BUILD_LOCK``, taken before the transaction's snapshot (see
``pg.models.build_transaction``): a build that waited for another one would otherwise read
the marts and state from before it.

Each model's row count is kept in ``meta.model_state.row_count`` (PostgreSQL only), because
``count(*)`` reads the whole table here (0.1-0.27 s per message table at 90 days of history,
growing with it): a full build keeps the count its ``create table ... as`` reports, an
incremental one the previous count minus the rows it deleted plus the rows it inserted (the
statements' row counts), an unchanged one the previous count. The count is written in the
build's transaction, with the rows it counts, so it cannot drift from them; a state row
without one (a warehouse built before it was kept) is counted once, exactly. The planner's
full-or-incremental test reads it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from robofy_etl.warehouse.incremental import Change, Watermark, fingerprint, grain_sql

__all__ = ["PgBuildSQL"]

logger = logging.getLogger(__name__)

# tables.py key types -> the try-cast helper reading them from JSON text (pg/models.py).
_HELPERS = {
    "BIGINT": "meta.try_cast_bigint",
    "INTEGER": "meta.try_cast_integer",
    "BOOLEAN": "meta.try_cast_boolean",
    "DOUBLE": "meta.try_cast_double_precision",
    "TIMESTAMP": "meta.try_cast_timestamp",
    "DATE": "meta.try_cast_date",
}

# The columns PostgreSQL's meta.model_state has beyond DuckDB's (pg/schema.py), added to a
# warehouse made before them: the watermark as a transaction id, and the table's row count.
_STATE_COLUMNS = {"watermark_xid": "BIGINT", "row_count": "BIGINT"}


# A cut by one column that keeps at least this share of the column's distinct values is read
# in place (a temp view), not copied (see PgBuildSQL.cut_in_place).
IN_PLACE_SHARE = 0.5


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (where a value cannot be a bound parameter)."""
    return "'" + text.replace("'", "''") + "'"


class PgBuildSQL:
    """``incremental.BuildSQL`` on a SQLAlchemy connection to PostgreSQL (psycopg 3), inside
    the build's REPEATABLE READ transaction."""

    row_id = "ctid"
    spans = False  # a PostgreSQL cut scans the source's rows whatever it filters on

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        # model -> its table's row count, as kept in meta.model_state (load_state, save_state)
        self.row_counts: dict[str, int] = {}

    # -- statements -------------------------------------------------------------------------

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params:
            raise ValueError("PgBuildSQL inlines its values; it takes no parameters")
        # No parameters: a literal % must not read as a placeholder.
        result = self.conn.exec_driver_sql(sql.replace("%", "%%"))
        return [tuple(row) for row in result] if result.returns_rows else []

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.rows(sql, params)

    def write(self, sql: str) -> int:
        """Run a statement that writes rows (``insert``, ``delete``, ``create table ... as``)
        and return how many it wrote, as PostgreSQL reports it (its command tag)."""
        count = self.conn.exec_driver_sql(sql.replace("%", "%%")).rowcount
        if count < 0:
            raise RuntimeError(f"PostgreSQL reported no row count for: {sql[:80]}")
        return count

    def temp_name(self, tag: str, kind: str, relation: str, n: int) -> str:
        del relation
        return f"{tag}_{n}_{kind}"

    def temp_table(self, name: str, select: str, params: Mapping[str, Any] | None = None) -> None:
        self.run(f"drop table if exists {name}")
        self.run(f"create temp table {name} on commit drop as\n{select}", params)
        self.run(f"analyze {name}")  # temp tables are never analyzed by autovacuum

    def temp_view(self, name: str, select: str) -> None:
        # It reads the build's touched keys, a temp table dropped at commit: the view goes with
        # it (ON COMMIT DROP cascades), or earlier with the planner's drop_all.
        self.run(f"drop view if exists {name}")
        self.run(f"create temp view {name} as\n{select}")

    def cut_in_place(self, relation: str, column: str, keys: int) -> bool:
        # From the table's statistics (autovacuum's, or an analyze): the number of distinct
        # values of the column, or (negative) their share of its rows. Without statistics,
        # the cut is copied as before.
        schema, table = relation.split(".", 1)
        found = self.rows(
            "select s.n_distinct, c.reltuples from pg_stats s, pg_class c"
            f" where c.oid = {sql_literal(relation)}::regclass"
            f" and s.schemaname = {sql_literal(schema)} and s.tablename = {sql_literal(table)}"
            f" and s.attname = {sql_literal(column)}"
        )
        if not found:
            return False
        n_distinct, reltuples = float(found[0][0]), float(found[0][1])
        distinct = n_distinct if n_distinct > 0 else -n_distinct * max(reltuples, 0.0)
        return distinct > 0 and keys >= IN_PLACE_SHARE * distinct

    def changed_since(self, stamp: str, since: Watermark) -> tuple[str, dict[str, Any]]:
        del stamp  # every raw and removed row records the transaction that wrote it: _xid
        if not isinstance(since, int):
            return "true", {}
        return f"_xid >= {int(since)}", {}

    def removed_key(self, column: str, sql_type: str) -> str:
        text = f"(row_data->>'{column}')"
        helper = _HELPERS.get(sql_type.upper())
        return f"{helper}({text})" if helper else text

    def delete_rows(self, relation: str, old: str) -> int:
        return self.write(f"delete from {relation} where ctid = any(array(select _row from {old}))")

    def insert_rows(self, relation: str, new: str) -> int:
        return self.write(f"insert into {relation} select * from {new}")

    def needed_columns(self, sql: str) -> Mapping[str, Sequence[str]] | None:
        # Not worth a plan here: a PostgreSQL cut scans the source's rows whatever it copies.
        del sql
        return None

    # -- state ------------------------------------------------------------------------------

    def prepare_state(self) -> None:
        """Give ``meta.model_state`` the PostgreSQL columns a warehouse made before them lacks.

        Asked first: ``add column if not exists`` would lock the table even when it is there.
        A state row from before has none of them: its watermark makes the model's next build
        full (``stale_reason``), a missing row count is counted once (``pg.models``).
        """
        present = {
            str(row[0])
            for row in self.rows(
                "select column_name from information_schema.columns"
                " where table_schema = 'meta' and table_name = 'model_state'"
            )
        }
        for column, sql_type in _STATE_COLUMNS.items():
            if column not in present:
                self.run(f"alter table meta.model_state add column {column} {sql_type}")

    def watermark_now(self) -> tuple[int, int]:
        """``(xmin, xmax)`` of this transaction's snapshot, as 64-bit transaction ids."""
        row = self.rows(
            "select pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
            " from pg_current_snapshot() as s"
        )[0]
        return int(row[0]), int(row[1])

    def load_state(self) -> dict[str, tuple[str, Watermark]]:
        """``model -> (fingerprint, watermark_xid)`` of every model built so far; the row
        counts kept beside them go to ``row_counts``."""
        rows = self.rows(
            "select model, fingerprint, watermark_xid, row_count from meta.model_state"
        )
        self.row_counts = {str(m): int(n) for m, _, _, n in rows if n is not None}
        return {str(m): (str(f), None if w is None else int(w)) for m, f, w, _ in rows}

    @staticmethod
    def stale_reason(watermark: Watermark, xmax: int) -> str:
        """Why a model's watermark cannot be compared with row ids ("" if it can)."""
        del xmax  # 64-bit ids: a watermark never wraps
        if watermark is None:
            return "its state has no transaction watermark (built before PostgreSQL kept one)"
        return ""

    def grain_counts(self, relation: str, key: Sequence[str]) -> tuple[int, int, int]:
        """``(rows, duplicate keys, rows with a null key column)`` of ``relation`` on ``key``."""
        row = self.rows(grain_sql(relation, key))[0]
        return int(row[0]), int(row[1]), int(row[2])

    def save_state(
        self,
        model: str,
        sql: str,
        watermark: int,
        change: Change,
        grain: tuple[int, int, int] | None,
        row_count: int,
    ) -> None:
        """Record a model's build (as ``incremental.save_state``; ``grain`` None keeps the
        previous counts) and how many rows its table holds now."""
        rows, duplicates, null_keys = grain or (None, None, None)
        self.conn.execute(
            sa.text(
                """insert into meta.model_state (model, fingerprint, watermark, built_at, mode,
                       keys_rebuilt, grain_rows, grain_duplicates, grain_null_keys,
                       watermark_xid, row_count)
                   values (:model, :fingerprint, :now, :now, :mode, :keys, :rows, :duplicates,
                       :null_keys, :xid, :row_count)
                   on conflict (model) do update set
                       fingerprint = excluded.fingerprint,
                       watermark = excluded.watermark,
                       built_at = excluded.built_at,
                       mode = excluded.mode,
                       keys_rebuilt = excluded.keys_rebuilt,
                       grain_rows = coalesce(excluded.grain_rows, model_state.grain_rows),
                       grain_duplicates
                           = coalesce(excluded.grain_duplicates, model_state.grain_duplicates),
                       grain_null_keys
                           = coalesce(excluded.grain_null_keys, model_state.grain_null_keys),
                       watermark_xid = excluded.watermark_xid,
                       row_count = excluded.row_count"""
            ),
            {
                "model": model,
                "fingerprint": fingerprint(sql),
                "now": self._now(),
                "mode": change.mode,
                "keys": change.keys,
                "rows": rows,
                "duplicates": duplicates,
                "null_keys": null_keys,
                "xid": watermark,
                "row_count": row_count,
            },
        )
        self.row_counts[model] = row_count

    def _now(self) -> datetime:
        """When this build's snapshot was taken, about (its transaction's start), naive UTC."""
        value = self.rows("select transaction_timestamp() at time zone 'utc'")[0][0]
        assert isinstance(value, datetime)
        return value

    def forget_state(self, models: Iterable[str]) -> None:
        """Mark models as needing a full rebuild next time."""
        names = sorted(models)
        for name in names:
            self.row_counts.pop(name, None)
        if names:
            self.conn.execute(
                sa.text("delete from meta.model_state where model = any(:names)"),
                {"names": names},
            )

    def about_rows(self, relation: str) -> int:
        # count(*) reads every row here (0.1-0.27 s per message table at 90 days of history):
        # the count kept in meta.model_state is exact; without one, the planner's statistics
        # are near enough, once the table has been analyzed.
        if relation in self.row_counts:
            return self.row_counts[relation]
        estimate = self.rows(
            f"select reltuples::bigint from pg_class where oid = '{relation}'::regclass"
        )
        if estimate and int(estimate[0][0]) >= 0:
            return int(estimate[0][0])
        return self.count_rows(relation)

    def count_rows(self, relation: str) -> int:
        """The exact number of rows of ``relation`` (reads all of it)."""
        return int(self.rows(f"select count(*) from {relation}")[0][0])

    def exists(self, relation: str) -> bool:
        return bool(self.rows(f"select to_regclass('{relation}') is not null")[0][0])
