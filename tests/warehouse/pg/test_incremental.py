"""Incremental model builds on PostgreSQL (warehouse/pg/models.py, pg/build_sql.py).

The hand-written account is loaded into DuckDB and PostgreSQL (the ``seeded`` fixture); then
the same loads (``replace_slice`` / ``merge_snapshot`` of each back end, same rows, same
lineage) change both, each back end builds its models incrementally, and every staging and
mart table of PostgreSQL must hold DuckDB's rows, and those of a full rebuild. The watermark's
hard case is played out with two real transactions: a load that began before a build and
commits after it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import load as duck_load
from robofy_etl.warehouse import models
from robofy_etl.warehouse.incremental import rewrite_sources
from robofy_etl.warehouse.load import Slice
from robofy_etl.warehouse.models import ModelBuildError
from robofy_etl.warehouse.pg import load as pg_load
from robofy_etl.warehouse.pg import models as pg_models
from robofy_etl.warehouse.pg.warehouse import PgWarehouse
from robofy_etl.warehouse.tables import RAW_TABLES
from tests.sql.conftest import BOT_WA, BOT_WEB, S1, S2
from tests.warehouse.pg.test_models import (
    assert_same_tables,
    build_on,
    duckdb_tables,
    pg_tables,
)

pytestmark = pytest.mark.slow

Seeded = tuple[sa.Engine, duckdb.DuckDBPyConnection]
MESSAGES = "robofy__chat_messages"


def stored_rows(dconn: duckdb.DuckDBPyConnection, table: str, where: str) -> list[dict[str, Any]]:
    """Rows of ``raw.<table>`` as a load would bring them back (typed columns, payload, slice)."""
    columns = [*RAW_TABLES[table].column_names, "_payload", "_slice"]
    result = dconn.execute(f"select {', '.join(columns)} from raw.{table} where {where}")
    rows = [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
    for row in rows:
        row["_payload"] = json.loads(row["_payload"])
    return rows


def load_both(
    seeded: Seeded,
    table: str,
    rows: list[dict[str, Any]],
    slc: Slice,
    loaded_at: datetime,
    snapshot: bool = False,
) -> None:
    """The same load into both back ends, committed."""
    engine, dconn = seeded
    options: dict[str, Any] = {"loaded_at": loaded_at, "run_id": f"run-{loaded_at:%H%M%S}"}
    dconn.execute("begin")
    if snapshot:
        duck_load.merge_snapshot(dconn, table, rows, slc.within, **options)
    else:
        duck_load.replace_slice(dconn, table, rows, slc, **options)
    dconn.execute("commit")
    with engine.begin() as conn:
        if snapshot:
            pg_load.merge_snapshot(conn, table, rows, slc.within, **options)
        else:
            pg_load.replace_slice(conn, table, rows, slc, **options)


def rename_chatbot(seeded: Seeded, chatbot_id: str, name: str) -> None:
    """A snapshot load into both back ends renaming one chatbot (a lookup change)."""
    bots = stored_rows(seeded[1], "robofy__chatbots", f"chatbot_id = '{chatbot_id}'")
    assert len(bots) == 1
    bots[0]["_payload"]["name"] = name
    load_both(
        seeded,
        "robofy__chatbots",
        bots,
        Slice(within={"chatbot_id": [chatbot_id]}),
        datetime(2026, 4, 27, 9, 0),
        snapshot=True,
    )


def build_duckdb(dconn: duckdb.DuckDBPyConnection, full_refresh: bool = False) -> None:
    dconn.execute("begin")
    models.build(dconn, full_refresh=full_refresh)
    dconn.execute("commit")


def assert_same_as_duckdb(seeded: Seeded) -> dict[str, Any]:
    engine, dconn = seeded
    with engine.connect() as conn:
        got = pg_tables(conn)
    assert_same_tables(got, duckdb_tables(dconn))
    return got


def model_state(engine: sa.Engine) -> dict[str, tuple[Any, ...]]:
    """``model -> (mode, keys_rebuilt, grain_rows, grain_duplicates, watermark_xid)``."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select model, mode, keys_rebuilt, grain_rows, grain_duplicates, watermark_xid"
            " from meta.model_state"
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def session_messages(dconn: duckdb.DuckDBPyConnection, session: str) -> list[dict[str, Any]]:
    return stored_rows(dconn, MESSAGES, f"session_id = '{session}' order by ordinal")


def test_incremental_builds_equal_duckdb_and_a_full_rebuild(seeded: Seeded) -> None:
    engine, dconn = seeded
    first = build_on(engine)
    assert {r.mode for r in first} == {"full"}
    assert_same_as_duckdb(seeded)

    # A conversation continues: one message edited, one removed (archived in removed_rows).
    messages = session_messages(dconn, S1)
    assert len(messages) >= 2
    messages[0]["_payload"]["parts"][0]["text"] = "edited on the second day"
    kept = messages[:-1]
    load_both(
        seeded,
        MESSAGES,
        kept,
        Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S1]}),
        datetime(2026, 4, 27, 8, 0),
    )
    build_duckdb(dconn)
    modes = {r.name: r.mode for r in build_on(engine)}
    assert modes["staging.stg_robofy__chat_messages"] == "incremental", modes
    assert modes["marts.messages"] == "incremental", modes
    assert modes["marts.sessions"] == "incremental", modes
    assert modes["staging.stg_robofy__leads"] == "unchanged", modes
    state = model_state(engine)
    mode, keys, checked, duplicates, xid = state["marts.messages"]
    assert (mode, keys, duplicates) == ("incremental", 1, 0)
    with engine.connect() as conn:
        total = conn.exec_driver_sql("select count(*) from marts.messages").scalar_one()
    assert 0 < checked < total  # the grain check counted the rows this build wrote
    assert xid is not None
    assert_same_as_duckdb(seeded)

    # A chatbot is renamed: a lookup change touches every session of that chatbot.
    rename_chatbot(seeded, BOT_WA, "Renamed bot")
    # A session vanishes from the listing (removed from raw with its messages).
    sessions = stored_rows(dconn, "robofy__inbox_sessions", f"chatbot_id = '{BOT_WEB}'")
    assert any(s["session_id"] == S2 for s in sessions)
    load_both(
        seeded,
        "robofy__inbox_sessions",
        [s for s in sessions if s["session_id"] != S2],
        Slice(within={"chatbot_id": [BOT_WEB]}),
        datetime(2026, 4, 27, 9, 30),
    )
    build_duckdb(dconn)
    modes = {r.name: r.mode for r in build_on(engine)}
    assert modes["marts.sessions"] == "incremental", modes
    assert modes["marts.chatbots"] == "incremental", modes
    incremental = assert_same_as_duckdb(seeded)

    # A full rebuild from raw gives the same tables.
    assert {r.mode for r in build_on(engine, full_refresh=True)} == {"full"}
    with engine.connect() as conn:
        assert_same_tables(pg_tables(conn), incremental)
    assert {m for m, *_ in model_state(engine).values()} == {"full"}


def test_a_load_that_commits_after_a_build_it_began_before_is_not_skipped(
    seeded: Seeded,
) -> None:
    """Loads run while models build on PostgreSQL; ``_loaded_at`` is when a load's transaction
    began. Two loads stamped *before* a build, committed *after* it read raw, with a third
    committed in between stamped later: the next build still picks both up."""
    engine, dconn = seeded
    build_on(engine)
    early, late = datetime(2026, 4, 27, 6, 0), datetime(2026, 4, 27, 7, 0)
    s1 = session_messages(dconn, S1)
    s1[0]["_payload"]["parts"][0]["text"] = "written by a slow load"
    s1_slice = Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S1]})
    s2 = session_messages(dconn, S2)
    s2[0]["_payload"]["parts"][0]["text"] = "written by a load that waited"
    s2_slice = Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S2]})
    options = {"loaded_at": early, "run_id": "slow"}
    with engine.connect() as slow, engine.connect() as waiting:
        slow.begin()
        pg_load.replace_slice(slow, MESSAGES, s1, s1_slice, **options)  # written, not committed
        waiting.begin()
        waiting.exec_driver_sql("select 1")  # begun, nothing written yet
        # A load that began later commits first, stamped later than both.
        bots = stored_rows(dconn, "robofy__chatbots", f"chatbot_id = '{BOT_WA}'")
        bots[0]["_payload"]["name"] = "Renamed while loads ran"
        with engine.begin() as conn:
            pg_load.merge_snapshot(
                conn, "robofy__chatbots", bots, {"chatbot_id": [BOT_WA]}, loaded_at=late, run_id="x"
            )
        # The build neither waits for the loads in flight nor sees their rows.
        assert "incremental" in {r.mode for r in build_on(engine)}
        slow.commit()
        # Its slice lock was held by the slow load: it writes only now, after the build.
        pg_load.replace_slice(waiting, MESSAGES, s2, s2_slice, **options)
        waiting.commit()
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "select count(*) from staging.stg_robofy__chat_messages"
            " where left(text, 10) = 'written by'"
        ).scalar_one()
    assert stored == 0  # the build above ran before those loads committed
    modes = {r.name: r.mode for r in build_on(engine)}
    assert modes["marts.messages"] == "incremental", modes
    # The same loads into DuckDB, one after the other, and a full build there.
    dconn.execute("begin")
    duck_load.merge_snapshot(
        dconn, "robofy__chatbots", bots, {"chatbot_id": [BOT_WA]}, loaded_at=late, run_id="x"
    )
    duck_load.replace_slice(dconn, MESSAGES, s1, s1_slice, **options)
    duck_load.replace_slice(dconn, MESSAGES, s2, s2_slice, **options)
    dconn.execute("commit")
    build_duckdb(dconn, full_refresh=True)
    assert_same_as_duckdb(seeded)


def _copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(models.SQL_DIR, target)
    return target


def test_a_changed_variant_file_rebuilds_its_model_and_what_reads_it_in_full(
    seeded: Seeded, tmp_path: Path
) -> None:
    engine, _ = seeded
    sql_dir = _copy_models(tmp_path)
    build_on(engine, models.discover(sql_dir))
    variant = sql_dir / "postgres" / "marts" / "leads.sql"
    variant.write_text(variant.read_text() + "\n-- an edit to the PostgreSQL variant only\n")
    results = {r.name: r for r in build_on(engine, models.discover(sql_dir))}
    assert results["marts.leads"].mode == "full"
    assert results["marts.leads"].reason == "its SQL changed since it was built"
    assert results["marts.chatbot_daily_activity"].mode == "full"  # reads marts.leads
    assert results["marts.sessions"].mode == "unchanged"
    assert_same_as_duckdb(seeded)


def test_selected_models_are_rebuilt_in_full_and_their_readers_next_time(seeded: Seeded) -> None:
    engine, _ = seeded
    build_on(engine)
    results = build_on(engine, select=["marts.sessions"])
    assert [(r.name, r.mode) for r in results] == [("marts.sessions", "full")]
    state = model_state(engine)
    assert "marts.chatbots" not in state  # reads marts.sessions: rebuilt in full next time
    assert "marts.messages" in state
    modes = {r.name: r.mode for r in build_on(engine)}
    assert modes["marts.chatbots"] == "full"
    assert modes["marts.messages"] == "unchanged"
    assert_same_as_duckdb(seeded)


def test_a_build_outside_build_transaction_is_refused(seeded: Seeded) -> None:
    engine, _ = seeded
    with (
        pytest.raises(ModelBuildError, match=r"build_transaction.*read committed"),
        engine.begin() as conn,
    ):
        pg_models.build(conn)


def test_pg_warehouse_builds_incrementally_and_rebuilds_on_request(
    seeded: Seeded, pg_url: sa.URL
) -> None:
    _, dconn = seeded
    wh = PgWarehouse(pg_url)
    try:
        assert {r.mode for r in wh.build_models()} == {"full"}
        assert {r.mode for r in wh.build_models()} == {"unchanged"}
        assert {r.mode for r in wh.build_models(full_refresh=True)} == {"full"}
        with wh.connect() as conn:  # the build lock was released with the build
            assert (
                conn.exec_driver_sql(
                    "select count(*) from pg_locks where locktype = 'advisory'"
                ).scalar_one()
                == 0
            )
    finally:
        wh.dispose()
    assert_same_as_duckdb(seeded)
    del dconn


@pytest.mark.parametrize("model", models.discover(), ids=lambda m: m.name)
def test_every_source_of_the_postgresql_sql_can_be_cut(model: models.Model) -> None:
    """An incremental build reads each keyed source from a cut of it (``rewrite_sources``): the
    PostgreSQL SQL (sqlglot's output, or a variant) must name each one where it can be found,
    or the build would silently read it whole."""
    sql, _ = pg_models.postgres_sql(model)
    for source in model.sources:
        cut = rewrite_sources(sql, {source.relation: "_robofy_cut"})
        assert "_robofy_cut" in cut, source.relation
        assert not re.search(rf"(?i)\b(from|join)\s+{re.escape(source.relation)}\b", cut)


def test_a_reader_never_sees_an_incremental_build_half_done(seeded: Seeded) -> None:
    """An incremental build deletes a key's rows and inserts them again; a reader polling that
    key sees the same rows all along (one transaction), never none."""
    engine, dconn = seeded
    build_on(engine)
    where = f"chatbot_id = '{BOT_WEB}' and session_id = '{S1}'"
    with engine.connect() as conn:
        expected = conn.exec_driver_sql(f"select count(*) from marts.messages where {where}")
        before = expected.scalar_one()
    assert before > 0
    counts: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        try:
            with engine.connect() as conn:
                while not stop.is_set():
                    query = f"select count(*) from marts.messages where {where}"
                    counts.append(conn.exec_driver_sql(query).scalar_one())
                    conn.rollback()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    messages = session_messages(dconn, S1)
    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for run in range(3):
            for message in messages:
                message["_payload"]["edit"] = run
            with engine.begin() as conn:
                pg_load.replace_slice(
                    conn,
                    MESSAGES,
                    messages,
                    Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S1]}),
                    loaded_at=datetime(2026, 4, 27, 10, run),
                    run_id=f"edit-{run}",
                )
            modes = {r.name: r.mode for r in build_on(engine)}
            assert modes["marts.messages"] == "incremental", modes
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert counts
    assert set(counts) == {before}


def test_the_planner_weighs_a_change_against_the_statistics_not_a_count(
    pg_engine: sa.Engine,
) -> None:
    # count(*) reads every row on PostgreSQL; the planner's row estimate is read instead once
    # the table has been analyzed, and an exact count only before.
    from robofy_etl.warehouse.pg.build_sql import PgBuildSQL

    with pg_engine.begin() as conn:
        conn.exec_driver_sql("create table staging.weighed as select generate_series(1, 500) as n")
        sql = PgBuildSQL(conn)
        assert sql.about_rows("staging.weighed") == 500  # never analyzed: counted
        conn.exec_driver_sql("analyze staging.weighed")
        conn.exec_driver_sql("insert into staging.weighed select generate_series(1, 100)")
        assert sql.about_rows("staging.weighed") == 500  # the statistics, not the 600 rows


# A statement that counts the rows of a model table (reads all of it, on PostgreSQL).
_COUNTS_A_MODEL = re.compile(r"(?is)^\s*select\s+count\(\*\).*\sfrom\s+(staging|marts)\.\S+\s*$")


def build_counted(engine: sa.Engine) -> tuple[dict[str, models.BuildResult], list[str]]:
    """Build, and return the results by model and the statements that counted a model table."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))  # (conn, cursor, statement, parameters, ...)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        results = {r.name: r for r in build_on(engine)}
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return results, [s for s in statements if _COUNTS_A_MODEL.search(s)]


def assert_rows_are_counts(engine: sa.Engine, results: dict[str, models.BuildResult]) -> None:
    """Each build result's ``rows``, and the count kept in ``meta.model_state``, is the
    table's ``count(*)``."""
    with engine.connect() as conn:
        counts = {
            name: conn.exec_driver_sql(f"select count(*) from {name}").scalar_one()
            for name in results
        }
        kept = {
            str(model): rows
            for model, rows in conn.exec_driver_sql("select model, row_count from meta.model_state")
        }
    assert {name: r.rows for name, r in results.items()} == counts
    assert {name: kept.get(name) for name in results} == counts


def _new_message(template: dict[str, Any], message_id: str, ordinal: int) -> dict[str, Any]:
    row = copy.deepcopy(template)
    row["message_id"] = row["_payload"]["id"] = message_id
    row["ordinal"] = ordinal
    row["sent_at"] = template["sent_at"]
    return row


def test_reported_rows_stay_the_exact_count_without_counting_the_tables(seeded: Seeded) -> None:
    """``rows`` of a build result is its table's ``count(*)``; an incremental build keeps it
    from the previous count and the rows it deleted and inserted (``meta.model_state``)
    instead of counting the table, which reads all of it on PostgreSQL."""
    engine, dconn = seeded
    results, _ = build_counted(engine)
    assert {r.mode for r in results.values()} == {"full"}
    assert_rows_are_counts(engine, results)
    s1_slice = Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S1]})
    messages = session_messages(dconn, S1)
    assert len(messages) >= 4
    steps = []
    # Two messages added to a conversation, one edited (inserts and an update).
    grown = [*messages, _new_message(messages[-1], "m-added-1", 90)]
    grown.append(_new_message(messages[-1], "m-added-2", 91))
    grown[0] = copy.deepcopy(grown[0])
    grown[0]["_payload"]["parts"][0]["text"] = "edited"
    steps.append([(MESSAGES, grown, s1_slice, False)])
    # Three of its messages removed (deletes), a session gone from the listing, a chatbot
    # renamed (a lookup change touching all its sessions).
    sessions = stored_rows(dconn, "robofy__inbox_sessions", f"chatbot_id = '{BOT_WEB}'")
    bots = stored_rows(dconn, "robofy__chatbots", f"chatbot_id = '{BOT_WA}'")
    bots[0]["_payload"]["name"] = "Renamed bot"
    steps.append(
        [
            (MESSAGES, grown[3:], s1_slice, False),
            (
                "robofy__inbox_sessions",
                [s for s in sessions if s["session_id"] != S2],
                Slice(within={"chatbot_id": [BOT_WEB]}),
                False,
            ),
            ("robofy__chatbots", bots, Slice(within={"chatbot_id": [BOT_WA]}), True),
        ]
    )
    # Nothing changed.
    steps.append([])
    for n, loads in enumerate(steps):
        for table, rows, slc, snapshot in loads:
            load_both(seeded, table, rows, slc, datetime(2026, 4, 27, 8, n), snapshot)
        results, counted = build_counted(engine)
        modes = {r.mode for r in results.values()}
        assert "full" not in modes, results
        assert ("incremental" in modes) == bool(loads), results
        assert counted == []
        assert_rows_are_counts(engine, results)
    build_duckdb(dconn)
    assert_same_as_duckdb(seeded)


def test_a_build_state_without_a_row_count_is_counted_once_and_kept(seeded: Seeded) -> None:
    """A warehouse built before ``meta.model_state`` kept row counts: the next build adds the
    column, builds incrementally as before, counts each model once and keeps the count."""
    engine, dconn = seeded
    build_on(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("alter table meta.model_state drop column if exists row_count")
    messages = session_messages(dconn, S1)
    s1_slice = Slice(within={"chatbot_id": [BOT_WEB], "session_id": [S1]})
    load_both(seeded, MESSAGES, messages[1:], s1_slice, datetime(2026, 4, 27, 8, 0))
    results, counted = build_counted(engine)
    assert results["marts.messages"].mode == "incremental"
    assert "full" not in {r.mode for r in results.values()}
    assert counted  # no count kept yet: counted once
    assert_rows_are_counts(engine, results)
    load_both(seeded, MESSAGES, messages[1:-1], s1_slice, datetime(2026, 4, 27, 9, 0))
    results, counted = build_counted(engine)
    assert results["marts.messages"].mode == "incremental"
    assert counted == []
    assert_rows_are_counts(engine, results)


def test_a_cut_keeping_most_of_a_columns_values_is_read_in_place(pg_engine: sa.Engine) -> None:
    # Copying a cut that holds most of a table writes (and analyzes) about all of it; the
    # table's statistics say how many distinct values the column has.
    from robofy_etl.warehouse.pg.build_sql import PgBuildSQL

    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            "create table staging.cut_me as"
            " select mod(g, 100) as bot, g as n from generate_series(1, 10000) as g"
        )
        sql = PgBuildSQL(conn)
        assert not sql.cut_in_place("staging.cut_me", "bot", 90)  # no statistics: copied
        conn.exec_driver_sql("analyze staging.cut_me")
        assert not sql.cut_in_place("staging.cut_me", "bot", 10)  # 10 of 100 bots
        assert sql.cut_in_place("staging.cut_me", "bot", 60)
        # A unique column: its distinct values are a share of the rows (n_distinct -1).
        assert not sql.cut_in_place("staging.cut_me", "n", 60)
        assert sql.cut_in_place("staging.cut_me", "n", 6000)


def test_the_rollup_reads_most_of_the_sessions_in_place_and_builds_the_same(
    seeded: Seeded,
) -> None:
    engine, dconn = seeded
    build_on(engine)
    build_duckdb(dconn)
    # A full build analyzes what it builds: the statistics are there at once, not when
    # autovacuum comes by (it does not, within this test: its threshold is 50 changed rows).
    with engine.connect() as conn:
        analyzed = dict(
            conn.exec_driver_sql(
                "select schemaname || '.' || relname, last_analyze from pg_stat_user_tables"
                " where schemaname in ('staging', 'marts')"
            ).all()
        )
    assert analyzed
    assert all(analyzed.values()), analyzed
    # A chatbot is renamed: one of the two chatbots, so half of marts.sessions' chatbots.
    rename_chatbot(seeded, BOT_WA, "Renamed again")
    build_duckdb(dconn)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        modes = {r.name: r.mode for r in build_on(engine)}
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert modes["marts.chatbots"] == "incremental", modes
    # The rollup's cut of marts.sessions (by chatbot: half of them) is a view of it; a cut
    # by two columns (chatbot_daily_activity's, by chatbot and day) is still copied.
    by_bot = [s for s in statements if 'select * from marts.sessions where "chatbot_id" in' in s]
    assert by_bot
    assert all(s.startswith("create temp view") for s in by_bot), by_bot
    by_day = [s for s in statements if 'from marts.sessions where ("chatbot_id", "started' in s]
    assert by_day
    assert all(s.startswith("create temp table") for s in by_day), by_day
    incremental = assert_same_as_duckdb(seeded)
    assert {r.mode for r in build_on(engine, full_refresh=True)} == {"full"}
    with engine.connect() as conn:
        assert_same_tables(pg_tables(conn), incremental)
