"""The PostgreSQL schema is the DuckDB one: declared once in Core, derived from tables.py.

The DuckDB warehouse creates its tables from ``tables.py`` (raw) and ``META_DDL`` /
``STATE_DDL`` (meta); the Core declarations must not drift from them, and compiled with the
PostgreSQL dialect they must also be DDL that DuckDB accepts (so one declaration could serve
both back ends).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import sqlalchemy as sa

from robofy_etl.warehouse import Warehouse
from robofy_etl.warehouse.incremental import STATE_DDL
from robofy_etl.warehouse.pg.schema import METADATA, PG_ONLY_COLUMNS, create_all, ddl
from robofy_etl.warehouse.tables import RAW_TABLES

_COLUMNS = """
    select table_schema, table_name, column_name, data_type, is_nullable,
           column_default
    from information_schema.columns
    where table_schema in ('raw', 'meta')
    order by table_schema, table_name, column_name
"""
_PG_TYPES = {
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "character varying": "VARCHAR",
    "json": "JSON",
    "timestamp without time zone": "TIMESTAMP",
    "date": "DATE",
    "boolean": "BOOLEAN",
}


def _duckdb_columns(conn: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return [
        tuple(r) for r in conn.execute(_COLUMNS).fetchall() if tuple(r[:3]) not in PG_ONLY_COLUMNS
    ]


def _duckdb_keys(conn: duckdb.DuckDBPyConnection) -> set[tuple[str, str, tuple[str, ...]]]:
    rows = conn.execute(
        "select schema_name, table_name, constraint_column_names from duckdb_constraints()"
        " where constraint_type = 'PRIMARY KEY' and schema_name in ('raw', 'meta')"
    ).fetchall()
    return {(s, t, tuple(c)) for s, t, c in rows}


def test_core_tables_are_the_duckdb_tables(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh.duckdb")
    wh.initialize()
    with wh.connect() as conn:
        conn.execute(STATE_DDL)
        expected, expected_keys = _duckdb_columns(conn), _duckdb_keys(conn)
    with duckdb.connect(str(tmp_path / "core.duckdb")) as conn:
        for statement in ddl(indexes=False):  # the PostgreSQL DDL, as text
            conn.execute(statement)
        assert _duckdb_columns(conn) == expected
        assert _duckdb_keys(conn) == expected_keys
    assert {t.name for t in METADATA.tables.values() if t.schema == "raw"} == set(RAW_TABLES)


def test_create_all_on_postgresql_is_idempotent_and_matches(pg_url: sa.URL, tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh.duckdb")
    wh.initialize()
    with wh.connect() as conn:
        conn.execute(STATE_DDL)
        expected = [(s, t, c, d, n) for s, t, c, d, n, _ in _duckdb_columns(conn)]
    engine = sa.create_engine(pg_url)
    try:
        for _ in range(2):
            with engine.begin() as conn:
                create_all(conn)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(_COLUMNS).all()
            indexes = conn.exec_driver_sql(
                "select count(*) from pg_indexes where schemaname = 'raw'"
            ).scalar()
            schemas = set(
                conn.exec_driver_sql("select schema_name from information_schema.schemata")
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    got = [
        (s, t, c, _PG_TYPES[d], n) for s, t, c, d, n, _ in rows if (s, t, c) not in PG_ONLY_COLUMNS
    ]
    assert {(s, t, c) for s, t, c, *_ in rows} >= PG_ONLY_COLUMNS
    assert got == expected
    assert indexes == 4 * len(RAW_TABLES)  # _slice, the key, _run_id, _xid
    assert {"raw", "staging", "marts", "meta"} <= schemas


def test_initializing_an_existing_warehouse_waits_for_no_load(pg_engine: sa.Engine) -> None:
    """Every process creates what is missing once. While another process is loading (its
    transaction holds ROW EXCLUSIVE on the raw tables), that must not wait for the load: a
    ``create index if not exists`` did (a SHARE lock, even for an index that exists), and two
    syncs starting at once deadlocked that way."""
    with pg_engine.begin() as conn:
        create_all(conn)
    with pg_engine.connect() as load, load.begin():
        for table in RAW_TABLES.values():
            load.exec_driver_sql(f"lock table {table.relation} in row exclusive mode")
        with pg_engine.connect() as other, other.begin():
            other.exec_driver_sql("set local lock_timeout = '2s'")
            create_all(other)  # LockNotAvailable after 2 s if it waits for the load


def test_a_warehouse_from_before_xid_gets_the_column_and_a_full_build(
    pg_engine: sa.Engine,
) -> None:
    """Raw and removed rows record their transaction in ``_xid``, which the incremental builds
    read (pg/build_sql.py). A warehouse made before that has rows without one: initializing adds
    the column and drops the build state, so the next build is full and none of them is missed.
    """
    with pg_engine.begin() as conn:
        create_all(conn)
        conn.exec_driver_sql(
            "insert into meta.model_state (model, fingerprint, built_at, mode)"
            " values ('marts.sessions', 'f', now(), 'incremental')"
        )
        for schema, table, column in PG_ONLY_COLUMNS:
            if column == "_xid":
                conn.exec_driver_sql(f"alter table {schema}.{table} drop column _xid")
    with pg_engine.begin() as conn:
        create_all(conn)
        missing = conn.exec_driver_sql(
            "select count(*) from (select distinct table_schema, table_name"
            " from information_schema.columns where table_schema in ('raw', 'meta')"
            " and table_name in (select table_name from information_schema.columns"
            " where column_name = '_xid')) as with_xid"
        ).scalar()
        states = conn.exec_driver_sql("select count(*) from meta.model_state").scalar()
    assert missing == len(RAW_TABLES) + 1  # every raw table and meta.removed_rows
    assert states == 0
