"""Fixtures for end-to-end runs: the simulator on loopback, a DuckDB file, a Dagster instance.

Every test here runs the real pipeline (``robofy_etl.cli.run_sync``: one in-process Dagster run
of every asset for a range of days) against the built-in simulator over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from robofy_etl.cli import SyncOutcome, run_sync
from robofy_etl.settings import Settings
from robofy_etl.simulator import Simulator, SimulatorConfig, serve

SIM_END = datetime(2026, 10, 15, 6, 0)  # the simulator clock; tiny covers the 7 days before
FIRST_DAY = date(2026, 10, 8)
LAST_DAY = date(2026, 10, 15)
LINEAGE = {"_loaded_at", "_run_id", "_deleted_at", "loaded_at", "run_id"}


@dataclass
class Pipeline:
    """One warehouse file and the environment that points the pipeline at the simulator."""

    sim: Simulator
    db_path: Path
    dagster_home: Path

    @property
    def reader_path(self) -> Path:
        return self.db_path.with_name(f"{self.db_path.stem}.read.duckdb")

    def sync(self, first: date = FIRST_DAY, last: date = LAST_DAY) -> SyncOutcome:
        return run_sync(Settings.from_env(), first, last)

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
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
    return Pipeline(sim, db, home)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with serve(SimulatorConfig(scale="tiny", seed=7, end=SIM_END)) as simulator:
        yield simulator


@pytest.fixture
def pipeline(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    return _env(monkeypatch, sim, tmp_path)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
