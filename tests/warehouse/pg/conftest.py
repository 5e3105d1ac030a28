"""Fixtures of the PostgreSQL back end tests: an engine on a fresh database with the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import models
from robofy_etl.warehouse.pg.load import copy_arrow
from robofy_etl.warehouse.pg.schema import create_all
from robofy_etl.warehouse.tables import RAW_TABLES
from tests.sql.conftest import seed


@pytest.fixture
def pg_engine(pg_url: sa.URL) -> Iterator[sa.Engine]:
    """An engine on a new database of the throwaway cluster, its tables created."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        create_all(conn)
    yield engine
    engine.dispose()


@pytest.fixture
def seeded(pg_url: sa.URL, tmp_path: Path) -> Iterator[tuple[sa.Engine, duckdb.DuckDBPyConnection]]:
    """DuckDB and PostgreSQL holding the same raw rows; the models built on DuckDB."""
    path = tmp_path / "hand.duckdb"
    dconn = duckdb.connect(str(path))
    seed(dconn)
    dconn.execute("begin")
    models.build(dconn)
    dconn.execute("commit")
    engine = sa.create_engine(pg_url, connect_args={"options": "-c timezone=UTC"})
    with engine.begin() as conn:
        create_all(conn)
        for table in RAW_TABLES.values():
            names = [n for n, _ in table.all_columns]
            select = ", ".join(f"{n}::varchar as {n}" if n == "_payload" else n for n in names)
            copy_arrow(
                conn,
                table.relation,
                dconn.sql(f"select {select} from {table.relation}").to_arrow_table(),
            )
    try:
        yield engine, dconn
    finally:
        engine.dispose()
        dconn.close()
