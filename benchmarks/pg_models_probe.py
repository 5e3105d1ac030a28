"""Probe: which sql/ models, transpiled DuckDB -> PostgreSQL by sqlglot, run and match DuckDB.

An experiment behind docs/postgres-models.md, not part of the pipeline: sqlglot is not a
dependency yet (install it into the venv: ``.venv/bin/uv pip install sqlglot==30.30.0``).

Takes a DuckDB warehouse with every model built (default: the hand-written account of
tests/sql/conftest.py; ``--duckdb FILE`` for another, e.g. one ``robofy-etl demo`` filled),
starts a throwaway PostgreSQL cluster (tests/pg.py), copies the raw tables into it with the
PostgreSQL back end (warehouse/pg) and every built model table too (so each model is tried on
exactly DuckDB's inputs, independently of the others), then for each model: transpiles it,
runs it on PostgreSQL, and compares its columns and rows with DuckDB's table.

    .venv/bin/python benchmarks/pg_models_probe.py [--patched] [--duckdb FILE] [model ...]

``--patched`` applies the small AST patches below (try_cast, any_value, arg_min) and runs the
hand-written variant ``sql/postgres/<layer>/<model>.sql`` of a model where there is one.
"""

from __future__ import annotations

import argparse
import decimal
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Hand-written PostgreSQL variants of models sqlglot cannot transpile (used with --patched).
VARIANTS = ROOT / "sql" / "postgres"

from robofy_etl.warehouse import models  # noqa: E402
from robofy_etl.warehouse.pg.load import copy_arrow  # noqa: E402
from robofy_etl.warehouse.pg.schema import create_all  # noqa: E402
from robofy_etl.warehouse.tables import RAW_TABLES  # noqa: E402
from tests.pg import pg_cluster  # noqa: E402

# DuckDB type (first word) -> PostgreSQL type for the copied model tables; others -> jsonb.
_PG_TYPES = {
    "VARCHAR": "varchar",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "TIMESTAMP": "timestamp",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "DOUBLE": "double precision",
    "HUGEINT": "numeric",
    "DECIMAL": "numeric",
}
# try_cast targets -> helper functions that return null where the text does not cast.
_TRY_TYPES = ("integer", "bigint", "boolean", "double precision", "timestamp", "date")


def helper_ddl() -> list[str]:
    """PostgreSQL 13+ has no try_cast (16 has pg_input_is_valid): one PL/pgSQL helper a type."""
    out = ["create schema if not exists robofy"]
    for pg_type in _TRY_TYPES:
        name = "try_cast_" + pg_type.replace(" ", "_")
        out.append(
            f"create or replace function robofy.{name}(v text) returns {pg_type}"
            " language plpgsql immutable parallel safe as"
            f" $$ begin return v::{pg_type}; exception when others then return null; end $$"
        )
    return out


def _first_of_ordered_agg(arg: exp.ArgMin, where: exp.Expression | None) -> exp.Expression:
    """arg_min(a, b) [filter (where w)] -> (array_agg(a order by b) [filter (where w)])[1]."""
    agg: exp.Expression = exp.ArrayAgg(
        this=exp.Order(this=arg.this, expressions=[exp.Ordered(this=arg.expression)])
    )
    if where is not None:
        agg = exp.Filter(this=agg, expression=where)
    return exp.Bracket(this=exp.paren(agg), expressions=[exp.Literal.number(1)], offset=1)


def _patch(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.TryCast):
        pg_type = node.to.sql(dialect="postgres").lower()
        pg_type = {"int": "integer", "double": "double precision"}.get(pg_type, pg_type)
        if pg_type in _TRY_TYPES:
            name = "robofy.try_cast_" + pg_type.replace(" ", "_")
            return exp.func(name, exp.cast(node.this, "text"))
    if isinstance(node, exp.AnyValue):  # PostgreSQL 16+ only; min() where it is one value
        return exp.Min(this=node.this)
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.ArgMin):
        return _first_of_ordered_agg(node.this, node.expression)
    if isinstance(node, exp.ArgMin):
        return _first_of_ordered_agg(node, None)
    return node


def transpile(sql: str, patched: bool) -> str:
    """One model's SELECT in PostgreSQL, by sqlglot (and the patches above)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if patched:
        tree = tree.transform(_patch)
    return tree.sql(dialect="postgres", pretty=True)


def _norm(value: Any) -> Any:
    if isinstance(value, float | decimal.Decimal):
        return round(float(value), 9)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _sorted(rows: Any) -> list[tuple[Any, ...]]:
    normalised = [tuple(_norm(v) for v in row) for row in rows]
    return sorted(normalised, key=lambda r: tuple(str(v) for v in r))


def _copy_inputs(dconn: duckdb.DuckDBPyConnection, conn: sa.Connection, built: list[Any]) -> None:
    for table in RAW_TABLES.values():
        names = [n for n, _ in table.all_columns]
        select = ", ".join(f"{n}::varchar as {n}" if n == "_payload" else n for n in names)
        data = dconn.sql(f"select {select} from {table.relation}").to_arrow_table()
        copy_arrow(conn, table.relation, data)
    for model in built:
        columns, selects = [], []
        for name, duck_type, *_ in dconn.execute(f"describe {model.name}").fetchall():
            pg_type = _PG_TYPES.get(duck_type.split("(")[0], "jsonb")
            columns.append(f'"{name}" {pg_type}')
            selects.append(
                f'"{name}"' if pg_type != "jsonb" else f'to_json("{name}")::varchar as "{name}"'
            )
        conn.exec_driver_sql(f"create table {model.name} ({', '.join(columns)})")
        data = dconn.sql(f"select {', '.join(selects)} from {model.name}").to_arrow_table()
        copy_arrow(conn, model.name, data)


def _try(model: Any, engine: sa.Engine, dconn: duckdb.DuckDBPyConnection, patched: bool) -> str:
    variant = VARIANTS / model.schema / f"{model.name.split('.')[1]}.sql"
    if patched and variant.exists():
        pg_sql, how = variant.read_text(), "hand-written variant "
    else:
        how = ""
        try:
            pg_sql = transpile(model.sql, patched)
        except sqlglot.errors.SqlglotError as exc:
            return f"transpile error: {str(exc).splitlines()[0][:200]}"
    try:
        with engine.connect() as conn:
            result = conn.exec_driver_sql(pg_sql.replace("%", "%%"))
            columns, rows = list(result.keys()), result.all()
    except sa.exc.DBAPIError as exc:
        return f"PostgreSQL error: {str(exc.orig).splitlines()[0][:200]}"
    duck_columns = [row[0] for row in dconn.execute(f"describe {model.name}").fetchall()]
    if columns != duck_columns:
        return f"columns differ: {columns} vs {duck_columns}"
    got, want = _sorted(rows), _sorted(dconn.execute(f"select * from {model.name}").fetchall())
    if got != want:
        first = next(((a, b) for a, b in zip(got, want, strict=False) if a != b), None)
        return f"rows differ ({len(got)} vs {len(want)}), first: {first}"[:400]
    return f"{how}OK, {len(got)} rows identical"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model names (default: all)")
    parser.add_argument("--duckdb", type=Path, help="a DuckDB warehouse with the models built")
    parser.add_argument("--patched", action="store_true", help="apply the AST patches")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # sqlglot warns of each unsupported construct; we run it
    path = args.duckdb
    if path is None:
        from tests.sql.conftest import seed

        path = Path(tempfile.mkdtemp()) / "hand.duckdb"
        with duckdb.connect(str(path)) as conn:
            seed(conn)
            conn.execute("begin")
            models.build(conn)
            conn.execute("commit")
    built = models.topological_order(models.discover())
    dconn = duckdb.connect(str(path), read_only=True)
    with pg_cluster() as cluster:
        engine = sa.create_engine(cluster.create_database("probe"))
        with engine.begin() as conn:
            create_all(conn)
            for statement in helper_ddl():
                conn.exec_driver_sql(statement)
            _copy_inputs(dconn, conn, built)
        for model in built:
            if args.models and model.name.split(".")[1] not in args.models:
                continue
            print(f"{model.name}: {_try(model, engine, dconn, args.patched)}")
        engine.dispose()


if __name__ == "__main__":
    main()
