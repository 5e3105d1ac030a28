"""Leads: daily slices by ``created_at``, read by the newest-first list scan.

A lead has no endpoint of its own, so a stored lead the listing leaves out is deleted only after
``MISSES_TO_DELETE`` complete scans in a row left it out (``meta.missing``).
"""

from __future__ import annotations

from typing import Any

from robofy_etl.api import RobofyClient
from robofy_etl.sync.registry import LEADS, syncs
from robofy_etl.sync.report import SyncReport, Tracker
from robofy_etl.sync.rows import as_str, lead_row
from robofy_etl.sync.scan import scan_all
from robofy_etl.sync.window import Window
from robofy_etl.sync.write import by_chatbot, list_ledger, window_scope
from robofy_etl.warehouse import Slice, WarehouseLike

# A stored lead (which has no endpoint of its own to ask) is deleted only after this many
# complete scans in a row did not list it.
MISSES_TO_DELETE = 3


@syncs(LEADS)
def sync_leads(
    api: RobofyClient,
    wh: WarehouseLike,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
    full_scan: bool = False,
) -> SyncReport:
    """Leads created in ``window``: listed leads are written, stored ones kept on evidence only.

    A lead has no endpoint of its own, so a stored lead the listing leaves out is counted as
    missed (``meta.missing``) and removed (into ``meta.removed_rows``) only after
    ``MISSES_TO_DELETE`` complete scans in a row left it out. Until then it is kept and the run
    reports it, so one short or empty listing never deletes anything.
    """
    t = Tracker(api, "leads", str(window), naive_tz, (LEADS.endpoint.name,))
    table = LEADS.name
    with wh.hold():
        chatbots = wh.active_chatbots()
        stored = wh.stored_keys(
            table, "lead_id", [c for c, _ in chatbots], window.start, window.end
        )
    stored_by_chatbot = by_chatbot((s.chatbot_id, s.key) for s in stored)
    scans = scan_all(api, t, LEADS, window, chatbots, stored_by_chatbot, full_scan=full_scan)
    usable = [s for s in scans if s.usable]
    chatbots = [s.chatbot for s in usable]
    rows: dict[str, dict[str, Any]] = {}
    for scan in usable:
        for created_at, record in scan.records:
            lead_id = as_str(record.get("id", record.get("lead_id")))
            if lead_id is None:
                t.reject(table, "missing lead id ('id')", {**record, "chatbot_id": scan.chatbot_id})
                continue
            # a lead listed twice (the list moved while paged) counts once
            rows[lead_id] = lead_row(record, lead_id, scan.chatbot_id, scan.project_id, created_at)
    in_scope = {c for c, _ in chatbots}
    missed = [(s.key, s.chatbot_id, s.day) for s in stored if s.chatbot_id in in_scope]
    missed = [m for m in missed if m[0] not in rows]
    removal = f"not listed by List Leads in {MISSES_TO_DELETE} complete scans in a row"
    label = str(window)
    with wh.transaction(run_id=run_id) as tx:
        misses = tx.count_misses(table, missed)
        remove = sorted(k for k, n in misses.items() if n >= MISSES_TO_DELETE)
        counts = tx.replace(
            table,
            list(rows.values()),
            Slice(
                day_from=window.start,
                day_to=window.end,
                keys=(("lead_id",), [(k,) for k in [*rows, *remove]]),
            ),
            removal_reason=removal,
        )
        tx.clear_missing(table, [*rows, *remove])
        t.report.rows[table] = tx.count(table, window_scope(window, chatbots))
        t.write_extras(tx, table, label)
        list_ledger(tx, table, LEADS.endpoint.name, window, scans)
        report = t.finish()
        tx.audit(table, slice=label, counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    kept = [(k, c) for k, c, _ in missed if k not in remove]
    if kept:
        for chatbot_id, keys in sorted(by_chatbot((c, k) for k, c in kept).items()):
            worst = max(misses[k] for k in keys)
            t.problem(
                table,
                f"leads of chatbot {chatbot_id} ({window}): {len(keys)} stored lead(s) were not "
                f"listed (missed {worst} time(s) in a row; removed after {MISSES_TO_DELETE}). "
                "They are kept; if the listing was cut short, the next run lists them again.",
            )
    report.details["chatbots"] = len(chatbots)
    report.details["leads_missed"] = len(kept)
    report.details["leads_removed"] = len(remove)
    return report
