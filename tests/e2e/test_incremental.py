"""Incrementally maintained marts equal a full rebuild, byte for byte, after any sequence of syncs.

The simulator is driven through what makes incremental maintenance hard: the clock moves
(conversations continue, close without a new message, new ones start; stats are restated), a
chatbot is deleted, a session disappears from the API. After each sync the marts are compared
with a full rebuild of a copy of the same warehouse (`models.build(full_refresh=True)`).

The same sequence runs against PostgreSQL (builds incremental there too): after each sync its
staging and mart tables equal a full rebuild of the same database and a DuckDB sync's.
"""

from __future__ import annotations

import logging
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.cli import EXIT_OK, main, run_sync
from robofy_etl.defs.assembly import build_definitions
from robofy_etl.defs.models import FULL_REFRESH_TAG, model_assets
from robofy_etl.settings import Settings
from robofy_etl.simulator.glitches import GlitchRequest, edit_items, error_status
from robofy_etl.warehouse import Warehouse
from robofy_etl.warehouse.models import build, discover
from robofy_etl.warehouse.pg import models as pg_models
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, LINEAGE, Pipeline
from tests.warehouse.pg.test_models import assert_same_tables, duckdb_tables, pg_tables

pytestmark = pytest.mark.slow


def _marts(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        names = [
            n
            for (n,) in conn.execute(
                "select table_name from duckdb_tables() where schema_name = 'marts' order by 1"
            ).fetchall()
        ]
        return {
            n: conn.execute(f'select * from marts."{n}" order by all').fetchall() for n in names
        }


def _modes(pipeline: Pipeline) -> dict[str, str]:
    return dict(pipeline.query("select model, mode from meta.model_state"))


def _assert_equals_full_rebuild(pipeline: Pipeline, tmp_path: Path, step: str) -> None:
    copy = tmp_path / f"rebuilt-{step}.duckdb"
    shutil.copyfile(pipeline.db_path, copy)
    with Warehouse(copy).transaction(run_id="rebuild") as tx:
        results = build(tx.conn, full_refresh=True)
    assert {r.mode for r in results} == {"full"}
    incremental, rebuilt = _marts(pipeline.db_path), _marts(copy)
    assert incremental.keys() == rebuilt.keys()
    for name, rows in rebuilt.items():
        assert incremental[name] == rows, f"{step}: marts.{name} differs from a full rebuild"
    # The published copy, brought up to date with the builds' changes, holds the same marts.
    published = _marts(pipeline.reader_path)
    for name, rows in rebuilt.items():
        assert published[name] == rows, f"{step}: the published marts.{name} differs"


def test_incremental_marts_equal_a_full_rebuild_after_a_sequence_of_syncs(
    pipeline: Pipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="robofy_etl.warehouse.duckdb")
    sim = pipeline.sim
    assert pipeline.sync().exit_code == EXIT_OK
    assert set(_modes(pipeline).values()) == {"full"}  # the first build
    _assert_equals_full_rebuild(pipeline, tmp_path, "first")

    # A day later: conversations continue or close, new ones start, stats are restated.
    sim.advance(hours=24)
    last = LAST_DAY + timedelta(days=1)
    assert pipeline.sync(last - timedelta(days=1), last).exit_code == EXIT_OK
    modes = _modes(pipeline)
    assert modes["marts.messages"] == "incremental", modes
    assert modes["marts.chatbot_daily_activity"] == "incremental", modes
    published = [r.getMessage() for r in caplog.records if r.getMessage().startswith("published")]
    assert "(written:" in published[0]
    assert "(updated:" in published[-1]  # only the changed keys were rewritten
    # The grain check looked at the rows this build wrote, not at every message.
    ((checked, keys_rebuilt, duplicates),) = pipeline.query(
        "select grain_rows, keys_rebuilt, grain_duplicates from meta.model_state"
        " where model = 'marts.messages'"
    )
    (total,) = pipeline.query("select count(*) from marts.messages")[0]
    assert 0 < checked < total
    assert keys_rebuilt > 0
    assert duplicates == 0
    assert all(passed for passed, _ in pipeline.sync().checks.values())
    (keys,) = pipeline.query("select count(*) from marts.sessions")[0]
    _assert_equals_full_rebuild(pipeline, tmp_path, "clock")

    # A chatbot is deleted; another day passes.
    sim.delete_chatbot(sim.dataset.chatbots[0].chatbot_id)
    sim.advance(hours=24)
    last += timedelta(days=1)
    assert pipeline.sync(last - timedelta(days=2), last).exit_code == EXIT_OK
    _assert_equals_full_rebuild(pipeline, tmp_path, "deleted-chatbot")
    # From the third publish on, the copy replaced last time (the spare) is updated in place.
    published = [r.getMessage() for r in caplog.records if r.getMessage().startswith("published")]
    assert "(updated in place:" in published[-1]

    # A session disappears from the API (not listed, its transcript answers 404).
    victim = next(s for s in sim.dataset.sessions if s.created_on.date() >= FIRST_DAY)

    def without(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        return [i for i in items if i["session_id"] != victim.session_id]

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint == "transcript" and request.path.endswith(victim.session_id):
            return error_status("transcript", 404)(request, body)
        return edit_items("sessions", without)(request, body)

    sim.set_glitch(glitch)
    assert pipeline.sync(FIRST_DAY, last).exit_code == EXIT_OK
    assert pipeline.query(
        "select count(*) from marts.sessions where session_id = ?", [victim.session_id]
    ) == [(0,)]
    _assert_equals_full_rebuild(pipeline, tmp_path, "removed-session")
    assert keys > 0


def test_a_changed_model_file_is_rebuilt_in_full(pipeline: Pipeline) -> None:
    """The fingerprint in meta.model_state notices SQL that changed since the last build."""
    assert pipeline.sync().success
    with duckdb.connect(str(pipeline.db_path)) as conn:
        conn.execute("update meta.model_state set fingerprint = 'old' where model = 'marts.leads'")
    assert pipeline.sync().success
    modes = _modes(pipeline)
    assert modes["marts.leads"] == "full"
    assert modes["marts.sessions"] == "unchanged"


def test_rebuild_command_rebuilds_every_model(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pipeline.sync().success
    before = _marts(pipeline.db_path)
    with duckdb.connect(str(pipeline.db_path)) as conn:
        conn.execute("delete from marts.messages")  # damage a mart
    assert main(["rebuild"]) == 0
    assert "Rebuilt" in capsys.readouterr().out
    assert _marts(pipeline.db_path) == before
    assert set(_modes(pipeline).values()) == {"full"}


def _build_modes(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        m.asset_key.to_user_string(): str(m.metadata["build"].value)
        for m in result.asset_materializations_for_node("sql_models")
    }


@pytest.mark.parametrize("how", ["run_config", "tag"])
def test_dagster_rebuilds_every_model_on_request(pipeline: Pipeline, how: str) -> None:
    """The models asset rebuilds everything from raw when asked, by run config or by run tag;
    without either, a run after a sync that changed nothing rebuilds nothing."""
    assert pipeline.sync().success
    defs = build_definitions(Settings.from_env())
    models = model_assets(discover())
    resources = {"warehouse": defs.resources["warehouse"]}
    plain = dg.materialize([models], resources=resources)
    assert set(_build_modes(plain).values()) == {"unchanged"}
    with duckdb.connect(str(pipeline.db_path)) as conn:
        conn.execute("delete from marts.messages")  # damage a mart: only a full build repairs it
    if how == "run_config":
        run_config = {"ops": {"sql_models": {"config": {"full_refresh": True}}}}
        result = dg.materialize([models], resources=resources, run_config=run_config)
    else:
        result = dg.materialize([models], resources=resources, tags={FULL_REFRESH_TAG: "true"})
    modes = _build_modes(result)
    assert set(modes) == {m.name.replace(".", "/") for m in discover()}
    assert set(modes.values()) == {"full"}
    assert pipeline.query("select count(*) from marts.messages")[0][0] > 0


# -- PostgreSQL: the same sequence, built incrementally there (warehouse/pg/models.py) ----------


class _Rollback(Exception):
    """Leaves a full rebuild's transaction without committing it."""


def _pg_state(url: sa.URL) -> dict[str, tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "select model, mode, keys_rebuilt, grain_rows from meta.model_state"
            ).all()
    finally:
        engine.dispose()
    return {row[0]: tuple(row[1:]) for row in rows}


def _assert_pg_equals_a_full_rebuild_and_duckdb(url: sa.URL, duck: Path, step: str) -> None:
    """The incrementally built PostgreSQL tables equal a full rebuild of the same database (run
    in a transaction that is rolled back) and those of a DuckDB sync of the same API."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            incremental = pg_tables(conn, frozenset(LINEAGE))
        with engine.connect() as conn:
            try:
                with pg_models.build_transaction(conn):
                    results = pg_models.build(conn, full_refresh=True)
                    rebuilt = pg_tables(conn, frozenset(LINEAGE))
                    raise _Rollback
            except _Rollback:
                pass
        assert {r.mode for r in results} == {"full"}
        assert all(rows for _, rows in rebuilt.values()), f"{step}: an empty model"
        for name, table in rebuilt.items():
            assert incremental[name] == table, f"{step}: {name} differs from a full rebuild"
        # The two syncs are different runs: when each saw a chatbot deleted differs too.
        skip = frozenset({*LINEAGE, "deleted_at"})
        with engine.connect() as conn:
            pg_without = pg_tables(conn, skip)
    finally:
        engine.dispose()
    with duckdb.connect(str(duck), read_only=True) as dconn:
        assert_same_tables(pg_without, duckdb_tables(dconn, skip))


def _duckdb_sync(pipeline: Pipeline, path: Path, first: date, last: date) -> None:
    settings = Settings.from_env(overrides={"ROBOFY_WAREHOUSE_URL": f"duckdb:///{path}"})
    outcome = run_sync(settings, first, last)
    assert outcome.exit_code == EXIT_OK, outcome.errors


def _pg_sync(url: sa.URL, first: date, last: date) -> None:
    overrides = {"ROBOFY_WAREHOUSE_URL": url.render_as_string(hide_password=False)}
    outcome = run_sync(Settings.from_env(overrides=overrides), first, last)
    assert outcome.exit_code == EXIT_OK, outcome.errors


def test_postgresql_marts_built_incrementally_equal_a_full_rebuild_and_duckdbs(
    pipeline: Pipeline, pg_url: sa.URL, tmp_path: Path
) -> None:
    sim = pipeline.sim
    duck = tmp_path / "reference.duckdb"

    def both(first: date, last: date, step: str) -> None:
        _pg_sync(pg_url, first, last)
        _duckdb_sync(pipeline, duck, first, last)
        _assert_pg_equals_a_full_rebuild_and_duckdb(pg_url, duck, step)

    both(FIRST_DAY, LAST_DAY, "first")
    assert {mode for mode, *_ in _pg_state(pg_url).values()} == {"full"}

    # A day later: conversations continue or close, new ones start, stats are restated.
    sim.advance(hours=24)
    last = LAST_DAY + timedelta(days=1)
    both(last - timedelta(days=1), last, "clock")
    state = _pg_state(pg_url)
    assert state["marts.messages"][0] == "incremental", state
    assert state["marts.chatbot_daily_activity"][0] == "incremental", state
    _, keys, checked = state["marts.messages"]
    assert keys > 0
    assert checked > 0

    # A chatbot is deleted; another day passes.
    sim.delete_chatbot(sim.dataset.chatbots[0].chatbot_id)
    sim.advance(hours=24)
    last += timedelta(days=1)
    both(last - timedelta(days=2), last, "deleted-chatbot")

    # A session disappears from the API (not listed, its transcript answers 404).
    victim = next(s for s in sim.dataset.sessions if s.created_on.date() >= FIRST_DAY)

    def without(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        return [i for i in items if i["session_id"] != victim.session_id]

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint == "transcript" and request.path.endswith(victim.session_id):
            return error_status("transcript", 404)(request, body)
        return edit_items("sessions", without)(request, body)

    sim.set_glitch(glitch)
    both(FIRST_DAY, last, "removed-session")
    assert any(mode == "incremental" for mode, *_ in _pg_state(pg_url).values())


def test_rebuild_on_postgresql_rebuilds_every_model_in_full(
    pipeline: Pipeline, pg_url: sa.URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pg_sync(pg_url, FIRST_DAY, LAST_DAY)
    _pg_sync(pg_url, FIRST_DAY, LAST_DAY)
    assert "full" not in {mode for mode, *_ in _pg_state(pg_url).values()}
    monkeypatch.setenv("ROBOFY_WAREHOUSE_URL", pg_url.render_as_string(hide_password=False))
    assert main(["rebuild"]) == EXIT_OK
    assert {mode for mode, *_ in _pg_state(pg_url).values()} == {"full"}
    del pipeline
