"""Crash safety and readers: a killed sync loses nothing, and dashboards never see half a load.

On PostgreSQL the sync is killed inside a load's transaction (held there by an advisory lock the
test takes), and the readers poll the marts themselves rather than a published copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from robofy_etl.warehouse.models import discover, topological_order
from robofy_etl.warehouse.pg.locks import lock_key
from robofy_etl.warehouse.pg.warehouse import PgWarehouse
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, PgPipeline, Pipeline, on_postgresql

pytestmark = pytest.mark.slow


def _start_sync(pipeline: Pipeline) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robofy_etl.cli",
            "sync",
            "--start",
            str(FIRST_DAY),
            "--end",
            str(LAST_DAY),
        ],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_SESSIONS_STATE = "select scope, run_id from meta.sync_state where stream = 'sessions'"


def _synced_then_clock_moved(pipeline: Pipeline) -> dict[str, list[tuple]]:
    """A complete sync, then a day more of data at the API; returns the synced tables."""
    assert pipeline.sync().success
    before = pipeline.snapshot(lineage=False)
    before["sessions state"] = sorted(pipeline.query(_SESSIONS_STATE))
    assert before["sessions state"]
    pipeline.sim.advance(hours=24)
    pipeline.sim.clear_log()
    return before


def _kill_sync_when(pipeline: Pipeline, reached: Callable[[], bool]) -> None:
    """Start `robofy-etl sync` and SIGKILL it as soon as ``reached()``."""
    process = _start_sync(pipeline)
    try:
        deadline = time.monotonic() + 60
        while not reached():
            assert process.poll() is None, "the sync ended before the point to kill it"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _assert_previous_state_then_next_run_completes(
    pipeline: Pipeline, before: dict[str, list[tuple]]
) -> None:
    # Sessions and transcripts were being fetched or written: none of them was committed, and
    # the sessions' sync state was not advanced.
    after_kill = pipeline.snapshot(lineage=False)
    after_kill["sessions state"] = sorted(pipeline.query(_SESSIONS_STATE))
    for table in ("raw.robofy__inbox_sessions", "raw.robofy__chat_messages", "sessions state"):
        assert after_kill[table] == before[table], table

    sim = pipeline.sim
    sim.set_latency(0)
    outcome = pipeline.sync(FIRST_DAY, LAST_DAY)
    assert outcome.success, outcome.errors
    complete = pipeline.snapshot(lineage=False)
    complete["sessions state"] = sorted(pipeline.query(_SESSIONS_STATE))
    assert complete["raw.robofy__inbox_sessions"] != before["raw.robofy__inbox_sessions"]
    assert complete["sessions state"] != before["sessions state"]
    # Every table the killed run touched holds either the previous or the complete state:
    # loads that had committed before the kill were whole, the rest were not started.
    for table, rows in after_kill.items():
        assert rows in (before[table], complete[table]), table
    (sessions,) = pipeline.query("select count(*) from marts.sessions")[0]
    assert sessions == len([s for s in sim.dataset.sessions if s.created_on.date() <= LAST_DAY])


def test_killed_sync_leaves_previous_state_and_next_run_completes(pipeline: Pipeline) -> None:
    before = _synced_then_clock_moved(pipeline)
    sim = pipeline.sim
    sim.set_latency(40)
    _kill_sync_when(pipeline, lambda: any(e.endpoint == "transcript" for e in sim.request_log))
    _assert_previous_state_then_next_run_completes(pipeline, before)


_WAITING_WRITER = """
    select count(*) from pg_stat_activity a
    where a.datname = current_database() and a.application_name = 'robofy-etl'
      and a.wait_event_type = 'Lock' and a.wait_event = 'advisory'
      and exists (select 1 from pg_locks l where l.pid = a.pid and l.granted
                  and l.relation = 'raw.robofy__inbox_sessions'::regclass
                  and l.mode = 'RowExclusiveLock')
"""


@on_postgresql
def test_sync_killed_inside_a_postgresql_load_leaves_no_rows_and_no_lock(
    pipeline: PgPipeline,
) -> None:
    """Killed while its transaction holds written sessions and waits for the messages' lock:
    the server rolls it back once the lock comes, no lock or session of it stays, and the next
    run completes."""
    before = _synced_then_clock_moved(pipeline)
    sessions = "select pid from pg_stat_activity where application_name = 'robofy-etl'"
    ours = [pid for (pid,) in pipeline.query(sessions)]  # this process's pool, of the sync above
    with pipeline.connect() as monitor, pipeline.connect() as holder:
        with holder.transaction():
            holder.execute(
                "select pg_advisory_xact_lock(%s)", [lock_key("robofy", "robofy__chat_messages")]
            )
            _kill_sync_when(pipeline, lambda: monitor.execute(_WAITING_WRITER).fetchone() == (1,))
        # The lock released, the orphaned server session gets it, finds its client gone, ends.
        theirs = (
            "select pid, state, wait_event, query from pg_stat_activity"
            " where application_name = 'robofy-etl' and not pid = any(%s)"
        )
        deadline = time.monotonic() + 30
        while left := monitor.execute(theirs, [ours]).fetchall():
            assert time.monotonic() < deadline, f"the killed sync's server sessions stayed: {left}"
            time.sleep(0.05)
    assert pipeline.query("select count(*) from pg_locks where locktype = 'advisory'") == [(0,)]
    _assert_previous_state_then_next_run_completes(pipeline, before)


READER = textwrap.dedent(
    """
    import json, sys, time
    import duckdb
    path, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    results = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with duckdb.connect(path, read_only=True) as conn:
                sessions, expected, messages = conn.execute(
                    "select (select count(*) from marts.sessions),"
                    " (select coalesce(sum(message_count), 0) from marts.sessions),"
                    " (select count(*) from marts.messages)"
                ).fetchone()
            results.append({"ok": True, "sessions": sessions, "consistent": expected == messages})
        except duckdb.IOException as exc:
            if "No such file" in str(exc) or "does not exist" in str(exc):
                time.sleep(0.01)
                continue
            results.append({"ok": False, "error": str(exc)})
        except Exception as exc:
            results.append({"ok": False, "error": repr(exc)})
        time.sleep(0.005)
    with open(out, "w") as fh:
        json.dump(results, fh)
    """
)


def test_published_copy_serves_readers_during_syncs(pipeline: Pipeline, tmp_path: Path) -> None:
    assert pipeline.sync().success
    assert pipeline.reader_path.exists()
    out = tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(pipeline.reader_path), str(out), "12"]
    )
    try:
        pipeline.sim.advance(hours=24)
        assert pipeline.sync(FIRST_DAY, LAST_DAY).success
        pipeline.sim.advance(hours=24)
        assert pipeline.sync(FIRST_DAY, LAST_DAY).success
    finally:
        reader.wait(timeout=60)
    results = json.loads(out.read_text())
    assert len(results) > 20
    failures = [r for r in results if not r["ok"]]
    assert failures == []
    assert all(r["consistent"] for r in results)
    # The reader saw the data change underneath it (new sessions after the clock moved).
    assert len({r["sessions"] for r in results}) >= 2


def test_dagster_cli_materializes_with_the_same_environment(pipeline: Pipeline) -> None:
    """`dagster asset materialize` loads robofy_etl.definitions from the environment alone."""
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [
            str(dagster),
            "asset",
            "materialize",
            "-m",
            "robofy_etl.definitions",
            "--select",
            "raw/robofy__projects,raw/robofy__chatbots",
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RUN_SUCCESS" in result.stderr + result.stdout
    (chatbots,) = pipeline.query("select count(*) from raw.robofy__chatbots")[0]
    assert chatbots == len(pipeline.sim.dataset.chatbots)


def test_locked_warehouse_fails_with_advice_and_loses_nothing(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pipeline.sync().success
    before = pipeline.snapshot()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(pipeline.db_path)!r}); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("ROBOFY_LOCK_TIMEOUT_S", "1")
        outcome = pipeline.sync()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert not outcome.success
    text = "\n".join(outcome.errors)
    assert f"PID {holder.pid}" in text
    assert "ROBOFY_LOCK_TIMEOUT_S" in text
    assert "WarehouseLockedError" not in text  # the advice, not a class path
    assert pipeline.snapshot() == before


_MARTS = ("sessions", "messages", "leads", "chatbots", "projects", "message_stats_daily")


@on_postgresql
def test_readers_of_the_postgresql_marts_never_see_an_error_or_an_empty_mart(
    pipeline: PgPipeline,
) -> None:
    """A dashboard polls the marts directly (one statement per mart, each its own snapshot)
    while two syncs load and rebuild them."""
    assert pipeline.sync().success
    rounds: list[dict[str, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with pipeline.connect() as conn:
            while not stop.is_set():
                try:
                    counts = {
                        mart: conn.execute(f"select count(*) from marts.{mart}").fetchone()[0]
                        for mart in _MARTS
                    }
                except psycopg.Error as exc:
                    errors.append(repr(exc))
                else:
                    rounds.append(counts)
                stop.wait(0.01)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for _ in range(2):
            pipeline.sim.advance(hours=24)
            assert pipeline.sync(FIRST_DAY, LAST_DAY).success
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert rounds
    empty = [counts for counts in rounds if min(counts.values()) == 0]
    assert empty == []
    # The reader saw the data change underneath it (new sessions after the clock moved).
    assert len({counts["sessions"] for counts in rounds}) >= 2


@on_postgresql
@pytest.mark.parametrize("columns", ["same", "changed"])
def test_a_reader_of_two_marts_in_one_transaction_does_not_fail_the_build(
    pipeline: PgPipeline, columns: str
) -> None:
    """A dashboard reads ``marts.sessions`` and then ``marts.messages`` in one transaction
    (one statement joining both takes the same locks, one after the other) while the models
    are rebuilt in full: the reader may wait for the build to commit, but neither side fails.
    Rebuilt tables whose columns are the same get their rows in place; tables whose columns
    changed (here: a column added by hand, which the build drops) are replaced by DROP and
    RENAME, retried while the reader holds them. Before, every table was swapped one at a
    time, and the build deadlocked with this reader and was cancelled."""
    assert pipeline.sync().success
    if columns == "changed":
        with pipeline.connect() as conn:
            for mart in ("marts.messages", "marts.sessions"):
                conn.execute(f"alter table {mart} add column added_by_hand integer")
    order = [m.name for m in topological_order(discover()) if m.schema == "marts"]
    assert order.index("marts.messages") < order.index("marts.sessions")  # swapped first
    builder = PgWarehouse(pipeline.url)
    failures: list[BaseException] = []

    def build() -> None:
        try:
            builder.build_models(full_refresh=True)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    waiting = (
        "select count(*) from pg_stat_activity where application_name = 'robofy-etl'"
        " and wait_event_type = 'Lock' and wait_event = 'relation'"
    )
    thread = threading.Thread(target=build)
    try:
        with pipeline.connect() as monitor, pipeline.connect() as reader, reader.transaction():
            (sessions,) = reader.execute("select count(*) from marts.sessions").fetchone()
            thread.start()
            # Until the build waits for marts.sessions (or, if it need not, has ended).
            deadline = time.monotonic() + 30
            while (
                thread.is_alive()
                and monitor.execute(waiting).fetchone() != (1,)
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            (messages,) = reader.execute("select count(*) from marts.messages").fetchone()
    finally:
        thread.join()
        builder.dispose()
    assert failures == []
    assert sessions > 0
    assert messages > 0
    with pipeline.connect() as conn:
        added = conn.execute(
            "select count(*) from information_schema.columns where column_name = 'added_by_hand'"
        ).fetchone()
    assert added == (0,)
