"""Probe: which sql/ models, transpiled DuckDB -> PostgreSQL by sqlglot, run and match DuckDB.

The experiment behind docs/postgres-models.md (sqlglot comes with the ``postgres`` extra).

Takes a DuckDB warehouse with every model built (default: the hand-written account of
tests/sql/conftest.py; ``--duckdb FILE`` for another, e.g. one ``robofy-etl demo`` filled),
starts a throwaway PostgreSQL cluster (tests/pg.py), copies the raw tables into it with the
PostgreSQL back end (warehouse/pg) and every built model table too (so each model is tried on
exactly DuckDB's inputs, independently of the others), then for each model: transpiles it,
runs it on PostgreSQL, and compares its columns and rows with DuckDB's table.

    .venv/bin/python benchmarks/pg_models_probe.py [--patched] [--duckdb FILE] [model ...]

``--patched`` tries each model as the pipeline builds it on PostgreSQL
(``warehouse/pg/models.py``: the hand-written variant ``sql/postgres/<layer>/<model>.sql`` where
there is one, else the SQL transpiled with that module's AST patches); without it, sqlglot
alone.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robofy_etl.warehouse import models  # noqa: E402
from robofy_etl.warehouse.models import ModelBuildError  # noqa: E402
from robofy_etl.warehouse.pg import models as pg_models  # noqa: E402
from robofy_etl.warehouse.pg.load import copy_arrow  # noqa: E402
from robofy_etl.warehouse.pg.schema import create_all  # noqa: E402
from robofy_etl.warehouse.tables import RAW_TABLES  # noqa: E402
from tests.pg import pg_cluster  # noqa: E402

# DuckDB type (first word) -> PostgreSQL type for the copied model tables; others (lists,
# structs) -> json, as the pipeline stores them on PostgreSQL.
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


def transpile(sql: str) -> str:
    """One model's SELECT in PostgreSQL by sqlglot alone (no patches): the unpatched baseline."""
    return sqlglot.parse_one(sql, read="duckdb").sql(dialect="postgres", pretty=True)


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
            pg_type = _PG_TYPES.get(duck_type.split("(")[0], "json")
            columns.append(f'"{name}" {pg_type}')
            selects.append(
                f'"{name}"' if pg_type != "json" else f'to_json("{name}")::varchar as "{name}"'
            )
        conn.exec_driver_sql(f"create table {model.name} ({', '.join(columns)})")
        data = dconn.sql(f"select {', '.join(selects)} from {model.name}").to_arrow_table()
        copy_arrow(conn, model.name, data)


def _try(model: Any, engine: sa.Engine, dconn: duckdb.DuckDBPyConnection, patched: bool) -> str:
    # --patched: what the pipeline builds on PostgreSQL (warehouse/pg/models.py: the variant, or
    # the SQL transpiled with its patches); otherwise sqlglot alone.
    how = ""
    try:
        if patched:
            pg_sql, way = pg_models.postgres_sql(model)
            how = "hand-written variant " if way == "variant" else ""
        else:
            pg_sql = transpile(model.sql)
    except (sqlglot.errors.SqlglotError, ModelBuildError) as exc:
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
            for statement in pg_models.helper_ddl():
                conn.exec_driver_sql(statement)
            _copy_inputs(dconn, conn, built)
        for model in built:
            if args.models and model.name.split(".")[1] not in args.models:
                continue
            print(f"{model.name}: {_try(model, engine, dconn, args.patched)}")
        engine.dispose()


if __name__ == "__main__":
    main()
