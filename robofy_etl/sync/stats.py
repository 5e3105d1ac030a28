"""Daily message statistics per chatbot, fetched by date range.

The API sends one point per day, zeros included, so a response that lacks days is incomplete:
the stored points of those days are kept, and the range is retried by every later run until it
arrives (``meta.outstanding``). Stats rows are never deleted.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, NamedTuple

from robofy_etl.api import RobofyClient, RobofyError, RobofyNotFoundError
from robofy_etl.sync.failures import fatal, outstanding_note, reason
from robofy_etl.sync.registry import MESSAGE_STATS, syncs
from robofy_etl.sync.report import SyncReport, Tracker
from robofy_etl.sync.rows import stats_row
from robofy_etl.sync.window import Window
from robofy_etl.sync.write import ledger_ranges, window_scope
from robofy_etl.warehouse import Slice, WarehouseLike

# The stats endpoint is asked for at most this many days per request.
STATS_MAX_DAYS = 31


class _Range(NamedTuple):
    """One stats request: a chatbot's days ``first..last`` (inclusive)."""

    chatbot_id: str
    project_id: int
    first: date
    last: date


@syncs(MESSAGE_STATS)
def sync_message_stats(
    api: RobofyClient,
    wh: WarehouseLike,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
) -> SyncReport:
    """Daily message statistics per chatbot for ``window``, fetched by date range.

    The API sends one point per day, zeros included, so a response that lacks days is
    incomplete: the stored points of those days are kept, and the range is retried by every
    later run until it arrives (``meta.outstanding``). Stats rows are never deleted.
    """
    t = Tracker(api, "message_stats", str(window), naive_tz, (MESSAGE_STATS.endpoint.name,))
    table = MESSAGE_STATS.name
    chatbots = wh.active_chatbots()
    tasks = []
    for chatbot_id, project_id in chatbots:
        start = window.start
        while start < window.end:
            last = min(start + timedelta(days=STATS_MAX_DAYS - 1), window.last)
            tasks.append(_Range(chatbot_id, project_id, start, last))
            start = last + timedelta(days=1)

    def fetch(task: _Range) -> list[dict[str, Any]] | RobofyError:
        try:
            return api.message_stats(
                project_id=task.project_id,
                chatbot_id=task.chatbot_id,
                start=task.first,
                end=task.last,
            )
        except RobofyError as exc:
            if fatal(exc):
                raise
            return exc

    rows: dict[tuple[str, date], dict[str, Any]] = {}
    failed: list[tuple[str, str, str]] = []
    done: list[tuple[str, Window]] = []
    gone: set[str] = set()
    for (chatbot_id, project_id, first, last), points in api.fan_out(tasks, fetch):
        label = f"{first}..{last}"
        if isinstance(points, RobofyNotFoundError):
            gone.add(chatbot_id)  # deleted since the snapshot: its stored stats are kept
            continue
        if isinstance(points, RobofyError):
            failed.append((chatbot_id, label, reason(points)))
            continue
        days: set[date] = set()
        for record in points:
            t.observe(table, record)
            raw_date = record.get("date", record.get("stat_date"))
            try:
                stat_date = date.fromisoformat(str(raw_date)[:10])
            except ValueError:
                t.reject(
                    table,
                    f"missing or invalid 'date': {raw_date!r}",
                    {**record, "chatbot_id": chatbot_id},
                )
                continue
            if not first <= stat_date <= last:
                continue  # outside what was asked: another request's (or no) slice
            days.add(stat_date)
            rows[(chatbot_id, stat_date)] = stats_row(record, chatbot_id, project_id, stat_date)
        lacking = (last - first).days + 1 - len(days)
        if lacking:
            failed.append(
                (chatbot_id, label, f"the response lacks {lacking} of its {label} day(s)")
            )
        else:
            done.append((chatbot_id, Window(first, last + timedelta(days=1))))
    if failed:
        t.problem(table, outstanding_note("message stats ranges", failed))
    chatbots = [c for c in chatbots if c.chatbot_id not in gone]
    with wh.transaction(run_id=run_id) as tx:
        counts = tx.replace(
            table,
            list(rows.values()),
            slice=Slice(
                day_from=window.start,
                day_to=window.end,
                keys=(("chatbot_id", "stat_date"), list(rows)),
            ),
        )
        t.report.rows[table] = tx.count(table, window_scope(window, chatbots))
        t.write_extras(tx, table, str(window))
        ledger_ranges(tx, table, MESSAGE_STATS.endpoint.name, failed, done)
        report = t.finish()
        tx.audit(table, slice=str(window), counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    report.details["chatbots"] = len(chatbots)
    return report
