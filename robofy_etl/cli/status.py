"""``robofy-etl status``: the warehouse's last loads, drift and outstanding items (read-only)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from robofy_etl.cli.common import CliError, format_table, settings_from_args, warehouse_file

log = logging.getLogger(__name__)


def cmd_status(args: argparse.Namespace) -> int:
    import duckdb

    settings = settings_from_args(args)
    if settings.warehouse.backend == "postgresql":
        where, reports = _read_pg(settings)
        return _print_status(where, *reports)
    file = warehouse_file(settings, "status")
    path = settings.resolved_publish_path if Path(settings.resolved_publish_path).exists() else file
    if not Path(path).exists():
        raise CliError(
            f"no warehouse at {settings.warehouse.redacted}: run `robofy-etl sync` first"
        )
    with duckdb.connect(path, read_only=True) as conn:
        loads = conn.execute(
            """select stream, max(finished_at) as last_load, arg_max(slice, finished_at) as slice,
                      sum(rows_inserted) as inserted, sum(rows_updated) as updated,
                      sum(rows_deleted) as deleted
               from meta.load_audit group by stream order by stream"""
        ).fetchall()
        drift = conn.execute(
            "select stream, field_name, change, occurrences, last_seen_at from meta.schema_drift"
            " order by stream, field_name"
        ).fetchall()
        quarantined = conn.execute(
            "select stream, reason, count(*) from meta.quarantine group by all order by 1, 2"
        ).fetchall()
        outstanding = _rows_if_table(
            conn,
            "meta.outstanding",
            """select stream, chatbot_id, item, slice, attempts, last_seen_at, reason
               from meta.outstanding order by first_seen_at, stream, chatbot_id, item""",
        )
        missing = _rows_if_table(
            conn,
            "meta.missing",
            """select stream, chatbot_id, count(*), max(misses), max(last_missed_at)
               from meta.missing group by all order by all""",
        )
    removed: list[tuple[Any, ...]] = []
    if Path(settings.duckdb_path).exists():
        try:  # operators' table: kept in the warehouse file only, not in the published copy
            with duckdb.connect(settings.duckdb_path, read_only=True) as conn:
                removed = _rows_if_table(
                    conn,
                    "meta.removed_rows",
                    """select stream, reason, count(*), max(removed_at)
                       from meta.removed_rows group by all order by all""",
                )
        except duckdb.Error:
            log.info("status: %s is busy; removed rows not shown", settings.duckdb_path)
    return _print_status(path, loads, drift, quarantined, outstanding, missing, removed)


Rows = list[tuple[Any, ...]]

# The same reports on PostgreSQL (every meta table exists there: create_all made them).
_PG_QUERIES = (
    """select stream, max(finished_at) as last_load,
              (array_agg(slice order by finished_at desc))[1] as slice,
              sum(rows_inserted) as inserted, sum(rows_updated) as updated,
              sum(rows_deleted) as deleted
       from meta.load_audit group by stream order by stream""",
    "select stream, field_name, change, occurrences, last_seen_at from meta.schema_drift"
    " order by stream, field_name",
    "select stream, reason, count(*) from meta.quarantine group by 1, 2 order by 1, 2",
    """select stream, chatbot_id, item, slice, attempts, last_seen_at, reason
       from meta.outstanding order by first_seen_at, stream, chatbot_id, item""",
    """select stream, chatbot_id, count(*), max(misses), max(last_missed_at)
       from meta.missing group by 1, 2 order by 1, 2""",
    """select stream, reason, count(*), max(removed_at)
       from meta.removed_rows group by 1, 2 order by 1, 2""",
)


def _read_pg(settings: Any) -> tuple[str, list[Rows]]:
    """The status reports read from a PostgreSQL warehouse (its password shown as ``***``)."""
    import sqlalchemy as sa

    from robofy_etl.warehouse import Warehouse, WarehouseError
    from robofy_etl.warehouse.pg.warehouse import PgWarehouse

    try:
        wh = Warehouse.from_settings(settings)
        assert isinstance(wh, PgWarehouse)
        wh.initialize()
        with wh.connect(read_only=True) as conn:
            results = [[tuple(r) for r in conn.execute(sa.text(q)).all()] for q in _PG_QUERIES]
    except WarehouseError as exc:
        raise CliError(str(exc)) from None
    return settings.warehouse.redacted, results


def _print_status(
    path: str,
    loads: Rows,
    drift: Rows,
    quarantined: Rows,
    outstanding: Rows,
    missing: Rows,
    removed: Rows,
) -> int:
    print(f"warehouse: {path}\n")
    print(
        format_table(
            loads, ["stream", "last load (UTC)", "last slice", "inserted", "updated", "deleted"]
        )
    )
    print("\nschema drift:" if drift else "\nschema drift: none")
    if drift:
        print(format_table(drift, ["stream", "field", "change", "seen", "last seen"]))
    print("\nquarantined records:" if quarantined else "\nquarantined records: none")
    if quarantined:
        print(format_table(quarantined, ["stream", "reason", "records"]))
    print(
        "\noutstanding (did not arrive complete; every sync retries them):"
        if outstanding
        else "\noutstanding: none"
    )
    if outstanding:
        shown = [(*row[:6], _short(str(row[6]))) for row in outstanding[:50]]
        print(
            format_table(
                shown, ["stream", "chatbot", "item", "day(s)", "attempts", "last tried", "reason"]
            )
        )
        if len(outstanding) > 50:
            print(f"... and {len(outstanding) - 50} more (select * from meta.outstanding)")
    if missing:
        print("\nstored rows the latest scans did not list (kept until the evidence is in):")
        print(
            format_table(missing, ["stream", "chatbot", "rows", "misses in a row", "last missed"])
        )
    if removed:
        print("\nremoved rows (recoverable from meta.removed_rows):")
        print(format_table(removed, ["stream", "reason", "rows", "last removed"]))
    return 0


def _rows_if_table(conn: Any, table: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, or none when ``table`` does not exist yet (an older warehouse)."""
    schema, name = table.split(".")
    exists = conn.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return conn.execute(sql).fetchall() if exists and exists[0] else []


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
