"""The sync into PostgreSQL: the same raw tables as DuckDB, re-runs, the clock, parallel windows.

Each test runs the real pipeline (``run_sync``, or the ``robofy-etl sync`` command as a process)
against the simulator over loopback HTTP into a fresh database of the throwaway cluster
(``pg_url``), and compares the raw tables, lineage aside, with the same sync into a DuckDB file.
The SQL models are built on PostgreSQL too (full builds, warehouse/pg/models.py) and every mart
has DuckDB's rows; the data-quality checks are DuckDB SQL and are not run there (the summary
says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.cli import EXIT_OK, SyncOutcome, run_sync
from robofy_etl.settings import Settings
from robofy_etl.warehouse.tables import RAW_TABLES
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, LINEAGE, Pipeline, _env
from tests.pg import PgCluster
from tests.warehouse.pg.test_models import assert_same_tables, duckdb_tables, pg_tables

pytestmark = pytest.mark.slow

_NOT_RUN = "Data-quality checks (unique keys, references, marts): NOT RUN"


def _json_columns(table: str) -> set[str]:
    return {name for name, typ in RAW_TABLES[table].all_columns if typ.upper().startswith("JSON")}


def _norm(value: Any, is_json: bool) -> Any:
    """One value as both back ends can be compared: JSON as canonical text."""
    if is_json and value is not None:
        parsed = json.loads(value) if isinstance(value, str) else value
        return json.dumps(parsed, sort_keys=True)
    return value


def _rows(columns: list[str], rows: list[Any], table: str) -> list[tuple[Any, ...]]:
    json_columns = _json_columns(table)
    out = [
        tuple(_norm(v, c in json_columns) for c, v in zip(columns, row, strict=True))
        for row in rows
    ]
    return sorted(out, key=repr)


def _columns(table: str, lineage: bool) -> list[str]:
    return [n for n, _ in RAW_TABLES[table].all_columns if lineage or n not in LINEAGE]


def duckdb_raw(path: Path, *, lineage: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with duckdb.connect(str(path), read_only=True) as conn:
        for table in RAW_TABLES:
            columns = _columns(table, lineage)
            rows = conn.execute(f"select {', '.join(columns)} from raw.{table}").fetchall()
            out[table] = _rows(columns, rows, table)
    return out


def pg_raw(url: sa.URL, *, lineage: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for table in RAW_TABLES:
                columns = _columns(table, lineage)
                rows = conn.execute(sa.text(f"select {', '.join(columns)} from raw.{table}")).all()
                out[table] = _rows(columns, [tuple(r) for r in rows], table)
    finally:
        engine.dispose()
    return out


def _assert_same(pg: dict[str, list[Any]], reference: dict[str, list[Any]], step: str) -> None:
    assert pg.keys() == reference.keys()
    for table in reference:
        assert reference[table], f"{step}: raw.{table} is empty: nothing compared"
        assert pg[table] == reference[table], f"{step}: raw.{table} differs from DuckDB"


def _url_text(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


def _assert_built(outcome: SyncOutcome) -> None:
    """Everything loaded and the SQL models built; only the load checks ran."""
    assert outcome.exit_code == EXIT_OK, outcome.errors
    assert not outcome.models_unsupported
    assert not outcome.quality_checks_run
    assert outcome.checks
    assert all(passed for passed, _ in outcome.checks.values())
    assert all(name.endswith("__loaded_completely") for name in outcome.checks), outcome.checks
    assert outcome.raw_rows.keys() == set(RAW_TABLES)


def _assert_same_marts(url: sa.URL, duck: Path, step: str) -> None:
    """Every staging and mart table of PostgreSQL has the rows of DuckDB's, lineage aside (the
    two syncs are different runs)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn, duckdb.connect(str(duck), read_only=True) as dconn:
            got = pg_tables(conn, frozenset(LINEAGE))
            want = duckdb_tables(dconn, frozenset(LINEAGE))
    finally:
        engine.dispose()
    assert all(rows for _, rows in want.values()), f"{step}: an empty model: nothing compared"
    assert_same_tables(got, want)


@pytest.fixture
def pg(
    sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: sa.URL
) -> tuple[Pipeline, sa.URL]:
    (tmp_path / "pg").mkdir()
    pipeline = _env(monkeypatch, sim, tmp_path / "pg")
    monkeypatch.setenv("ROBOFY_WAREHOUSE_URL", _url_text(pg_url))
    return pipeline, pg_url


def _duckdb_sync(pipeline: Pipeline, path: Path, first: date, last: date) -> SyncOutcome:
    settings = Settings.from_env(overrides={"ROBOFY_WAREHOUSE_URL": f"duckdb:///{path}"})
    outcome = run_sync(settings, first, last)
    assert outcome.exit_code == EXIT_OK, outcome.errors
    return outcome


def test_full_sync_and_rerun_match_duckdb(pg: tuple[Pipeline, sa.URL], tmp_path: Path) -> None:
    pipeline, url = pg
    outcome = pipeline.sync()
    _assert_built(outcome)
    duck = tmp_path / "reference.duckdb"
    _duckdb_sync(pipeline, duck, FIRST_DAY, LAST_DAY)
    _assert_same(pg_raw(url), duckdb_raw(duck), "full sync")
    _assert_same_marts(url, duck, "full sync")

    before = pg_raw(url, lineage=True)
    again = pipeline.sync()
    _assert_built(again)
    for table, counts in again.raw_rows.items():
        assert (counts["inserted"], counts["updated"], counts["deleted"]) == (0, 0, 0), table
    assert pg_raw(url, lineage=True) == before  # lineage too: unchanged rows keep theirs
    stored = [f for f in pipeline.dagster_home.rglob("*") if f.is_file()]
    assert stored  # the runs were recorded there
    for file in stored:
        assert str(url.password).encode() not in file.read_bytes(), file
    _assert_same_marts(url, duck, "re-run")


def test_rebuild_on_postgresql_gives_duckdbs_marts(
    pg: tuple[Pipeline, sa.URL], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robofy_etl.cli import main

    pipeline, url = pg
    _assert_built(pipeline.sync())
    duck = tmp_path / "reference.duckdb"
    _duckdb_sync(pipeline, duck, FIRST_DAY, LAST_DAY)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:  # a mart damaged by hand: rebuild repairs it
            conn.exec_driver_sql("delete from marts.sessions")
    finally:
        engine.dispose()
    capsys.readouterr()
    assert main(["rebuild"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "marts.sessions" in out
    assert str(url.password) not in out
    _assert_same_marts(url, duck, "rebuild")


def test_status_reads_meta_from_postgresql(
    pg: tuple[Pipeline, sa.URL], capsys: pytest.CaptureFixture[str]
) -> None:
    from robofy_etl.cli import main

    pipeline, url = pg
    _assert_built(pipeline.sync())
    capsys.readouterr()
    assert main(["status"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"warehouse: {url}" in out  # str(url) hides the password
    assert str(url.password) not in out
    for table in RAW_TABLES:
        assert table in out
    assert "outstanding: none" in out


def test_incremental_after_the_clock_moves_matches_a_fresh_full_sync(
    pg: tuple[Pipeline, sa.URL], postgres: PgCluster, tmp_path: Path
) -> None:
    pipeline, url = pg
    duck = tmp_path / "incremental.duckdb"
    _assert_built(pipeline.sync())
    _duckdb_sync(pipeline, duck, FIRST_DAY, LAST_DAY)

    pipeline.sim.advance(hours=24)
    last = LAST_DAY + timedelta(days=1)
    _assert_built(pipeline.sync(last - timedelta(days=1), last))
    _duckdb_sync(pipeline, duck, last - timedelta(days=1), last)
    incremental = pg_raw(url)
    _assert_same(incremental, duckdb_raw(duck), "incremental, beside DuckDB's")
    _assert_same_marts(url, duck, "incremental")

    fresh_db = f"fresh_{os.getpid()}"
    fresh = postgres.create_database(fresh_db)
    try:
        settings = Settings.from_env(overrides={"ROBOFY_WAREHOUSE_URL": _url_text(fresh)})
        _assert_built(run_sync(settings, FIRST_DAY, last))
        _assert_same(incremental, pg_raw(fresh), "incremental, beside a fresh full sync")
    finally:
        postgres.drop_database(fresh_db)


def _cli_sync(
    pipeline: Pipeline, url: sa.URL, first: date, last: date, home: Path
) -> subprocess.Popen[str]:
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "ROBOFY_WAREHOUSE_URL": _url_text(url),
        "DAGSTER_HOME": str(home),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "robofy_etl.cli", "sync", "--start", str(first), "--end", str(last)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_windows_at_once_both_load_and_the_password_stays_hidden(
    pg: tuple[Pipeline, sa.URL], tmp_path: Path
) -> None:
    """Two `robofy-etl sync` processes of different windows at the same time: the advisory
    locks let both finish (the snapshots they share take turns), the raw tables are those of one
    DuckDB sync of both windows, and the password is in no output and no Dagster storage."""
    pipeline, url = pg
    password = url.password
    assert password
    assert len(str(password)) >= 8
    middle = FIRST_DAY + (LAST_DAY - FIRST_DAY) // 2
    windows = [(FIRST_DAY, middle), (middle + timedelta(days=1), LAST_DAY)]
    runs = [
        _cli_sync(pipeline, url, first, last, tmp_path / f"home{i}")
        for i, (first, last) in enumerate(windows)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == EXIT_OK, out + err
        assert "Sync finished" in out, out + err
        assert _NOT_RUN in out
        assert "Sync failed" not in out
        assert str(password) not in out + err
        assert "***" in out  # the warehouse line shows the URL, redacted
    for i in range(len(runs)):
        for file in (tmp_path / f"home{i}").rglob("*"):
            if file.is_file():
                assert str(password).encode() not in file.read_bytes(), file

    duck = tmp_path / "both.duckdb"
    _duckdb_sync(pipeline, duck, FIRST_DAY, LAST_DAY)
    _assert_same(pg_raw(url), duckdb_raw(duck), "two windows at once")
    _assert_same_marts(url, duck, "two windows at once")
