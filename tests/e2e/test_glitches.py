"""Responses that look healthy but are incomplete or wrong never lose stored data.

Each test syncs the simulator cleanly, then serves one glitch through the simulator's corrupting
layer (``robofy_etl.simulator.glitches``): an empty or ``null`` list, a page without its next
token, an order outlier, a 404, 403 or 500 for one resource, a record without its id, repeated
messages, impossible timestamps. The glitched sync must keep what was stored, say what did not
load (exit status 3), and leave the rest loaded; a clean sync afterwards must bring the
warehouse back to the simulator's dataset exactly.

The glitches whose damage would be done by the warehouse's loads and ledger (a short listing, a
removal, a transcript that did not arrive whole, a lead missed by three scans) run again into
PostgreSQL (``both_backends``), whose loads and ``meta`` tables are its own code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from robofy_etl.cli import EXIT_INCOMPLETE, EXIT_OK, SyncOutcome
from robofy_etl.simulator.glitches import (
    GlitchRequest,
    edit_items,
    error_status,
    no_next_token,
    only,
)
from robofy_etl.warehouse import models
from tests.e2e.conftest import FIRST_DAY, LAST_DAY, Pipeline, both_backends
from tests.e2e.test_sync import _assert_matches_dataset

pytestmark = pytest.mark.slow

TRANSCRIPT_PAGE = 9  # the simulator's transcript page size


def _counts(pipeline: Pipeline) -> dict[str, int]:
    tables = ("inbox_sessions", "chat_messages", "leads", "message_stats")
    return {t: pipeline.query(f"select count(*) from raw.robofy__{t}")[0][0] for t in tables}


def _path_ends(*parts: str) -> Callable[[GlitchRequest], bool]:
    suffix = "/" + "/".join(parts)
    return lambda request: request.path.endswith(suffix)


def _incomplete(pipeline: Pipeline, outcome: SyncOutcome, *words: str) -> None:
    """The run finished, loaded the rest, built the models, and said what did not load."""
    assert outcome.success, outcome.errors
    assert outcome.exit_code == EXIT_INCOMPLETE
    text = "\n".join(outcome.problems)
    for word in words:
        assert word in text, text
    with dg.DagsterInstance.get() as instance:
        built = {
            event.dagster_event.asset_key.to_user_string()
            for event in instance.all_logs(
                outcome.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            if event.dagster_event and event.dagster_event.asset_key
        }
    assert {model.name.replace(".", "/") for model in models.discover()} <= built
    if pipeline.backend == "duckdb":  # PostgreSQL's readers query the marts themselves
        assert outcome.published, "the models were built but not published"


def _clean_sync_restores(pipeline: Pipeline) -> None:
    pipeline.sim.set_glitch(None)
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    assert outcome.exit_code == EXIT_OK, outcome.problems
    _assert_matches_dataset(pipeline)
    assert pipeline.query("select count(*) from meta.outstanding")[0][0] == 0


def _long_session(pipeline: Pipeline) -> tuple[str, str, int]:
    """A session whose transcript spans more than one page."""
    counts = Counter((m.chatbot_id, m.session_id) for m in pipeline.sim.dataset.messages)
    (chatbot_id, session_id), n = max(counts.items(), key=lambda kv: kv[1])
    assert n > TRANSCRIPT_PAGE
    return chatbot_id, session_id, n


# --------------------------------------------------------------------------- listings


_SHORT_LISTINGS = {
    "empty-list": edit_items("sessions", lambda _r, _items: []),
    "null-list": edit_items("sessions", lambda _r, _items: None),
    # A chatbot's sessions fit one page of the tiny dataset: a first page whose token went
    # missing looks like its first items and no token.
    "page-1-without-token": edit_items("sessions", lambda _r, items: items[:10]),
}


@pytest.mark.parametrize(
    ("pipeline", "glitch"),
    [
        *(pytest.param("duckdb", glitch, id=name) for name, glitch in _SHORT_LISTINGS.items()),
        # The partial listing: its sessions are replaced by key, the rest must stay.
        pytest.param(
            "postgresql",
            _SHORT_LISTINGS["page-1-without-token"],
            id="postgresql-page-1-without-token",
        ),
    ],
    indirect=["pipeline"],
)
def test_short_session_listing_deletes_nothing(pipeline: Pipeline, glitch: Any) -> None:
    assert pipeline.sync().success
    before = _counts(pipeline)
    pipeline.sim.set_glitch(glitch)
    outcome = pipeline.sync()
    _incomplete(pipeline, outcome, "listing was incomplete")
    assert _counts(pipeline) == before
    assert pipeline.query("select count(*) from meta.removed_rows")[0][0] == 0
    _clean_sync_restores(pipeline)


def test_order_outlier_does_not_stop_the_scan_early(pipeline: Pipeline) -> None:
    """An old ``last_message_time`` at the end of page 1 would stop a newest-first scan there."""
    assert pipeline.sync().success
    before = _counts(pipeline)
    old = (FIRST_DAY - timedelta(days=30)).isoformat() + "T00:00:00"

    def outlier(request: GlitchRequest, items: list[Any]) -> list[Any]:
        if request.first_page and items:
            items[-1]["last_message_time"] = old
        return items

    pipeline.sim.set_glitch(edit_items("sessions", outlier))
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    assert _counts(pipeline) == before
    assert pipeline.query("select count(*) from meta.removed_rows")[0][0] == 0
    _clean_sync_restores(pipeline)


@both_backends
def test_session_gone_from_the_api_is_removed_and_kept_in_meta(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """Evidence deletes: not listed, and its own transcript answers 404."""
    assert pipeline.sync().success
    victim = pipeline.sim.dataset.sessions[0]
    (n,) = pipeline.query(
        "select count(*) from raw.robofy__chat_messages where session_id = ?",
        [victim.session_id],
    )[0]
    assert n > 0

    def drop(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        return [i for i in items if i["session_id"] != victim.session_id]

    gone = _path_ends(victim.chatbot_id, victim.session_id)

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint == "transcript" and gone(request):
            return error_status("transcript", 404)(request, body)
        return edit_items("sessions", drop)(request, body)

    pipeline.sim.set_glitch(glitch)
    outcome = pipeline.sync()
    assert outcome.exit_code == EXIT_OK, outcome.problems
    assert (
        pipeline.query(
            "select count(*) from raw.robofy__inbox_sessions where session_id = ?",
            [victim.session_id],
        )[0][0]
        == 0
    )
    removed = dict(
        pipeline.query(
            "select stream, count(*) from meta.removed_rows"
            " where key like ? and reason like '%404%' group by stream",
            [f"%{victim.session_id}%"],
        )
    )
    assert removed == {"robofy__inbox_sessions": 1, "robofy__chat_messages": n}
    from robofy_etl.cli import main

    capsys.readouterr()
    assert main(["status"]) == 0
    assert "removed rows (recoverable from meta.removed_rows)" in capsys.readouterr().out


@pytest.mark.parametrize("stream", ["leads", "message_stats"])
def test_empty_leads_or_stats_delete_nothing(pipeline: Pipeline, stream: str) -> None:
    assert pipeline.sync().success
    before = _counts(pipeline)
    pipeline.sim.set_glitch(edit_items(stream, lambda _r, _items: []))
    outcome = pipeline.sync()
    _incomplete(pipeline, outcome, "stats" if stream == "message_stats" else "not listed")
    assert _counts(pipeline) == before
    _clean_sync_restores(pipeline)


@both_backends
def test_lead_is_removed_only_after_three_scans_miss_it(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    victim = pipeline.sim.dataset.leads[0].id
    pipeline.sim.set_glitch(
        edit_items("leads", lambda _r, items: [i for i in items if i["id"] != victim])
    )
    stored = "select count(*) from raw.robofy__leads where lead_id = ?"
    for _ in range(2):
        _incomplete(pipeline, pipeline.sync(), "not listed")
        assert pipeline.query(stored, [victim])[0][0] == 1
    assert pipeline.sync().exit_code == EXIT_OK  # the third miss is evidence enough
    assert pipeline.query(stored, [victim])[0][0] == 0
    assert pipeline.query("select count(*) from meta.removed_rows where key = ?", [victim]) == [
        (1,)
    ]
    _clean_sync_restores(pipeline)  # it comes back when the API lists it again


def test_project_without_id_deletes_nothing(pipeline: Pipeline) -> None:
    assert pipeline.sync().success

    def no_id(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        items[0].pop("id", None)
        return items

    pipeline.sim.set_glitch(edit_items("projects", no_id))
    outcome = pipeline.sync()
    _incomplete(pipeline, outcome, "still exist")
    assert pipeline.query("select count(*) from marts.projects where is_deleted") == [(0,)]
    assert pipeline.query("select count(*) from marts.chatbots where is_deleted") == [(0,)]
    _clean_sync_restores(pipeline)


# --------------------------------------------------------------------------- transcripts


@both_backends
def test_transcript_404_keeps_messages_and_is_retried(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conversation that continued: one 404 on its transcript used to delete its messages."""
    assert pipeline.sync().success
    sim = pipeline.sim
    before = {(s.chatbot_id, s.session_id): s.last_message_time for s in sim.dataset.sessions}
    sim.advance(hours=24)
    continued = next(
        s
        for s in sim.dataset.sessions
        if before.get((s.chatbot_id, s.session_id)) not in (None, s.last_message_time)
    )
    query = "select count(*) from raw.robofy__chat_messages where session_id = ?"
    (stored,) = pipeline.query(query, [continued.session_id])[0]
    last = LAST_DAY + timedelta(days=1)
    sim.set_glitch(
        error_status("transcript", 404, when=_path_ends(continued.chatbot_id, continued.session_id))
    )
    outcome = pipeline.sync(FIRST_DAY, last)
    _incomplete(pipeline, outcome, continued.session_id, "404")
    assert pipeline.query(query, [continued.session_id]) == [(stored,)]
    assert pipeline.query("select item from meta.outstanding") == [(continued.session_id,)]
    from robofy_etl.cli import main

    capsys.readouterr()
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "outstanding (did not arrive complete" in status
    assert continued.session_id in status

    sim.set_glitch(None)
    outcome = pipeline.sync(FIRST_DAY, last)
    assert outcome.exit_code == EXIT_OK, outcome.problems
    _assert_matches_dataset(pipeline, last)
    assert pipeline.query("select count(*) from meta.outstanding") == [(0,)]


@pytest.mark.parametrize(
    ("pipeline", "kind"),
    [
        ("duckdb", "page-without-token"),
        ("duckdb", "message-without-id"),
        # Its first page is stored and replaced by message key until the rest arrives.
        ("postgresql", "page-without-token"),
    ],
    indirect=["pipeline"],
)
def test_incomplete_transcript_is_outstanding_until_it_arrives(
    pipeline: Pipeline, kind: str
) -> None:
    chatbot_id, session_id, n = _long_session(pipeline)
    mine = _path_ends(chatbot_id, session_id)
    if kind == "page-without-token":
        glitch = no_next_token("transcript", when=lambda r: mine(r) and r.first_page)
    else:

        def no_id(_request: GlitchRequest, items: list[Any]) -> list[Any]:
            items[0].pop("id", None)
            return items

        glitch = edit_items("transcript", no_id, when=mine)
    pipeline.sim.set_glitch(glitch)
    _incomplete(pipeline, pipeline.sync(), session_id)
    assert pipeline.query("select item from meta.outstanding") == [(session_id,)]
    # A later run with the clean API fetches it again, though its watermark did not move.
    _clean_sync_restores(pipeline)
    assert pipeline.query(
        "select count(*) from raw.robofy__chat_messages where session_id = ?", [session_id]
    ) == [(n,)]


def test_one_failing_transcript_does_not_hold_back_the_account(pipeline: Pipeline) -> None:
    chatbot_id, session_id, _ = _long_session(pipeline)
    pipeline.sim.set_glitch(
        error_status("transcript", 500, when=_path_ends(chatbot_id, session_id))
    )
    outcome = pipeline.sync()
    _incomplete(pipeline, outcome, session_id, "500")
    expected = len(pipeline.sim.dataset.sessions)
    assert pipeline.query("select count(*) from marts.sessions") == [(expected,)]
    _clean_sync_restores(pipeline)


def test_forbidden_chatbot_is_skipped_and_not_blamed_on_the_key(pipeline: Pipeline) -> None:
    forbidden = pipeline.sim.dataset.chatbots[0].chatbot_id
    pipeline.sim.set_glitch(error_status("sessions", 403, when=_path_ends(forbidden)))
    outcome = pipeline.sync()
    _incomplete(pipeline, outcome, forbidden, "403")
    assert "ROBOFY_API_KEY" not in "\n".join(outcome.problems)
    others = {s.session_id for s in pipeline.sim.dataset.sessions if s.chatbot_id != forbidden}
    stored = {s for (s,) in pipeline.query("select session_id from marts.sessions")}
    assert stored == others
    assert pipeline.query(
        "select count(*) from meta.outstanding where chatbot_id = ? and item like 'sessions %'",
        [forbidden],
    ) == [(1,)]
    _clean_sync_restores(pipeline)


def test_messages_repeated_across_pages_keep_their_ordinals(pipeline: Pipeline) -> None:
    chatbot_id, session_id, _ = _long_session(pipeline)
    first_page: list[Any] = []

    def repeat(request: GlitchRequest, items: list[Any]) -> list[Any]:
        if request.first_page:
            first_page[:] = items
            return items
        return [*first_page[-2:], *items]  # page 2 starts with page 1's last two again

    pipeline.sim.set_glitch(
        edit_items("transcript", repeat, when=_path_ends(chatbot_id, session_id))
    )
    outcome = pipeline.sync()
    assert outcome.exit_code == EXIT_OK, outcome.problems
    _assert_matches_dataset(pipeline)  # ordinals included


def test_impossible_times_are_quarantined_or_nulled(pipeline: Pipeline) -> None:
    victim = pipeline.sim.dataset.sessions[0]

    def year_one(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        for item in items:
            if item["session_id"] == victim.session_id:
                item["created_on"] = "0001-01-01T00:00:00"
        return items

    def year_9999(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        items[0]["parts"][0]["data"]["time"] = "9999-12-31 23:59:59"
        return items

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint == "sessions":
            return edit_items("sessions", year_one)(request, body)
        return edit_items("transcript", year_9999)(request, body)

    pipeline.sim.set_glitch(glitch)
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    reasons = [r for (r,) in pipeline.query("select reason from meta.quarantine")]
    assert any("implausible 'created_on'" in r for r in reasons), reasons
    assert any("implausible message time" in r for r in reasons), reasons
    assert outcome.quarantined == len(reasons)  # the summary counts them
    assert outcome.exit_code == EXIT_INCOMPLETE  # those transcripts are retried
    assert pipeline.query(
        "select count(*) from marts.messages where sent_at > now() + interval 1 day"
        " or sent_at < '2015-01-01'"
    ) == [(0,)]
    _clean_sync_restores(pipeline)


def test_session_id_that_is_an_object_is_quarantined(pipeline: Pipeline) -> None:
    def object_id(_request: GlitchRequest, items: list[Any]) -> list[Any]:
        if items:
            items[0]["session_id"] = {"id": items[0]["session_id"]}
        return items

    pipeline.sim.set_glitch(only(1, edit_items("sessions", object_id)))
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    reasons = [r for (r,) in pipeline.query("select reason from meta.quarantine")]
    assert "missing or invalid session id ('session_id')" in reasons
    _clean_sync_restores(pipeline)


def test_refetch_repairs_a_transcript_whose_watermark_did_not_move(pipeline: Pipeline) -> None:
    from robofy_etl.cli import run_sync
    from robofy_etl.settings import Settings

    assert pipeline.sync().success
    _, session_id, n = _long_session(pipeline)
    with __import__("duckdb").connect(str(pipeline.db_path)) as conn:
        conn.execute(
            "delete from raw.robofy__chat_messages where session_id = ? and ordinal > 0",
            [session_id],
        )
    assert pipeline.sync().success  # nothing changed at the API: no repair
    query = "select count(*) from raw.robofy__chat_messages where session_id = ?"
    assert pipeline.query(query, [session_id]) == [(1,)]
    outcome = run_sync(Settings.from_env(), FIRST_DAY, LAST_DAY, refetch=True)
    assert outcome.exit_code == EXIT_OK, outcome.problems
    assert pipeline.query(query, [session_id]) == [(n,)]
    _assert_matches_dataset(pipeline)


def test_freshness_checks_pass_for_a_past_window(pipeline: Pipeline) -> None:
    """Syncing old days must not fail `*__loaded_recently` on every run."""
    outcome = pipeline.sync(FIRST_DAY, FIRST_DAY + timedelta(days=2))
    assert outcome.exit_code == EXIT_OK, (outcome.problems, outcome.failed_checks)
    fresh = {k: v for k, v in outcome.checks.items() if k.endswith("__loaded_recently")}
    assert fresh
    assert all(passed for passed, _ in fresh.values()), fresh


def test_a_ten_megabyte_message_loads_and_builds_under_the_default_memory_limit(
    pipeline: Pipeline,
) -> None:
    chatbot_id, session_id, _ = _long_session(pipeline)
    big = "x" * (10 * 1024 * 1024)

    def huge(request: GlitchRequest, items: list[Any]) -> list[Any]:
        if request.first_page:
            items[0]["parts"][0]["text"] = big
        return items

    pipeline.sim.set_glitch(edit_items("transcript", huge, when=_path_ends(chatbot_id, session_id)))
    outcome = pipeline.sync()
    assert outcome.exit_code == EXIT_OK, (outcome.errors, outcome.problems)
    assert pipeline.query(
        "select max(length(text)) from marts.messages where session_id = ?", [session_id]
    ) == [(len(big),)]


def test_a_damaged_warehouse_file_is_a_clear_error_before_any_request(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    from robofy_etl.cli import main

    pipeline.db_path.write_text("this is not a DuckDB file\n")
    pipeline.sim.clear_log()
    code = main(["sync", "--start", FIRST_DAY.isoformat(), "--end", LAST_DAY.isoformat()])
    assert code == 2
    err = capsys.readouterr().err
    assert "ROBOFY_DUCKDB_PATH" in err
    assert "Traceback" not in err
    assert pipeline.sim.request_log == []
