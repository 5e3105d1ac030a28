"""The whole pipeline against the simulator: exact data, idempotence, incremental cost, faults.

Each test is one or more real Dagster runs (every asset, a range of days, one run) writing a real
DuckDB file from the simulator over loopback HTTP; the simulator's dataset is the ground truth.
The tests marked ``both_backends`` run again into a PostgreSQL database.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote

import dagster as dg
import duckdb
import pytest

from robofy_etl.cli.sync import print_sync_summary
from robofy_etl.settings import Settings
from robofy_etl.simulator import Faults, Variants
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, Pipeline, both_backends

pytestmark = pytest.mark.slow


def _expected_sessions(pipeline: Pipeline) -> set[tuple]:
    ds = pipeline.sim.dataset
    counts = Counter((m.chatbot_id, m.session_id) for m in ds.messages)
    return {
        (
            s.chatbot_id,
            s.session_id,
            s.project_id,
            s.platform,
            s.status,
            s.created_on,
            s.last_message_time,
            counts[(s.chatbot_id, s.session_id)],
        )
        for s in ds.sessions
    }


def _mart_sessions(pipeline: Pipeline) -> set[tuple]:
    return set(
        pipeline.query(
            "select chatbot_id, session_id, project_id, platform, status, started_at,"
            " last_message_at, message_count from marts.sessions"
        )
    )


def _assert_matches_dataset(pipeline: Pipeline, last: date = LAST_DAY) -> None:
    ds = pipeline.sim.dataset
    assert _mart_sessions(pipeline) == _expected_sessions(pipeline)

    messages = {
        (m.chatbot_id, m.session_id, m.id, m.ordinal, m.role, m.sent_at) for m in ds.messages
    }
    assert (
        set(
            pipeline.query(
                "select chatbot_id, session_id, message_id, ordinal, role, sent_at"
                " from marts.messages"
            )
        )
        == messages
    )
    assert pipeline.query("select count(*) from marts.messages")[0][0] == len(ds.messages)

    leads = {(lead.id, lead.chatbot_id, lead.session_id, lead.created_at) for lead in ds.leads}
    assert (
        set(pipeline.query("select lead_id, chatbot_id, session_id, created_at from marts.leads"))
        == leads
    )
    emails = {
        lead.id: field["field_value"].strip().lower()
        for lead in ds.leads
        for field in lead.lead_data
        if field["field_name"] == "email"
    }
    assert emails
    got = dict(pipeline.query("select lead_id, email from marts.leads where email is not null"))
    assert got == emails

    stats = {
        (
            st.chatbot_id,
            st.date,
            st.total_messages,
            st.user_messages,
            st.ai_messages,
            st.sessions,
            st.leads,
            st.failed_messages,
        )
        for st in ds.stats
        if FIRST_DAY <= st.date <= last
    }
    assert (
        set(
            pipeline.query(
                "select chatbot_id, stat_date, total_messages, user_messages, ai_messages,"
                " sessions, leads, failed_messages from marts.message_stats_daily"
            )
        )
        == stats
    )
    assert set(pipeline.query("select project_id from marts.projects")) == {
        (p.id,) for p in ds.projects
    }
    assert set(pipeline.query("select chatbot_id, project_id from marts.chatbots")) == {
        (c.chatbot_id, c.project_id) for c in ds.chatbots
    }


def test_full_sync_equals_the_simulator_dataset(pipeline: Pipeline) -> None:
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    _assert_matches_dataset(pipeline)
    assert pipeline.query("select count(*) from meta.quarantine")[0][0] == 0
    # Secrets served inside chatbot objects never reach the warehouse.
    payloads = pipeline.query("select _payload::varchar from raw.robofy__chatbots")
    assert payloads
    assert all("llm_api_key" not in p for (p,) in payloads)


def test_a_sync_nobody_keeps_runs_unpartitioned_and_loads_the_same(pipeline: Pipeline) -> None:
    """With DAGSTER_HOME the run records every day it synced (partitions); without it the run
    is thrown away at exit, so the same sync runs unpartitioned: same tables, same summary."""
    kept = pipeline.sync()
    assert kept.success, kept.errors
    days = {(FIRST_DAY + timedelta(days=n)).isoformat() for n in range(8)}
    with dg.DagsterInstance.get() as instance:
        for table in ("robofy__inbox_sessions", "robofy__chat_messages", "robofy__leads"):
            key = dg.AssetKey(["raw", table])
            assert instance.get_materialized_partitions(key) == days, table
    tables = pipeline.snapshot(lineage=False)

    pipeline.new_warehouse()
    pipeline.env.delenv("DAGSTER_HOME")
    thrown = pipeline.sync()
    assert thrown.success, thrown.errors
    assert pipeline.snapshot(lineage=False) == tables
    assert thrown.raw_rows == kept.raw_rows
    assert thrown.checks == kept.checks
    assert (thrown.api["requests"], thrown.problems) == (kept.api["requests"], kept.problems)
    # The same steps, in the same order, each timed by Dagster, within the run's own time.
    assert [step for step, _ in thrown.steps] == [step for step, _ in kept.steps]
    assert {step for step, _ in kept.steps} >= {"robofy__daily_streams", "sql_models"}
    for outcome in (kept, thrown):
        assert all(seconds > 0 for _, seconds in outcome.steps), outcome.steps
        assert sum(seconds for _, seconds in outcome.steps) <= outcome.seconds


def test_the_summary_says_how_long_each_step_took(pipeline: Pipeline) -> None:
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    out = io.StringIO()
    print_sync_summary(outcome, Settings.from_env(), out)
    line = next(line for line in out.getvalue().splitlines() if line.startswith("Steps: "))
    timed = dict(re.findall(r"(\w+) (\d+\.\d)s", line))
    assert list(timed) == [step for step, _ in outcome.steps]
    assert float(timed["robofy__daily_streams"]) == round(
        dict(outcome.steps)["robofy__daily_streams"], 1
    )


def test_second_sync_changes_nothing(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    before = pipeline.snapshot()
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    assert pipeline.snapshot() == before
    for table, counts in outcome.raw_rows.items():
        assert (counts["inserted"], counts["updated"], counts["deleted"]) == (0, 0, 0), table
    # Nothing changed, so no transcript was fetched again.
    assert outcome.api["requests"] > 0


def test_rematerializing_one_partition_changes_nothing(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    before = pipeline.snapshot()
    day = FIRST_DAY + timedelta(days=3)
    assert pipeline.sync(day, day).success
    assert pipeline.snapshot() == before


def test_incremental_run_fetches_only_changed_transcripts(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    sim = pipeline.sim
    before = {(s.chatbot_id, s.session_id): s.last_message_time for s in sim.dataset.sessions}
    sim.advance(hours=24)
    after = {(s.chatbot_id, s.session_id): s.last_message_time for s in sim.dataset.sessions}
    changed = {key for key, lmt in after.items() if before.get(key) != lmt}
    assert changed, "the simulator's clock moved but nothing changed"
    assert len(changed) < len(after)

    sim.clear_log()
    last = LAST_DAY + timedelta(days=1)
    outcome = pipeline.sync(FIRST_DAY, last)
    assert outcome.success, outcome.errors
    fetched = {
        tuple(entry.path.rsplit("/", 2)[-2:])
        for entry in sim.request_log
        if entry.endpoint == "transcript" and "nextPageToken" not in entry.query
    }
    assert {(unquote(c), unquote(s)) for c, s in fetched} == changed
    _assert_matches_dataset(pipeline, last)


def test_backfill_of_many_days_is_one_run_and_one_scan_per_chatbot(pipeline: Pipeline) -> None:
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert len(runs) == 1
    first_pages = Counter(
        entry.path
        for entry in pipeline.sim.request_log
        if entry.endpoint == "sessions" and "nextPageToken" not in entry.query
    )
    assert len(first_pages) == len(pipeline.sim.dataset.chatbots)
    assert set(first_pages.values()) == {1}


def test_a_long_backfill_runs_in_passes_with_the_same_result(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past BACKFILL_PASS_DAYS the window is synced in passes (memory stays per pass)."""
    from robofy_etl.sync import conversations

    monkeypatch.setattr(conversations, "BACKFILL_PASS_DAYS", 3)  # 8 days: passes of 3, 3 and 2
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    _assert_matches_dataset(pipeline)
    log = pipeline.sim.request_log
    first_list_pages = Counter(
        entry.path
        for entry in log
        if entry.endpoint == "sessions" and "nextPageToken" not in entry.query
    )
    assert set(first_list_pages.values()) == {3}  # one list scan per chatbot and pass
    first_transcript_pages = Counter(
        entry.path
        for entry in log
        if entry.endpoint == "transcript" and "nextPageToken" not in entry.query
    )
    assert len(first_transcript_pages) == len(pipeline.sim.dataset.sessions)
    assert set(first_transcript_pages.values()) == {1}  # every transcript fetched once
    assert outcome.raw_rows["robofy__inbox_sessions"]["inserted"] == len(
        pipeline.sim.dataset.sessions
    )
    # A second run over the same range, in passes too, changes nothing.
    before = pipeline.snapshot()
    assert pipeline.sync().success
    assert pipeline.snapshot() == before


@both_backends
def test_faults_do_not_change_the_tables(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pipeline.sync().success
    clean = pipeline.snapshot(lineage=False)

    pipeline.new_warehouse()
    monkeypatch.setenv("ROBOFY_TIMEOUT_S", "0.5")
    monkeypatch.setenv("ROBOFY_MAX_ATTEMPTS", "8")
    pipeline.sim.clear_log()
    pipeline.sim.set_faults(
        Faults(
            rate_429=0.08,
            retry_after_s=0.02,
            rate_5xx=0.08,
            rate_reset=0.05,
            rate_slow=0.03,
            slow_s=1.0,
            rate_malformed=0.05,
            seed=3,
        )
    )
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    faults = Counter(e.fault for e in pipeline.sim.request_log if e.fault)
    assert len(faults) >= 4, faults  # most fault kinds really happened
    assert outcome.api["retries"] >= sum(faults.values()) - 1
    assert pipeline.snapshot(lineage=False) == clean


def test_wrong_api_key_fails_fast_naming_the_variable(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "wrong-key-5f9c1e"
    monkeypatch.setenv("ROBOFY_API_KEY", secret)
    outcome = pipeline.sync()
    assert not outcome.success
    text = "\n".join(outcome.errors)
    assert "ROBOFY_API_KEY" in text
    assert secret not in text
    statuses = [e.status for e in pipeline.sim.request_log]
    assert statuses == [401]  # no retries of an auth failure, nothing after it
    with dg.DagsterInstance.get() as instance:
        logs = instance.all_logs(outcome.run_id)
    assert logs
    assert all(secret not in (record.user_message or "") for record in logs)
    assert all(secret not in str(record.dagster_event) for record in logs)


@both_backends
def test_schema_drift_is_recorded_and_kept_in_payload(pipeline: Pipeline) -> None:
    pipeline.sim.set_faults(
        Faults(
            drift_added={"sessions": "sentiment_score"},
            drift_renamed={"sessions": ("user_profile_name", "visitor_display_name")},
        )
    )
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    drift = set(pipeline.query("select stream, field_name, change from meta.schema_drift"))
    assert ("robofy__inbox_sessions", "sentiment_score", "added") in drift
    assert ("robofy__inbox_sessions", "visitor_display_name", "added") in drift
    assert ("robofy__inbox_sessions", "user_profile_name", "missing") in drift
    payloads = [
        json.loads(str(payload))
        for (payload,) in pipeline.query("select _payload::varchar from raw.robofy__inbox_sessions")
    ]
    with_field = [p for p in payloads if {"sentiment_score", "visitor_display_name"} <= p.keys()]
    assert len(with_field) == len(payloads) == len(pipeline.sim.dataset.sessions)
    # The load itself is complete.
    assert len(_mart_sessions(pipeline)) == len(pipeline.sim.dataset.sessions)


def test_asset_checks_pass_and_documented_queries_run_on_synced_data(pipeline: Pipeline) -> None:
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    assert len(outcome.checks) >= 20
    errors = [
        name
        for name, (passed, severity) in outcome.checks.items()
        if not passed and severity == "ERROR"
    ]
    assert errors == []
    queries = re.findall(
        r"```sql\n(.*?)```",
        (Path(__file__).parents[2] / "docs" / "queries.md").read_text(),
        re.DOTALL,
    )
    assert len(queries) >= 10
    with duckdb.connect(str(pipeline.reader_path), read_only=True) as conn:
        returned = [len(conn.execute(sql).fetchall()) for sql in queries]
    assert sum(1 for n in returned if n > 0) >= 8, returned


VARIANTS = {
    "camel-top-level-absent-token": (
        Variants(
            envelope="top.collection",
            keys="camel",
            timestamps="iso_z",
            chatbot_id_key="id",
            visitor_key="visitor_name",
            token_location="top",
            last_token="absent",
        ),
        {},
    ),
    "array-offsets-shuffled-api-key": (
        Variants(
            envelope="data.array",
            timestamps="iso_offset",
            last_token="empty",
            session_order="shuffled",
            role_style="mixed",
            auth_header="api-key",
            stats_params=("pid", "cid", "from", "to"),
        ),
        {"ROBOFY_AUTH_HEADER": "api-key", "ROBOFY_STATS_PARAMS": "pid,cid,from,to"},
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_sync_is_exact_under_api_variants(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    variants, env = VARIANTS[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pipeline.sim.set_variants(variants)
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    _assert_matches_dataset(pipeline)
    assert pipeline.query("select count(*) from meta.quarantine")[0][0] == 0
    assert outcome.raw_rows["robofy__inbox_sessions"]["in_slice"] == len(
        pipeline.sim.dataset.sessions
    )


def test_vanished_chatbot_is_marked_deleted_and_its_history_kept(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    gone = pipeline.sim.dataset.chatbots[0].chatbot_id
    (sessions_before,) = pipeline.query(
        "select count(*) from marts.sessions where chatbot_id = ?", [gone]
    )[0]
    assert sessions_before > 0
    pipeline.sim.delete_chatbot(gone)
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    assert outcome.raw_rows["robofy__chatbots"]["deleted"] == 1
    deleted = dict(pipeline.query("select chatbot_id, is_deleted from marts.chatbots"))
    assert deleted[gone] is True
    assert not any(v for k, v in deleted.items() if k != gone)
    (sessions_after,) = pipeline.query(
        "select count(*) from marts.sessions where chatbot_id = ?", [gone]
    )[0]
    assert sessions_after == sessions_before


def test_status_and_probe_commands(pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    from robofy_etl.cli import main

    assert main(["status"]) == 2  # nothing synced yet: a clear error, not a traceback
    assert "run `robofy-etl sync` first" in capsys.readouterr().err
    assert pipeline.sync().success
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "robofy__inbox_sessions" in out
    assert "quarantined records: none" in out
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    assert "data.sessions" in out
    assert pipeline.sim.api_key not in out


def test_recent_days_run_refreshes_conversations_that_started_earlier(pipeline: Pipeline) -> None:
    """The hourly schedule syncs today and yesterday; older conversations still continue.

    Some of them get new messages; others only change status (closed after the idle timeout,
    with no new message): their rows are updated and their transcripts are not fetched again.
    """
    assert pipeline.sync().success
    sim = pipeline.sim
    before = {(s.chatbot_id, s.session_id): s for s in sim.dataset.sessions}
    sim.advance(hours=24)
    sim.clear_log()
    new_last = LAST_DAY + timedelta(days=1)
    first = new_last - timedelta(days=1)
    older = [
        s
        for s in sim.dataset.sessions
        if (s.chatbot_id, s.session_id) in before and s.created_on.date() < first
    ]
    continued = [
        s
        for s in older
        if s.last_message_time != before[(s.chatbot_id, s.session_id)].last_message_time
    ]
    flipped = [
        s
        for s in older
        if s.last_message_time == before[(s.chatbot_id, s.session_id)].last_message_time
        and s.status != before[(s.chatbot_id, s.session_id)].status
    ]
    assert continued, "the simulator's clock moved but no older conversation continued"
    assert flipped, "no older conversation closed without a new message"
    outcome = pipeline.sync(first, new_last)
    assert outcome.success, outcome.errors
    # Every conversation's activity, status and transcript is current ...
    assert _mart_sessions(pipeline) == _expected_sessions(pipeline)
    # ... and the transcripts of the conversations that only closed were not fetched again.
    fetched = {e.path for e in sim.request_log if "/inbox/chats/" in e.path}
    for s in flipped:
        assert not any(path.endswith(f"/{s.chatbot_id}/{s.session_id}") for path in fetched)
    for s in continued:
        assert any(f"/{s.chatbot_id}/{s.session_id}" in path for path in fetched)
