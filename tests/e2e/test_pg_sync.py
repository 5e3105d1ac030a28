"""The sync into PostgreSQL: the same raw tables as DuckDB, re-runs, the clock, parallel windows.

Each test runs the real pipeline (``run_sync``, or the ``robofy-etl sync`` command as a process)
against the simulator over loopback HTTP into a fresh database of the throwaway cluster
(``pg_url``), and compares the raw tables, lineage aside, with the same sync into a DuckDB file.
The SQL models are built on PostgreSQL too (incrementally, warehouse/pg/models.py) and every mart
has DuckDB's rows; the data-quality checks run there too (the same queries, warehouse/quality.py)
and report what they report on DuckDB, and they find a defect the run wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.cli import EXIT_OK, SyncOutcome, run_sync
from robofy_etl.settings import Settings
from robofy_etl.sync.registry import REFERENCES
from robofy_etl.warehouse import quality
from robofy_etl.warehouse.reader import AlchemyReader
from robofy_etl.warehouse.tables import RAW_TABLES
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, LINEAGE, Pipeline, _env
from tests.pg import PgCluster
from tests.warehouse.pg.test_models import assert_same_tables, duckdb_tables, pg_tables

pytestmark = pytest.mark.slow

# The checks' metadata that differs between two syncs of the same data: when they ran.
_WHEN = {"last_load_at", "age_hours"}
# Every check has passed: "Checks: 31 of 31 passed."
_ALL_PASSED = re.compile(r"Checks: (\d+) of \1 passed\.")


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
    """Everything loaded, the SQL models built and every check ran and passed: the load checks
    and the data-quality checks (unique keys, references, freshness, grain, reconciliation)."""
    assert outcome.exit_code == EXIT_OK, outcome.errors
    assert all(passed for passed, _ in outcome.checks.values()), outcome.failed_checks
    names = set(outcome.checks)
    assert {f"{table}__loaded_completely" for table in RAW_TABLES} <= names
    assert {"robofy__leads__unique_lead_id", "robofy__inbox_sessions__loaded_recently"} <= names
    assert {ref.name for ref in REFERENCES} <= names
    assert {"sessions__unique_grain", "chatbot_daily_activity__reconciles_with_stats"} <= names
    assert outcome.raw_rows.keys() == set(RAW_TABLES)


def _check_results(run_id: str) -> dict[str, tuple[bool, str, dict[str, Any]]]:
    """Each check of a run as Dagster recorded it: passed, severity, metadata."""
    with dg.DagsterInstance.get() as instance:
        entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    out = {}
    for entry in entries:
        assert entry.dagster_event is not None
        evaluation = entry.dagster_event.event_specific_data
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        metadata = {k: v.value for k, v in evaluation.metadata.items() if k not in _WHEN}
        out[evaluation.check_name] = (evaluation.passed, evaluation.severity.value, metadata)
    return out


def _assert_same_checks(pg_run: str, duckdb_run: str) -> None:
    """The checks of a PostgreSQL sync report what those of the same sync into DuckDB report.

    The mart grain checks read what the last build recorded in ``meta.model_state``; a
    PostgreSQL build that records none has its marts checked whole, so those compare the
    counts (rows, duplicates, null keys), not the build's own metadata.
    """
    pg, duck = _check_results(pg_run), _check_results(duckdb_run)
    assert pg.keys() == duck.keys()
    assert len(pg) > 3 * len(RAW_TABLES)  # the data-quality checks ran, not only the load ones
    assert sum(bool(metadata.get("rows")) for _, _, metadata in duck.values()) >= 3
    for name, (passed, severity, metadata) in duck.items():
        pg_passed, pg_severity, pg_metadata = pg[name]
        assert (pg_passed, pg_severity) == (passed, severity), name
        if name.endswith("__unique_grain") and pg_metadata.keys() != metadata.keys():
            counts = ("duplicate_keys", "null_keys")
            assert [pg_metadata[k] for k in counts] == [metadata[k] for k in counts], name
            assert pg_metadata.get("rows", pg_metadata.get("rows_checked")) == metadata.get(
                "rows_checked", metadata.get("rows")
            ), name
        else:
            assert pg_metadata == metadata, name


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
    reference = _duckdb_sync(pipeline, duck, FIRST_DAY, LAST_DAY)
    _assert_same(pg_raw(url), duckdb_raw(duck), "full sync")
    _assert_same_marts(url, duck, "full sync")
    _assert_same_checks(outcome.run_id, reference.run_id)

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
        assert _ALL_PASSED.search(out), out
        assert "NOT RUN" not in out
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


def test_checks_on_postgresql_find_a_duplicate_and_an_orphan_the_run_wrote(
    pg: tuple[Pipeline, sa.URL],
) -> None:
    """A synced PostgreSQL warehouse, damaged as a faulty run would: the run-scoped checks of
    that run fail with a sample, while a defect an older run left is not theirs to count (the
    unscoped check, over the whole table, counts it)."""
    pipeline, url = pg
    outcome = pipeline.sync()
    _assert_built(outcome)
    leads = next(r for r in REFERENCES if r.child == "robofy__leads")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            run = {"run": outcome.run_id}
            first_lead = "(select min(lead_id) from raw.robofy__leads)"
            # An older run's duplicate: a lead stored twice, both copies by "old-run".
            conn.exec_driver_sql(
                f"insert into raw.robofy__leads select * from raw.robofy__leads"
                f" where lead_id = {first_lead}"
            )
            conn.exec_driver_sql(
                f"update raw.robofy__leads set _run_id = 'old-run' where lead_id = {first_lead}"
            )
            # This run's defects: a message stored twice, a lead of a chatbot that is not there.
            conn.exec_driver_sql(
                "insert into raw.robofy__chat_messages select * from raw.robofy__chat_messages"
                " where _run_id = %(run)s limit 1",
                run,
            )
            conn.exec_driver_sql(
                "insert into raw.robofy__leads (lead_id, project_id, chatbot_id, _payload,"
                " _loaded_at, _run_id, _slice) values ('orphan-lead', 1, 'no-such-bot', '{}',"
                " now(), %(run)s, '2026-10-10')",
                run,
            )
        with engine.connect() as conn:
            reader = AlchemyReader(conn)
            messages = quality.raw_unique_key(reader, "robofy__chat_messages", outcome.run_id)
            assert not messages.passed
            assert messages.metadata["duplicate_keys"] == 1
            assert messages.metadata["sample_duplicates"] != "none"
            scoped_leads = quality.raw_unique_key(reader, "robofy__leads", outcome.run_id)
            assert scoped_leads.passed, scoped_leads.metadata  # the old run's duplicate
            assert not quality.raw_unique_key(reader, "robofy__leads").passed
            orphan = quality.orphans(reader, leads, outcome.run_id)
            assert not orphan.passed
            assert orphan.metadata["orphan_rows"] == 1
            assert orphan.metadata["sample"] == "[('no-such-bot',)]"
    finally:
        engine.dispose()
