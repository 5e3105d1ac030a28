"""Conversations outside the window that still need a refresh: those that went on after their
start day, and transcripts an earlier run left outstanding."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from robofy_etl.api import RobofyClient, parse_timestamp
from robofy_etl.sync.failures import FailureBreaker, outstanding_note
from robofy_etl.sync.registry import SESSIONS
from robofy_etl.sync.report import Tracker, sum_counts
from robofy_etl.sync.rows import (
    MESSAGES_TABLE,
    SessionRow,
    as_str,
    digest,
    session_row,
    session_table,
    watermark,
)
from robofy_etl.sync.scan import Scan
from robofy_etl.sync.transcripts import Fetched, Task, classify
from robofy_etl.sync.window import Window
from robofy_etl.warehouse import Slice, WarehouseLike
from robofy_etl.warehouse.ledger import Outstanding

log = logging.getLogger(__name__)

SESSIONS_TABLE = SESSIONS.name
SESSION_KEY = ("chatbot_id", "session_id")
MESSAGE_KEY = ("chatbot_id", "session_id", "message_id")
REPLACED = "not in its session's transcript any more (a complete fetch)"


class _Candidate(NamedTuple):
    """A session that may need a refresh: its listing (None: known only as outstanding)."""

    project_id: int
    started_at: datetime | None
    record: dict[str, Any] | None


def refresh_continued(
    api: RobofyClient,
    wh: WarehouseLike,
    run_id: str,
    t: Tracker,
    scans: Sequence[Scan],
    pending: Mapping[tuple[str, str], Outstanding],
    in_window: set[tuple[str, str]],
    fetch: Callable[[Task], Fetched],
) -> int:
    """Refreshes stored sessions outside the window: continued ones, and outstanding transcripts.

    A conversation that continues on later days stays in its start day's partition, so a run
    for recent days must still update it there: its session row and transcript are replaced by
    key, in one transaction. A session whose listing changed without a new message (its status
    flipped to closed after the idle timeout) gets its row replaced and keeps its transcript,
    which is not fetched again. A transcript still outstanding from an earlier run (of any day)
    is fetched again. Only sessions already stored are touched (a day never synced is not
    created piecemeal); an incomplete transcript leaves the stored row and messages as they
    are. Returns how many sessions were refreshed.
    """
    candidates: dict[tuple[str, str], _Candidate] = {}
    for scan in scans:
        for began, listing in scan.continued:
            session_id = as_str(listing.get("session_id"))
            if session_id is not None:
                candidates[(scan.chatbot_id, session_id)] = _Candidate(
                    scan.project_id, began, listing
                )
    projects = {s.chatbot_id: s.project_id for s in scans}
    for key in pending:
        if key[0] in projects and key not in in_window and key not in candidates:
            candidates[key] = _Candidate(projects[key[0]], None, None)
    if not candidates:
        return 0
    days = [
        c.started_at.date()
        if c.started_at
        else date.fromisoformat(pending[key].slice or "2015-01-01")
        for key, c in candidates.items()
    ]
    stored = wh.stored_sessions(
        sorted({c for c, _ in candidates}), min(days), max(days) + timedelta(days=1)
    )
    tasks: list[Task] = []
    session_rows: list[SessionRow] = []
    row_keys: list[tuple[str, str]] = []
    forgotten: list[tuple[str, str]] = []
    for key, c in candidates.items():
        previous = stored.get(key)
        if previous is None:
            if c.record is None:
                forgotten.append(key)  # outstanding, but its session is no longer stored
            continue
        if c.record is None or previous.watermark != watermark(c.record) or key in pending:
            tasks.append(Task(key[0], key[1], c.project_id, previous.day))
        elif c.started_at is not None:
            row = session_row(t, key[0], key[1], c.project_id, c.started_at, c.record)
            if digest(row.payload) != previous.digest:  # the listing changed, not the transcript
                session_rows.append(row)
                row_keys.append(key)
    message_rows: list[dict[str, Any]] = []
    partial_rows: list[dict[str, Any]] = []
    transcript_keys: list[tuple[str, str]] = []
    incomplete: list[tuple[str, str, str, str]] = []
    breaker = FailureBreaker()
    for task, result in api.fan_out(tasks, fetch):
        breaker.see(result)
        key = task.key
        c = candidates[key]
        expected = (
            t.ts(c.record.get("last_message_time"))
            if c.record is not None
            else parse_timestamp(stored[key].watermark or "", naive_tz=t.naive_tz)
        )
        attempts = pending[key].attempts if key in pending else 0
        got = classify(t, task, result, expected, attempts)
        if got.problem:
            incomplete.append((task.chatbot_id, task.session_id, task.day, got.problem))
            partial_rows.extend(got.rows)
            continue
        transcript_keys.append(key)
        if c.record is not None and c.started_at is not None:
            session_rows.append(
                session_row(
                    t, task.chatbot_id, task.session_id, task.project_id, c.started_at, c.record
                )
            )
            row_keys.append(key)
        message_rows.extend(got.rows)
    if not (row_keys or transcript_keys or incomplete or forgotten):
        return 0
    # The days these sessions live in: a range on _slice lets the loads skip the rest of history.
    days_of = [date.fromisoformat(stored[key].day) for key in row_keys + transcript_keys]
    days_of += [date.fromisoformat(day) for _, _, day, _ in incomplete]
    span = Window(min(days_of), max(days_of) + timedelta(days=1)) if days_of else None
    bounds: dict[str, Any] = {"day_from": span.start, "day_to": span.end} if span else {}
    with wh.transaction(run_id=run_id) as tx:
        s_counts = tx.replace(
            SESSIONS_TABLE,
            session_table(session_rows),
            slice=Slice(keys=(SESSION_KEY, row_keys), **bounds),
        )
        tx.audit(SESSIONS_TABLE, slice=f"{len(row_keys)} continued sessions", counts=s_counts)
        m_counts = sum_counts(
            [
                tx.replace(
                    MESSAGES_TABLE, rows, Slice(keys=keys, **bounds), removal_reason=REPLACED
                )
                for rows, keys in (
                    (message_rows, (SESSION_KEY, transcript_keys)),
                    (
                        partial_rows,
                        (
                            MESSAGE_KEY,
                            [
                                (r["chatbot_id"], r["session_id"], r["message_id"])
                                for r in partial_rows
                            ],
                        ),
                    ),
                )
            ]
        )
        if transcript_keys or partial_rows:
            label = f"{len(transcript_keys)} continued or outstanding sessions"
            tx.audit(MESSAGES_TABLE, slice=label, counts=m_counts)
            t.report.add_counts(MESSAGES_TABLE, m_counts)
        tx.clear_outstanding(MESSAGES_TABLE, transcript_keys + forgotten)
        tx.mark_outstanding(MESSAGES_TABLE, incomplete)
    t.report.add_counts(SESSIONS_TABLE, s_counts)
    if incomplete:
        t.problem(
            MESSAGES_TABLE,
            outstanding_note("transcripts", [(c, s, r) for c, s, _, r in incomplete]),
        )
    log.info(
        "refreshed %d conversations that started before %s or were outstanding (%d with new "
        "messages)",
        len(set(row_keys) | set(transcript_keys)),
        t.report.window,
        len(transcript_keys),
    )
    return len(set(row_keys) | set(transcript_keys))
