"""Fixtures for end-to-end runs: the simulator on loopback, a warehouse, a Dagster instance.

Every test here runs the real pipeline (``robofy_etl.cli.run_sync``: one in-process Dagster run
of every asset for a range of days) against the built-in simulator over real HTTP.

The warehouse is a DuckDB file; a test decorated with ``both_backends`` runs a second time
against a fresh database of the throwaway PostgreSQL cluster (``tests/pg.py``), with the same
body: ``Pipeline.query`` and ``Pipeline.snapshot`` read either back end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import sqlalchemy as sa

from robofy_etl.cli import SyncOutcome, run_sync
from robofy_etl.settings import Settings
from robofy_etl.simulator import Simulator, SimulatorConfig, serve
from tests.pg import PgCluster

SIM_END = datetime(2026, 10, 15, 6, 0)  # the simulator clock; tiny covers the 7 days before
FIRST_DAY = date(2026, 10, 8)
LAST_DAY = date(2026, 10, 15)
# _xid: the PostgreSQL transaction that wrote a raw or removed row (pg/schema.py).
LINEAGE = {"_loaded_at", "_run_id", "_deleted_at", "loaded_at", "run_id", "_xid"}

both_backends = pytest.mark.parametrize("pipeline", ["duckdb", "postgresql"], indirect=True)
"""Run the test on DuckDB and again on PostgreSQL (``pipeline`` is then a ``PgPipeline``)."""

on_postgresql = pytest.mark.parametrize("pipeline", ["postgresql"], indirect=True)
"""Run the test on PostgreSQL only."""


@dataclass
class Pipeline:
    """One warehouse file and the environment that points the pipeline at the simulator."""

    sim: Simulator
    db_path: Path
    dagster_home: Path
    env: pytest.MonkeyPatch

    backend = "duckdb"

    @property
    def reader_path(self) -> Path:
        return self.db_path.with_name(f"{self.db_path.stem}.read.duckdb")

    def sync(self, first: date = FIRST_DAY, last: date = LAST_DAY) -> SyncOutcome:
        return run_sync(Settings.from_env(), first, last)

    def new_warehouse(self) -> None:
        """Point the pipeline (and the environment) at a new, empty warehouse."""
        self.db_path = self.db_path.with_name(f"robofy-{secrets.token_hex(3)}.duckdb")
        self.env.setenv("ROBOFY_DUCKDB_PATH", str(self.db_path))

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        """Rows of ``sql`` (``?`` placeholders; SQL that DuckDB and PostgreSQL both read)."""
        with duckdb.connect(str(self.db_path), read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def snapshot(
        self, schemas: tuple[str, ...] = ("raw", "marts"), *, lineage: bool = True
    ) -> dict[str, list[tuple]]:
        """Every row of every table in ``schemas``, in a stable order.

        With ``lineage=False`` the pipeline's own columns (``_loaded_at``, ``_run_id``, ...) are
        left out, to compare the data of two different warehouses.
        """
        out: dict[str, list[tuple]] = {}
        with duckdb.connect(str(self.db_path), read_only=True) as conn:
            tables = conn.execute(
                "select schema_name, table_name from duckdb_tables()"
                " where schema_name in (select unnest(?)) order by all",
                [list(schemas)],
            ).fetchall()
            for schema, table in tables:
                columns = [
                    name
                    for (name,) in conn.execute(
                        "select column_name from duckdb_columns()"
                        " where schema_name = ? and table_name = ? order by column_index",
                        [schema, table],
                    ).fetchall()
                    if lineage or name not in LINEAGE
                ]
                select = ", ".join(f'"{c}"' for c in columns)
                out[f"{schema}.{table}"] = conn.execute(
                    f'select {select} from {schema}."{table}" order by all'
                ).fetchall()
        return out


@dataclass
class PgPipeline(Pipeline):
    """The same pipeline writing into a PostgreSQL database (``ROBOFY_WAREHOUSE_URL``)."""

    url: sa.URL = field(kw_only=True)
    cluster: PgCluster = field(kw_only=True)
    databases: list[str] = field(default_factory=list, kw_only=True)  # made by new_warehouse

    backend = "postgresql"

    def new_warehouse(self) -> None:
        name = f"test_{secrets.token_hex(6)}"
        self.url = self.cluster.create_database(name)
        self.databases.append(name)
        self.env.setenv("ROBOFY_WAREHOUSE_URL", self.url.render_as_string(hide_password=False))

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the warehouse database (close it, or use ``with``)."""
        conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True)

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        with self.connect() as conn:
            return conn.execute(sql.replace("%", "%%").replace("?", "%s"), params or []).fetchall()

    def snapshot(
        self, schemas: tuple[str, ...] = ("raw", "marts"), *, lineage: bool = True
    ) -> dict[str, list[tuple]]:
        out: dict[str, list[tuple]] = {}
        with self.connect() as conn:
            tables = conn.execute(
                "select table_schema, table_name from information_schema.tables"
                " where table_schema = any(%s) and table_type = 'BASE TABLE' order by 1, 2",
                [list(schemas)],
            ).fetchall()
            for schema, table in tables:
                columns = [
                    f'"{name}"::text' if typ in ("json", "jsonb") else f'"{name}"'
                    for name, typ in conn.execute(
                        "select column_name, data_type from information_schema.columns"
                        " where table_schema = %s and table_name = %s order by ordinal_position",
                        [schema, table],
                    ).fetchall()
                    if lineage or name not in LINEAGE
                ]
                rows = conn.execute(f'select {", ".join(columns)} from {schema}."{table}"')
                out[f"{schema}.{table}"] = sorted(rows.fetchall(), key=repr)
        return out


def _env(monkeypatch: pytest.MonkeyPatch, sim: Simulator, tmp_path: Path) -> Pipeline:
    db = tmp_path / "robofy.duckdb"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("ROBOFY_API_KEY", sim.api_key)
    monkeypatch.setenv("ROBOFY_BASE_URL", sim.base_url)
    monkeypatch.setenv("ROBOFY_DUCKDB_PATH", str(db))
    monkeypatch.setenv("ROBOFY_START_DATE", "2026-09-01")
    monkeypatch.setenv("ROBOFY_RETRY_DELAY_S", "0.01")
    monkeypatch.setenv("ROBOFY_LOCK_TIMEOUT_S", "60")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("ROBOFY_PUBLISH_PATH", "ROBOFY_MAX_RPS", "ROBOFY_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    return Pipeline(sim, db, home, monkeypatch)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with serve(SimulatorConfig(scale="tiny", seed=7, end=SIM_END)) as simulator:
        yield simulator


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest,
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    """The pipeline on DuckDB, or on PostgreSQL when parametrized so (``both_backends``)."""
    base = _env(monkeypatch, sim, tmp_path)
    backend = getattr(request, "param", "duckdb")
    if backend == "duckdb":
        yield base
        return
    assert backend == "postgresql", backend
    url: sa.URL = request.getfixturevalue("pg_url")
    cluster: PgCluster = request.getfixturevalue("postgres")
    monkeypatch.setenv("ROBOFY_WAREHOUSE_URL", url.render_as_string(hide_password=False))
    pg = PgPipeline(sim, base.db_path, base.dagster_home, monkeypatch, url=url, cluster=cluster)
    try:
        yield pg
    finally:
        for name in pg.databases:
            cluster.drop_database(name)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
