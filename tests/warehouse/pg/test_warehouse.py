"""PgWarehouse: the Warehouse interface on PostgreSQL; all or nothing, and no password shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import LoadCounts, Slice, WarehouseError
from robofy_etl.warehouse.pg.warehouse import PgWarehouse
from tests.pg import PgCluster
from tests.warehouse.conftest import chatbot_row, session_row

DAY = Slice(day_from="2026-03-01", day_to="2026-03-02")


@pytest.fixture
def pgwh(pg_url: sa.URL) -> Iterator[PgWarehouse]:
    wh = PgWarehouse(pg_url, pool_size=1)
    yield wh
    wh.dispose()


def _count(wh: PgWarehouse, relation: str) -> int:
    with wh.connect() as conn:
        return int(conn.exec_driver_sql(f"select count(*) from {relation}").scalar_one())


def _state(wh: PgWarehouse) -> list[tuple[Any, ...]]:
    """meta.sync_state as its readers see it (nothing in the pipeline reads it back)."""
    with wh.connect() as conn:
        rows = conn.exec_driver_sql(
            "select stream, scope, value, run_id from meta.sync_state order by 1, 2"
        ).all()
    return [tuple(row) for row in rows]


def test_a_transaction_commits_data_state_and_audit_together(pgwh: PgWarehouse) -> None:
    with pgwh.transaction(run_id="r1") as tx:
        counts = tx.replace("robofy__inbox_sessions", [session_row("c1", "a", "2026-03-01")], DAY)
        assert tx.merge_snapshot("robofy__chatbots", [chatbot_row("c1")]) == LoadCounts(1)
        tx.set_state("robofy__inbox_sessions", "c1", {"cursor": "x"})
        tx.audit("robofy__inbox_sessions", "2026-03-01", counts, api_requests=2)
        assert tx.count("robofy__inbox_sessions", DAY) == 1
    assert _state(pgwh) == [("robofy__inbox_sessions", "c1", {"cursor": "x"}, "r1")]
    assert set(pgwh.session_watermarks(None, "2026-03-01", "2026-03-02")) == {("c1", "a")}
    assert _count(pgwh, "meta.load_audit") == 1


def test_an_error_rolls_everything_back(pgwh: PgWarehouse) -> None:
    pgwh.initialize()

    def load_then_fail() -> None:
        with pgwh.transaction(run_id="r1") as tx:
            tx.replace("robofy__inbox_sessions", [session_row("c1", "a", "2026-03-01")], DAY)
            tx.set_state("robofy__inbox_sessions", "c1", {"cursor": "x"})
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        load_then_fail()
    assert _count(pgwh, "raw.robofy__inbox_sessions") == 0
    assert _state(pgwh) == []
    # the pooled connection is usable again
    with pgwh.transaction(run_id="r2") as tx:
        tx.replace("robofy__inbox_sessions", [session_row("c1", "a", "2026-03-01")], DAY)
    assert _count(pgwh, "raw.robofy__inbox_sessions") == 1


def test_read_only_connections_refuse_writes_and_do_not_leak_to_the_pool(
    pgwh: PgWarehouse,
) -> None:
    pgwh.initialize()
    with pgwh.connect(read_only=True) as conn, pytest.raises(sa.exc.InternalError):
        conn.exec_driver_sql(
            "insert into meta.missing values ('s','k',null,null,1,now(),now(),'r')"
        )
    with pgwh.transaction(run_id="r") as tx:  # the same pooled connection (pool_size=1)
        tx.set_state("s", "k", {})


def test_the_password_never_shows(
    postgres: PgCluster, pg_url: sa.URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wh = PgWarehouse(pg_url)
    wrong = PgWarehouse(pg_url.set(password="not-" + postgres.password))
    try:
        assert postgres.password not in repr(wh)
        assert "***" in repr(wh)
        wh.publish()
        with pytest.raises(WarehouseError) as caught:
            wrong.initialize()
        message = str(caught.value)
        assert "password authentication failed" in message
        assert "***" in message
        assert postgres.password not in message
        assert "not-" + postgres.password not in message
        assert caught.value.__cause__ is None
        assert postgres.password not in caplog.text
    finally:
        wh.dispose()
        wrong.dispose()


def test_only_postgresql_urls_are_accepted() -> None:
    with pytest.raises(WarehouseError, match="not a PostgreSQL URL"):
        PgWarehouse("duckdb:///x.duckdb")
    with pytest.raises(WarehouseError, match=r"psycopg \(3\) driver"):
        PgWarehouse("postgresql+psycopg2://u:p@h/db")


def test_without_psycopg_the_error_says_what_to_install() -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from robofy_etl.warehouse import WarehouseError\n"
        "try:\n"
        "    import robofy_etl.warehouse.pg.warehouse\n"
        "except WarehouseError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'robofy-etl[postgres]'" in out


def test_from_settings_gives_one_pg_warehouse_per_url(pg_url: sa.URL) -> None:
    from robofy_etl.settings import Settings
    from robofy_etl.warehouse import Warehouse

    full = pg_url.render_as_string(hide_password=False)
    settings = Settings.from_env({}, overrides={"ROBOFY_WAREHOUSE_URL": full})
    wh = Warehouse.from_settings(settings)
    assert isinstance(wh, PgWarehouse)
    assert Warehouse.from_settings(settings) is wh  # one engine (and pool) per URL
    wh.initialize()
    assert wh.active_chatbots() == []
    assert wh.outstanding() == []


def test_from_settings_without_psycopg_names_the_extra_and_duckdb_needs_none(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from robofy_etl.settings import Settings\n"
        "from robofy_etl.warehouse import Warehouse, WarehouseError\n"
        "print(type(Warehouse.from_settings(Settings.from_env({}))).__name__)\n"
        "url = {'ROBOFY_WAREHOUSE_URL': 'postgresql://u:secret-pw@127.0.0.1:9/db'}\n"
        "try:\n"
        "    Warehouse.from_settings(Settings.from_env({}, overrides=url))\n"
        "except WarehouseError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.startswith("Warehouse\n")
    assert "pip install 'robofy-etl[postgres]'" in out
    assert "secret-pw" not in out
