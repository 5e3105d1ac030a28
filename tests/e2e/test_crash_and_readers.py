"""Crash safety and readers: a killed sync loses nothing, and dashboards never see half a load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FIRST_DAY, LAST_DAY, Pipeline

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


def test_killed_sync_leaves_previous_state_and_next_run_completes(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    before = pipeline.snapshot(lineage=False)

    sim = pipeline.sim
    sim.advance(hours=24)
    sim.clear_log()
    sim.set_latency(40)
    process = _start_sync(pipeline)
    try:
        deadline = time.monotonic() + 60
        while not any(e.endpoint == "transcript" for e in sim.request_log):
            assert process.poll() is None, "the sync ended before it fetched any transcript"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    # Sessions and transcripts were being fetched: none of them was written.
    after_kill = pipeline.snapshot(lineage=False)
    for table in ("raw.robofy__inbox_sessions", "raw.robofy__chat_messages"):
        assert after_kill[table] == before[table], table

    sim.set_latency(0)
    outcome = pipeline.sync(FIRST_DAY, LAST_DAY)
    assert outcome.success, outcome.errors
    complete = pipeline.snapshot(lineage=False)
    assert complete["raw.robofy__inbox_sessions"] != before["raw.robofy__inbox_sessions"]
    # Every table the killed run touched holds either the previous or the complete state:
    # loads that had committed before the kill were whole, the rest were not started.
    for table, rows in after_kill.items():
        assert rows in (before[table], complete[table]), table
    (sessions,) = pipeline.query("select count(*) from marts.sessions")[0]
    assert sessions == len([s for s in sim.dataset.sessions if s.created_on.date() <= LAST_DAY])


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
