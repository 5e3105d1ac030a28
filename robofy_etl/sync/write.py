"""The writes a sync ends with: one transaction per table or slice, and the ledger of what
did not arrive (``meta.outstanding``) kept in step with the data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from robofy_etl.sync.report import SyncReport, Tracker
from robofy_etl.sync.scan import Scan
from robofy_etl.sync.window import Window
from robofy_etl.warehouse import Slice, TransactionLike, WarehouseLike
from robofy_etl.warehouse.reads import Chatbot


def window_scope(window: Window, chatbots: Sequence[Chatbot]) -> Slice:
    """The rows one windowed load owns: the window's days, for the chatbots it listed."""
    return Slice(
        day_from=window.start, day_to=window.end, within={"chatbot_id": [c for c, _ in chatbots]}
    )


def by_chatbot(keys: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """``(chatbot_id, key)`` pairs grouped by chatbot."""
    out: dict[str, set[str]] = {}
    for chatbot_id, key in keys:
        out.setdefault(chatbot_id, set()).add(key)
    return out


def write(
    wh: WarehouseLike,
    run_id: str,
    t: Tracker,
    table: str,
    rows: list[dict[str, Any]],
    *,
    scope: Slice | None,
    within: Mapping[str, Sequence[Any]] | None = None,
) -> SyncReport:
    """One transaction: the rows (a snapshot merge, soft-deleting keys of ``within`` that are
    not in ``rows``, when ``scope`` is None; else a slice replacement), their drift and
    quarantine, and the audit row."""
    label = "snapshot" if scope is None else t.report.window
    with wh.transaction(run_id=run_id) as tx:
        if scope is None:
            counts = tx.merge_snapshot(table, rows, within)
            t.report.rows[table] = tx.count(table, Slice())
        else:
            counts = tx.replace(table, rows, slice=scope)
            t.report.rows[table] = tx.count(table, scope)
        t.write_extras(tx, table, label)
        report = t.finish()
        tx.audit(table, slice=label, counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    return report


def list_ledger(
    tx: TransactionLike, table: str, endpoint: str, window: Window, scans: Sequence[Scan]
) -> None:
    """Records failed list scans as outstanding; forgets those a usable scan now covers."""
    ledger_ranges(
        tx,
        table,
        endpoint,
        [(s.chatbot_id, str(window), s.failed) for s in scans if s.failed],
        [(s.chatbot_id, window) for s in scans if s.usable],
    )


def ledger_ranges(
    tx: TransactionLike,
    table: str,
    endpoint: str,
    failed: Sequence[tuple[str, str, str]],
    done: Sequence[tuple[str, Window]],
) -> None:
    """Marks ``(chatbot_id, 'first..last', reason)`` ranges of ``endpoint`` outstanding, and
    forgets outstanding ranges that a range now loaded in full, ``(chatbot_id, window)``, covers.
    """
    tx.mark_outstanding(table, [(c, f"{endpoint} {label}", label, why) for c, label, why in failed])
    loaded: dict[str, list[Window]] = {}
    for chatbot_id, window in done:
        loaded.setdefault(chatbot_id, []).append(window)
    covered = [
        (o.chatbot_id, o.item)
        for o in tx.outstanding(table)
        if o.item.startswith(f"{endpoint} ")
        and any(w.covers(o.slice) for w in loaded.get(o.chatbot_id, ()))
    ]
    tx.clear_outstanding(table, covered)
