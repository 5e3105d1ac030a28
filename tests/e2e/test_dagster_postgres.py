"""Dagster on PostgreSQL: `robofy-etl sync` with deploy/dagster.yaml records its run there.

The service recipe (deploy/) keeps Dagster's runs, events and schedules in PostgreSQL. This
runs the real command in a process of its own, with DAGSTER_HOME holding a copy of
deploy/dagster.yaml and DAGSTER_PG_URL pointing at a throwaway database, and reads the run back
from PostgreSQL: from Dagster's own `runs` and `event_logs` tables, and through a
DagsterInstance. No sqlite run storage may appear beside it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from tests.e2e.conftest import LAST_DAY, Pipeline

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_sync_records_its_run_in_postgresql(
    pipeline: Pipeline, pg_url: sqlalchemy.URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(DEPLOY / "dagster.yaml", pipeline.dagster_home / "dagster.yaml")
    dagster_url = pg_url.set(drivername="postgresql+psycopg2")  # as deploy/dagster.yaml says
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_url.render_as_string(hide_password=False))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "robofy_etl.cli",
            "sync",
            "--start",
            str(LAST_DAY),
            "--end",
            str(LAST_DAY),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert pg_url.password not in result.stdout + result.stderr

    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sqlalchemy.text("select run_id, status from runs")).all()
            materialized = conn.execute(
                sqlalchemy.text(
                    "select distinct asset_key from event_logs"
                    " where dagster_event_type = 'ASSET_MATERIALIZATION' and run_id = :run_id"
                ),
                {"run_id": runs[0][0] if runs else ""},
            ).scalars()
            assets = set(materialized)
    finally:
        engine.dispose()
    assert [status for _, status in runs] == ["SUCCESS"]
    run_id = runs[0][0]
    assert f"Dagster run {run_id[:8]}" in result.stdout
    assert '["raw", "robofy__inbox_sessions"]' in assets
    assert any(key.startswith('["marts"') for key in assets)

    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(pipeline.dagster_home)) as instance:
        assert [run.run_id for run in instance.get_runs()] == [run_id]
    assert not (pipeline.dagster_home / "history").exists()  # no sqlite run storage
    assert not list(pipeline.dagster_home.rglob("*.db"))
