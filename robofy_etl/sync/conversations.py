"""Inbox sessions and their transcripts, written together one run of whole days at a time.

Sessions land in daily slices by the UTC day they started. The list is scanned newest activity
first (``scan``); transcripts are fetched only for sessions that are new or whose
``last_message_time`` changed, and land in the session's start-day slice. Nothing stored is
deleted on a short response (``confirm``), and what did not arrive complete is retried by every
later run (``meta.outstanding``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from robofy_etl.api import RobofyClient
from robofy_etl.sync.confirm import confirm_gone
from robofy_etl.sync.continued import (
    MESSAGE_KEY,
    REPLACED,
    SESSION_KEY,
    SESSIONS_TABLE,
    refresh_continued,
)
from robofy_etl.sync.failures import FailureBreaker, outstanding_note
from robofy_etl.sync.prefetch import Prefetch
from robofy_etl.sync.registry import MESSAGES, SESSIONS, syncs
from robofy_etl.sync.report import SyncReport, Tracker, combined, sum_counts
from robofy_etl.sync.rows import (
    MESSAGES_TABLE,
    SessionRow,
    as_str,
    day_of,
    session_row,
    session_table,
    watermark,
)
from robofy_etl.sync.scan import Scan, finish_listing, list_each
from robofy_etl.sync.transcripts import Fetched, Task, Transcript, classify, fetcher
from robofy_etl.sync.window import Window
from robofy_etl.sync.write import by_chatbot, list_ledger, window_scope
from robofy_etl.sync.writer import OrderedWriter
from robofy_etl.warehouse import LoadCounts, Slice, WarehouseLike
from robofy_etl.warehouse.reads import Chatbot

log = logging.getLogger(__name__)

# Changed sessions whose transcripts are held in memory before they are written. Bounds memory
# on long backfills; each chunk is one transaction that covers whole days.
TRANSCRIPT_CHUNK = 1500
# The longest window whose session listing is held in memory at once: longer windows (long
# backfills) are synced in passes of this many days (see sync_conversations). A 90-day backfill
# is still one pass, with one list scan per chatbot.
BACKFILL_PASS_DAYS = 92
# How often a long transcript fan-out logs its progress.
PROGRESS_EVERY_S = 5.0

_GONE = "session removed from Robofy: no longer listed, and its transcript answers 404"


@syncs(SESSIONS, MESSAGES)
def sync_conversations(
    api: RobofyClient,
    wh: WarehouseLike,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
    full_scan: bool = False,
    chunk_sessions: int = TRANSCRIPT_CHUNK,
    pass_days: int | None = None,
    refetch: bool = False,
) -> SyncReport:
    """Inbox sessions started in ``window`` and their transcripts (new or changed sessions only).

    Writes ``raw.robofy__inbox_sessions`` and ``raw.robofy__chat_messages`` together, one
    transaction per run of whole days, so a session and its messages are never out of step.

    Nothing stored is deleted because a response came back short. A stored session missing
    from the listing is removed only when its own transcript answers 404; if it still exists,
    the listing was incomplete, so the run keeps every stored row of that chatbot and reports
    it. A transcript that does not arrive complete (404, an error on every attempt, a page cut
    short, a malformed message) never replaces the stored one and is retried by every run until
    it does (``meta.outstanding``). ``refetch`` fetches every transcript of the window again.

    A window longer than ``pass_days`` (default ``BACKFILL_PASS_DAYS``) is synced in passes of
    that many days, oldest first, each with its own list scan: the sessions listed for a pass
    are held in memory until their days are written, so a multi-year backfill needs no more
    memory than a quarter. Each later pass pages through the newer sessions again (list pages
    only, a small share of the requests; transcripts are fetched once).
    """
    passes = window.split(pass_days or BACKFILL_PASS_DAYS)
    options = (naive_tz, full_scan, chunk_sessions, refetch)
    if len(passes) == 1:
        return _sync_pass(api, wh, run_id, window, *options)
    log.info(
        "%s spans %d days: syncing it in %d passes, oldest first",
        window,
        (window.end - window.start).days,
        len(passes),
    )
    reports = [_sync_pass(api, wh, run_id, part, *options) for part in passes]
    return combined(window, reports)


def chunks_of_days(
    window: Window, changed_by_day: Mapping[str, Sequence[object]], limit: int
) -> Iterator[list[str]]:
    """Splits the window into runs of whole days holding at most ``limit`` changed sessions.

    Every day of the window is in exactly one chunk (empty days too: their removed sessions
    must still be deleted). A single day above the limit is a chunk of its own.
    """
    chunk: list[str] = []
    size = 0
    for day in (d.isoformat() for d in window.days()):
        n = len(changed_by_day.get(day, ()))
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(day)
        size += n
    if chunk:
        yield chunk


def _sync_pass(
    api: RobofyClient,
    wh: WarehouseLike,
    run_id: str,
    window: Window,
    naive_tz: str,
    full_scan: bool,
    chunk_sessions: int,
    refetch: bool,
) -> SyncReport:
    """`sync_conversations` for a window synced in one pass."""
    t = Tracker(
        api,
        "conversations",
        str(window),
        naive_tz,
        (SESSIONS.endpoint.name, MESSAGES.endpoint.name),
    )
    with wh.hold():
        chatbots = wh.active_chatbots()
        stored = wh.stored_sessions([c for c, _ in chatbots], window.start, window.end)
        pending = {(o.chatbot_id, o.item): o for o in wh.outstanding(MESSAGES_TABLE)}

    stored_keys = by_chatbot(stored)
    fetch = fetcher(api)

    # Session rows, by start day; transcripts needed for new or changed sessions. A listed
    # session is held as a compact row with its payload already serialized (far smaller than
    # the record dict; large peak RSS 516 -> 496 MB) until its days are written.
    by_day: dict[str, list[SessionRow]] = {}
    changed_by_day: dict[str, list[Task]] = {}
    expected_last: dict[tuple[str, str], datetime | None] = {}
    listed: set[tuple[str, str]] = set()
    # Stored sessions of each listed chatbot that its listing did not show.
    missing: dict[Chatbot, list[str]] = {}

    def take(scan: Scan) -> list[Task]:
        """One chatbot's listed sessions as rows; returns its new or changed transcripts."""
        missing[scan.chatbot] = sorted(
            stored_keys.get(scan.chatbot_id, set()) - scan.keys(SESSIONS.record_key)
        )
        changed: list[Task] = []
        for started_at, record in scan.records:
            session_id = as_str(record.get("session_id"))
            if session_id is None:
                t.reject(
                    SESSIONS_TABLE,
                    "missing or invalid session id ('session_id')",
                    {**record, "chatbot_id": scan.chatbot_id},
                )
                continue
            key = (scan.chatbot_id, session_id)
            if key in listed:
                continue  # the same session listed twice: the first (newest) copy wins
            listed.add(key)
            day = day_of(started_at)
            row = session_row(t, scan.chatbot_id, session_id, scan.project_id, started_at, record)
            by_day.setdefault(day, []).append(row)
            previous = stored.get(key)
            if (
                refetch
                or previous is None
                or previous.watermark != watermark(record)
                or previous.day != day
                or key in pending
            ):
                task = Task(scan.chatbot_id, session_id, scan.project_id, day)
                changed_by_day.setdefault(day, []).append(task)
                changed.append(task)
                expected_last[key] = row.last_message_at
        scan.records = []  # held as rows now
        return changed

    def write(n: int, results: list[tuple[Task, Transcript]]) -> None:
        """One transaction for chunk ``n``: its days' sessions and their changed transcripts.

        Called by the writer below, once the listings are in (``chunks`` and the rest are set).
        """
        days = chunks[n]
        part = Window(date.fromisoformat(days[0]), date.fromisoformat(days[-1]) + timedelta(days=1))
        last = n == len(chunks) - 1
        # An incomplete transcript leaves its stored session row (and so its watermark) as it was.
        keep = {task.key for task, got in results if got.problem and task.key in stored}
        session_rows = [row for d in days for row in by_day.get(d, []) if row.key not in keep]
        gone_keys = [key for d in days for key in gone_by_day.get(d, [])]
        complete = [(task, got) for task, got in results if got.problem is None]
        partial = [got for _, got in results if got.problem is not None and not got.failed]
        # The days the replaced keys live in (a session whose start day moved lives in two):
        # a range on _slice lets the load skip the rest of history.
        days_of = [part.start, part.last] + [
            date.fromisoformat(stored[task.key].day) for task, _ in results if task.key in stored
        ]
        span = Window(min(days_of), max(days_of) + timedelta(days=1))
        with wh.transaction(run_id=run_id) as tx:

            def replace(
                table: str, rows: Any, keys: tuple[tuple[str, ...], list[Any]], why: str
            ) -> LoadCounts:
                return tx.replace(
                    table,
                    rows,
                    Slice(day_from=span.start, day_to=span.end, keys=keys),
                    removal_reason=why,
                )

            s_counts = replace(
                SESSIONS_TABLE,
                session_table(session_rows),
                (SESSION_KEY, [row.key for row in session_rows] + gone_keys),
                _GONE,
            )
            m_counts = [
                replace(MESSAGES_TABLE, [], (SESSION_KEY, gone_keys), _GONE),
                replace(
                    MESSAGES_TABLE,
                    [row for _, got in complete for row in got.rows],
                    (SESSION_KEY, [task.key for task, _ in complete]),
                    REPLACED,
                ),
                replace(
                    MESSAGES_TABLE,
                    rows := [row for got in partial for row in got.rows],
                    (
                        MESSAGE_KEY,
                        [(r["chatbot_id"], r["session_id"], r["message_id"]) for r in rows],
                    ),
                    REPLACED,
                ),
            ]
            tx.clear_outstanding(MESSAGES_TABLE, [task.key for task, _ in complete] + gone_keys)
            tx.mark_outstanding(
                MESSAGES_TABLE,
                [(*task.key, task.day, got.problem) for task, got in results if got.problem],
            )
            requests = t.api_delta()["requests"]
            messages = sum_counts(m_counts)
            tx.audit(SESSIONS_TABLE, slice=str(part), counts=s_counts, api_requests=requests)
            tx.audit(MESSAGES_TABLE, slice=str(part), counts=messages, api_requests=None)
            if last:  # by now every record has been seen: drift, quarantine and scan state
                for table in (SESSIONS_TABLE, MESSAGES_TABLE):
                    t.report.rows[table] = tx.count(table, window_scope(window, chatbots))
                t.write_extras(tx, SESSIONS_TABLE, str(window))
                t.write_extras(tx, MESSAGES_TABLE, str(window))
                list_ledger(tx, SESSIONS_TABLE, SESSIONS.endpoint.name, window, scans)
                for scan in usable:
                    tx.set_state(
                        "sessions",
                        scope=f"chatbot:{scan.chatbot_id}",
                        value={
                            "window": str(window),
                            "pages": scan.pages,
                            "newest_first": scan.ordered,
                            "stopped_early": scan.stopped_early,
                        },
                    )
        t.report.add_counts(SESSIONS_TABLE, s_counts)
        t.report.add_counts(MESSAGES_TABLE, messages)

    # A chatbot's transcripts start as soon as its listing is done, up to one chunk's worth while
    # other listings are still running; the rest follow in day order (below), so the writer can
    # write the oldest days while the newer ones are fetched.
    with Prefetch[Task, Fetched](api, fetch) as prefetch:
        budget = chunk_sessions
        listings = []
        for one in list_each(api, t, SESSIONS, window, chatbots, stored_keys, full_scan=full_scan):
            listings.append(one)
            if one.scan.usable:  # a chatbot gone (404), or whose scan failed, keeps its data
                early = take(one.scan)[: max(budget, 0)]
                prefetch.put(early)
                budget -= len(early)
        scans = finish_listing(t, SESSIONS, window, listings)
        # In chatbot order, as the listings are reported (they arrived in any order).
        for rows in by_day.values():
            rows.sort(key=lambda row: row.chatbot_id)
        for tasks in changed_by_day.values():
            tasks.sort(key=lambda task: task.chatbot_id)
        usable = [s for s in scans if s.usable]
        chatbots = [s.chatbot for s in usable]
        chatbot_ids = {c for c, _ in chatbots}
        stored = {key: value for key, value in stored.items() if key[0] in chatbot_ids}
        gone = confirm_gone(api, t, window, {c: missing[c] for c in chatbots})
        gone_by_day: dict[str, list[tuple[str, str]]] = {}
        for key in gone:
            gone_by_day.setdefault(stored[key].day, []).append(key)

        refreshed = refresh_continued(
            api, wh, run_id, t, usable, pending, listed | set(stored), fetch
        )
        chunks = list(chunks_of_days(window, changed_by_day, chunk_sessions))
        chunk_of_day = {day: n for n, days in enumerate(chunks) for day in days}
        incomplete: list[tuple[str, str, str]] = []

        # The other transcripts are fetched in day order; a chunk of days is written (by one
        # writer thread, in order) as soon as its last transcript arrives, while the next chunks
        # are still being fetched.
        transcripts = 0
        breaker = FailureBreaker()
        expected = [sum(len(changed_by_day.get(d, ())) for d in days) for days in chunks]
        with OrderedWriter[tuple[Task, Transcript]](expected, write) as writer:
            tasks = [task for days in chunks for d in days for task in changed_by_day.get(d, [])]
            log.info(
                "%d sessions listed in %s; fetching %d new or changed transcripts (%d started "
                "while listing)",
                len(listed),
                window,
                len(tasks),
                len(prefetch.fed),
            )
            prefetch.put(tasks)
            prefetch.close()
            next_report = time.monotonic() + PROGRESS_EVERY_S
            for done, (task, result) in enumerate(prefetch.results(), start=1):
                if time.monotonic() >= next_report:
                    next_report += PROGRESS_EVERY_S
                    log.info(
                        "transcripts: %d of %d (%.0f%%), %d requests so far",
                        done,
                        len(tasks),
                        100.0 * done / len(tasks),
                        t.api_delta()["requests"],
                    )
                breaker.see(result)
                key = task.key
                attempts = pending[key].attempts if key in pending else 0
                got = classify(t, task, result, expected_last.get(key), attempts)
                if got.problem:
                    incomplete.append((task.chatbot_id, task.session_id, got.problem))
                if not got.failed:
                    transcripts += 1
                writer.add(chunk_of_day[task.day], (task, got))
            writer.finish()

    if incomplete:
        t.problem(MESSAGES_TABLE, outstanding_note("transcripts", incomplete))
    report = t.finish()
    report.details.update(
        {
            "chatbots": len(chatbots),
            "sessions_listed": len(listed),
            "transcripts_fetched": transcripts,
            "transcripts_incomplete": len(incomplete),
            "sessions_removed": len(gone),
            "continued_sessions_refreshed": refreshed,
        }
    )
    return report
