"""The SQL models on PostgreSQL (warehouse/pg/models.py): same rows as DuckDB, one transaction.

The hand-written account of tests/sql/conftest.py (every awkward case: multi-part and non-text
messages, role aliases, WhatsApp ids, soft-deleted chatbots, two versions of a key) is loaded
into DuckDB and, through the PostgreSQL back end's COPY, into a fresh database of the throwaway
cluster; every model is built on both and every table compared row by row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import models
from robofy_etl.warehouse.models import BuildResult, ModelBuildError
from robofy_etl.warehouse.pg import models as pg_models

pytestmark = pytest.mark.slow


def canonical(value: Any) -> Any:
    """One value as both back ends render it: floats to 9 digits, lists/JSON as sorted text."""
    if isinstance(value, float | decimal.Decimal):
        return repr(round(float(value), 9))
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def canonical_rows(rows: Any) -> list[tuple[Any, ...]]:
    out = [tuple(canonical(v) for v in row) for row in rows]
    return sorted(out, key=lambda row: tuple("\x00" if v is None else str(v) for v in row))


def _without(
    columns: list[str], rows: list[tuple[Any, ...]], skip: frozenset[str]
) -> tuple[list[str], list[Any]]:
    keep = [i for i, name in enumerate(columns) if name not in skip]
    return [columns[i] for i in keep], canonical_rows([tuple(r[i] for i in keep) for r in rows])


def duckdb_tables(
    conn: duckdb.DuckDBPyConnection, skip: frozenset[str] = frozenset()
) -> dict[str, tuple[list[str], list[Any]]]:
    """Every model table's columns and canonical rows (``skip``: columns left out)."""
    out = {}
    for model in models.discover():
        result = conn.execute(f"select * from {model.name}")
        columns = [d[0] for d in result.description]
        out[model.name] = _without(columns, result.fetchall(), skip)
    return out


def pg_tables(
    conn: sa.Connection, skip: frozenset[str] = frozenset()
) -> dict[str, tuple[list[str], list[Any]]]:
    """Every model table's columns and canonical rows (``skip``: columns left out)."""
    out = {}
    for model in models.discover():
        result = conn.exec_driver_sql(f"select * from {model.name}")
        out[model.name] = _without(list(result.keys()), [tuple(r) for r in result], skip)
    return out


# DuckDB type -> the PostgreSQL types a model's column may have there (text is varchar).
_SAME_TYPE = {
    "VARCHAR": {"character varying", "text"},
    "BIGINT": {"bigint"},
    "INTEGER": {"integer"},
    "TIMESTAMP": {"timestamp without time zone"},
    "BOOLEAN": {"boolean"},
    "DATE": {"date"},
    "DOUBLE": {"double precision"},
}


def column_types(
    dconn: duckdb.DuckDBPyConnection, conn: sa.Connection
) -> list[tuple[str, str, str, str | None]]:
    """(model, column, DuckDB type, PostgreSQL type) of every model column, in order."""
    out = []
    for model in models.discover():
        pg = dict(
            conn.execute(
                sa.text(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = :s and table_name = :t"
                ),
                {"s": model.schema, "t": model.relation},
            ).all()
        )
        for name, duck_type, *_ in dconn.execute(f"describe {model.name}").fetchall():
            out.append((model.name, name, duck_type, pg.get(name)))
    return out


def assert_same_tables(pg: dict[str, Any], reference: dict[str, Any]) -> None:
    assert sorted(pg) == sorted(reference)
    for name, (columns, rows) in reference.items():
        assert pg[name][0] == columns, name
        assert len(pg[name][1]) == len(rows), name
        assert pg[name][1] == rows, name


def build_on(
    engine: sa.Engine, model_list: list[models.Model] | None = None, **options: Any
) -> list[BuildResult]:
    """Build the models on PostgreSQL as PgWarehouse does: in ``build_transaction``."""
    with engine.connect() as conn, pg_models.build_transaction(conn):
        return pg_models.build(conn, model_list, **options)


def test_every_model_builds_with_duckdbs_rows(
    seeded: tuple[sa.Engine, duckdb.DuckDBPyConnection],
) -> None:
    engine, dconn = seeded
    results = build_on(engine)
    assert [r.name for r in results] == [
        m.name for m in models.topological_order(models.discover())
    ]
    assert all(r.mode == "full" for r in results)
    with engine.connect() as conn:
        got = pg_tables(conn)
        leftovers = conn.exec_driver_sql(
            "select count(*) from pg_tables where right(tablename, 12) = '__robofy_new'"
        ).scalar_one()
        comment = conn.exec_driver_sql(
            "select col_description('marts.sessions'::regclass, 1)"
        ).scalar_one()
        types = column_types(dconn, conn)
    assert_same_tables(got, duckdb_tables(dconn))
    assert leftovers == 0
    differing = [t for t in types if t[3] not in _SAME_TYPE.get(t[2], set())]
    # The one expected difference: DuckDB's list of structs is a JSON array on PostgreSQL.
    assert differing == [
        (
            "staging.stg_robofy__leads",
            "fields",
            "STRUCT(field_name VARCHAR, field_type VARCHAR, field_value VARCHAR)[]",
            "json",
        )
    ]
    assert comment  # the header's column docs, as on DuckDB
    # A second build finds nothing changed; a full refresh replaces the tables, same rows.
    assert {r.mode for r in build_on(engine)} == {"unchanged"}
    assert {r.mode for r in build_on(engine, full_refresh=True)} == {"full"}
    with engine.connect() as conn:
        assert_same_tables(pg_tables(conn), duckdb_tables(dconn))


def _indexed_columns(conn: sa.Connection) -> dict[str, list[tuple[str, ...]]]:
    """Each model table's indexes, as their column lists."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for schema, table, definition in conn.exec_driver_sql(
        "select schemaname, tablename, indexdef from pg_indexes"
        " where schemaname in ('staging', 'marts')"
    ):
        columns = definition.rsplit("(", 1)[1].rstrip(")")
        found.setdefault(f"{schema}.{table}", []).append(
            tuple(column.strip().strip('"') for column in columns.split(","))
        )
    return found


def test_every_lookup_of_an_incremental_build_has_an_index(
    seeded: tuple[sa.Engine, duckdb.DuckDBPyConnection],
) -> None:
    # Without one PostgreSQL reads the whole table to find an hourly build's touched rows
    # (0.5-0.7 s per lookup on 90 days of messages, growing with history).
    engine, _ = seeded
    wanted = pg_models.lookup_columns(models.discover())
    assert wanted["marts.messages"] == [("chatbot_id", "sent_date"), ("chatbot_id", "session_id")]
    assert wanted["staging.stg_robofy__chat_messages"] == [
        ("chatbot_id", "session_id", "message_id")
    ]
    for options in ({}, {"full_refresh": True}):  # made by the first build, kept by the next
        build_on(engine, **options)
        with engine.connect() as conn:
            indexed = _indexed_columns(conn)
        for name, lists in wanted.items():
            for columns in lists:
                assert columns in indexed.get(name, []), (name, columns)


def test_a_failing_build_leaves_the_previous_marts(
    seeded: tuple[sa.Engine, duckdb.DuckDBPyConnection], tmp_path: Path
) -> None:
    engine, _ = seeded
    build_on(engine)
    with engine.connect() as conn:
        before = pg_tables(conn)
    broken = tmp_path / "sql"
    for model in models.discover():
        target = broken / model.schema / f"{model.relation}.sql"
        target.parent.mkdir(parents=True, exist_ok=True)
        text = model.path.read_text()
        if model.name == "marts.projects":
            text = text.rstrip().rstrip(";") + "\nwhere cast('x' as integer) = 1"
        target.write_text(text)
    for variant in (models.SQL_DIR / "postgres").rglob("*.sql"):
        target = broken / "postgres" / variant.relative_to(models.SQL_DIR / "postgres")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(variant.read_text())
    failing = pytest.raises(ModelBuildError, match=r"projects\.sql .*invalid input syntax")
    with failing:
        build_on(engine, models.discover(broken), full_refresh=True)
    with engine.connect() as conn:
        assert pg_tables(conn) == before


def test_a_model_sqlglot_cannot_transpile_names_its_file_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "sql" / "marts"
    folder.mkdir(parents=True)
    (folder / "odd.sql").write_text(
        "-- grain: one row per x\n"
        "select last_value(x ignore nulls) over (order by x) as x from (select 1 as x)"
    )
    (model,) = models.discover(tmp_path / "sql")
    with pytest.raises(ModelBuildError, match=r"odd\.sql: cannot be transpiled.*postgres/marts"):
        pg_models.postgres_sql(model)


def test_try_cast_gives_null_where_duckdb_does(pg_url: sa.URL) -> None:
    engine = sa.create_engine(pg_url)
    sql = pg_models.transpile("select try_cast('x' as integer) as a, try_cast('7' as bigint) as b")
    with engine.begin() as conn:
        conn.exec_driver_sql("create schema if not exists meta")
        for statement in pg_models.helper_ddl():
            conn.exec_driver_sql(statement)
        assert tuple(conn.exec_driver_sql(sql).one()) == (None, 7)
    engine.dispose()


def test_a_reader_never_sees_a_missing_or_empty_mart_during_a_build(
    seeded: tuple[sa.Engine, duckdb.DuckDBPyConnection],
) -> None:
    engine, _ = seeded
    build_on(engine)
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        try:
            with engine.connect() as conn:
                while not stop.is_set():
                    counts.append(
                        conn.exec_driver_sql("select count(*) from marts.sessions").scalar_one()
                    )
                    conn.rollback()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(3):
            build_on(engine, full_refresh=True)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert counts
    assert min(counts) > 0
