"""Stream syncs: read one stream from the API and land it in the warehouse, slice by slice.

This is plain Python between the client (``api``) and the storage layer (``warehouse``), so the
Dagster layer stays a thin wrapper and the sync logic is testable without an orchestrator. Each
function reads what it needs, talks HTTP with no database connection open, and then writes one
transaction per slice: the data, its sync state, drift, quarantine and audit rows together.

Incremental rules (design.md section 4):
- projects, chatbots: full snapshot, merged on the key; vanished rows are soft-deleted.
- sessions: daily slices by the UTC day the session started. The list is scanned newest
  activity first; the scan stops once the page is past the window while that order holds, and
  falls back to a full scan on any disorder. Transcripts are fetched only for sessions that are
  new or whose ``last_message_time`` changed, and land in the session's start-day slice.
- leads: daily slices by ``created_at``, same scan rule (newest first).
- message stats: daily slices, fetched by date range.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from robofy_etl.api import (
    ENDPOINTS,
    RobofyClient,
    RobofyNotFoundError,
    find_drift,
    parse_timestamp,
)
from robofy_etl.warehouse import LoadCounts, Slice, Warehouse
from robofy_etl.warehouse.load import encode_payload

log = logging.getLogger(__name__)

# Changed sessions whose transcripts are held in memory before they are written. Bounds memory
# on long backfills; each chunk is one transaction that covers whole days.
TRANSCRIPT_CHUNK = 1500
# How long after its last message a session's status may still change (to closed, after the
# idle timeout; WhatsApp keeps a conversation open for 24 hours). A run also looks at sessions
# whose last message is this much older than its window, to pick up such changes (an assumption
# about the API: the contract does not state the timeouts).
STATUS_SETTLE = timedelta(hours=24)
# The longest window whose session listing is held in memory at once: longer windows (long
# backfills) are synced in passes of this many days (see sync_conversations). A 90-day backfill
# is still one pass, with one list scan per chatbot.
BACKFILL_PASS_DAYS = 92
# Scans of one list when it keeps moving under its paging (see _scan_all).
SCAN_ATTEMPTS = 3
# How often a long transcript fan-out logs its progress.
PROGRESS_EVERY_S = 5.0
# The stats endpoint is asked for at most this many days per request.
STATS_MAX_DAYS = 31
# Contract fields documented as optional; their absence is not drift. Every other contract
# field absent from all records of a load is reported, so `meta.schema_drift` shows where the
# live API differs from the assumed contract.
OPTIONAL_FIELDS: Mapping[str, frozenset[str]] = {"leads": frozenset({"session_id"})}
# raw table -> API endpoint whose records it holds
TABLE_ENDPOINT = {
    "robofy__projects": "projects",
    "robofy__chatbots": "chatbots",
    "robofy__inbox_sessions": "sessions",
    "robofy__chat_messages": "transcript",
    "robofy__leads": "leads",
    "robofy__message_stats": "message_stats",
}


@dataclass(frozen=True)
class Window:
    """A half-open range of UTC days ``[start, end)``: the partitions one run covers."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start} .. {self.end}")

    @classmethod
    def inclusive(cls, first: date, last: date) -> Window:
        return cls(first, last + timedelta(days=1))

    @property
    def start_dt(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day)

    @property
    def end_dt(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day)

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)

    def days(self) -> Iterator[date]:
        d = self.start
        while d < self.end:
            yield d
            d += timedelta(days=1)

    def contains(self, moment: datetime) -> bool:
        return self.start_dt <= moment < self.end_dt

    def split(self, days: int) -> list[Window]:
        """Consecutive windows of at most ``days`` days covering this one, oldest first."""
        if days < 1:
            raise ValueError(f"cannot split a window into parts of {days} days")
        parts, start = [], self.start
        while start < self.end:
            end = min(start + timedelta(days=days), self.end)
            parts.append(Window(start, end))
            start = end
        return parts

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.last.isoformat()}"


@dataclass
class SyncReport:
    """What one stream sync did: the counts and costs a run reports as metadata."""

    stream: str
    window: str
    counts: dict[str, LoadCounts] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # rows in the load's scope, after it
    api: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    unparseable_timestamps: int = 0
    drift: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def add_counts(self, table: str, counts: LoadCounts) -> None:
        prev = self.counts.get(table)
        if prev is None:
            self.counts[table] = counts
        else:
            self.counts[table] = LoadCounts(
                inserted=prev.inserted + counts.inserted,
                updated=prev.updated + counts.updated,
                deleted=prev.deleted + counts.deleted,
                unchanged=prev.unchanged + counts.unchanged,
            )

    def metadata(self, table: str) -> dict[str, Any]:
        """Flat metadata for one table's materialization."""
        counts = self.counts.get(table, LoadCounts(0, 0, 0, 0))
        return {
            "window": self.window,
            "rows_inserted": counts.inserted,
            "rows_updated": counts.updated,
            "rows_deleted": counts.deleted,
            "rows_unchanged": counts.unchanged,
            "rows_in_slice": self.rows.get(
                table, counts.inserted + counts.updated + counts.unchanged
            ),
            **{f"api_{k}": v for k, v in self.api.items()},
            "quarantined": self.quarantined,
            "unparseable_timestamps": self.unparseable_timestamps,
            "schema_drift": ", ".join(self.drift) if self.drift else "none",
            **self.details,
            "duration_s": round(self.duration_s, 3),
        }


class _Tracker:
    """Per-sync bookkeeping: API cost, drift, quarantine and unparseable timestamps."""

    def __init__(self, api: RobofyClient, stream: str, window: str, naive_tz: str) -> None:
        self.api = api
        self.report = SyncReport(stream=stream, window=window)
        self.naive_tz = naive_tz
        self._api_before = api.total_stats()
        self._started = time.monotonic()
        self.quarantine: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._added: dict[str, dict[str, Any]] = {}
        self._missing: dict[str, Counter[str]] = {}
        self._seen: Counter[str] = Counter()
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[set[str], set[str]]] = {}
        self._lock = threading.Lock()

    def ts(self, value: Any) -> datetime | None:
        """Parses a timestamp; counts values that are present but unparseable."""
        if value is None or value == "":
            return None
        parsed = parse_timestamp(value, naive_tz=self.naive_tz)
        if parsed is None:
            with self._lock:
                self.report.unparseable_timestamps += 1
        return parsed

    def observe(self, table: str, record: Mapping[str, Any]) -> None:
        # Records of one stream nearly always share their key set: compare each set once.
        shape = (table, tuple(record))
        drift = self._shapes.get(shape)
        if drift is None:
            drift = self._shapes[shape] = find_drift(ENDPOINTS[TABLE_ENDPOINT[table]], dict(record))
        added, missing = drift
        with self._lock:  # list scans observe from several threads at once
            self._seen[table] += 1
            if added:
                bucket = self._added.setdefault(table, {})
                for name in added:
                    bucket.setdefault(name, record.get(name))
            if missing:
                self._missing.setdefault(table, Counter()).update(missing)

    def reject(self, table: str, reason: str, record: Mapping[str, Any]) -> None:
        with self._lock:
            self.quarantine.setdefault(table, []).append((reason, dict(record)))
            self.report.quarantined += 1
        log.warning("quarantined a %s record: %s", table, reason)

    def drift(self, table: str) -> tuple[dict[str, Any], set[str]]:
        """Fields added in any record, and contract fields absent from every record."""
        added = self._added.get(table, {})
        optional = OPTIONAL_FIELDS.get(TABLE_ENDPOINT[table], frozenset())
        seen = self._seen[table]
        missing = {
            name
            for name, n in self._missing.get(table, Counter()).items()
            if n == seen and name not in optional
        }
        return added, missing

    def write_extras(self, tx: Any, table: str, slice_label: str) -> None:
        """Drift and quarantine rows for ``table``, inside the caller's transaction."""
        added, missing = self.drift(table)
        if added or missing:
            tx.record_drift(table, added=added, missing=missing)
            for name in sorted(added):
                entry = f"{table}: +{name}"
                if entry not in self.report.drift:
                    self.report.drift.append(entry)
            for name in sorted(missing):
                entry = f"{table}: -{name}"
                if entry not in self.report.drift:
                    self.report.drift.append(entry)
        rejected = self.quarantine.pop(table, [])
        if rejected:
            tx.quarantine(table, rejected, slice=slice_label)

    def api_delta(self) -> dict[str, int]:
        now = self.api.total_stats()
        return {
            "requests": now.requests - self._api_before.requests,
            "retries": now.retries - self._api_before.retries,
            "rate_limited": now.rate_limited - self._api_before.rate_limited,
            "pages": now.pages - self._api_before.pages,
            "bytes": now.bytes - self._api_before.bytes,
        }

    def finish(self) -> SyncReport:
        self.report.api = self.api_delta()
        self.report.duration_s = time.monotonic() - self._started
        return self.report


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --------------------------------------------------------------------------- snapshots


def sync_projects(
    api: RobofyClient, wh: Warehouse, run_id: str, *, naive_tz: str = "UTC"
) -> SyncReport:
    """Full snapshot of the account's projects, merged on project_id (vanished: soft-deleted)."""
    t = _Tracker(api, "projects", "snapshot", naive_tz)
    table = "robofy__projects"
    rows: list[dict[str, Any]] = []
    for record in api.iter_items("projects"):
        t.observe(table, record)
        project_id = _int(record.get("id", record.get("project_id")))
        if project_id is None:
            t.reject(table, "missing or non-integer project id ('id')", record)
            continue
        rows.append(
            {
                "project_id": project_id,
                "created_at": t.ts(record.get("created_on")),
                "updated_at": t.ts(record.get("updated_on")),
                "_payload": record,
                "_slice": "snapshot",
            }
        )
    return _write(wh, run_id, t, table, rows, scope=None)


def sync_chatbots(
    api: RobofyClient, wh: Warehouse, run_id: str, *, naive_tz: str = "UTC"
) -> SyncReport:
    """Full snapshot of every live project's chatbots, merged on chatbot_id."""
    t = _Tracker(api, "chatbots", "snapshot", naive_tz)
    table = "robofy__chatbots"
    project_ids = active_project_ids(wh)

    def list_chatbots(project_id: int) -> list[dict[str, Any]]:
        try:
            return list(api.iter_items("chatbots", project_id=project_id))
        except RobofyNotFoundError:
            # Deleted since the project snapshot: its chatbots are marked deleted below.
            log.warning("project %s is gone (404 listing its chatbots)", project_id)
            return []

    rows: list[dict[str, Any]] = []
    for project_id, records in api.fan_out(project_ids, list_chatbots):
        for record in records:
            t.observe(table, record)
            chatbot_id = _str(record.get("chatbot_id"))
            if chatbot_id is None:
                t.reject(table, "missing chatbot id ('chatbot_id' or 'id')", record)
                continue
            rows.append(
                {
                    "chatbot_id": chatbot_id,
                    "project_id": _int(record.get("project_id")) or project_id,
                    "created_at": t.ts(record.get("created_on")),
                    "updated_at": t.ts(record.get("updated_on")),
                    "_payload": record,
                    "_slice": "snapshot",
                }
            )
    report = _write(wh, run_id, t, table, rows, scope=None)
    report.details["projects"] = len(project_ids)
    return report


def _window_scope(window: Window, chatbots: Sequence[tuple[str, int]]) -> Slice:
    """The rows one windowed load owns: the window's days, for the chatbots it listed."""
    return Slice(
        day_from=window.start, day_to=window.end, within={"chatbot_id": [c for c, _ in chatbots]}
    )


def _write(
    wh: Warehouse,
    run_id: str,
    t: _Tracker,
    table: str,
    rows: list[dict[str, Any]],
    *,
    scope: Slice | None,
) -> SyncReport:
    """One transaction: the rows (a snapshot merge when ``scope`` is None, else a slice
    replacement), their drift and quarantine, and the audit row."""
    label = "snapshot" if scope is None else t.report.window
    with wh.transaction(run_id=run_id) as tx:
        if scope is None:
            counts = tx.merge_snapshot(table, rows)
            t.report.rows[table] = tx.count(table, Slice())
        else:
            counts = tx.replace(table, rows, slice=scope)
            t.report.rows[table] = tx.count(table, scope)
        t.write_extras(tx, table, label)
        report = t.finish()
        tx.audit(table, slice=label, counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    return report


def active_project_ids(wh: Warehouse) -> list[int]:
    with wh.connect(read_only=False) as conn:
        rows = conn.execute(
            "select project_id from raw.robofy__projects where not _is_deleted order by 1"
        ).fetchall()
    return [int(r[0]) for r in rows]


def active_chatbots(wh: Warehouse) -> list[tuple[str, int]]:
    """(chatbot_id, project_id) of every chatbot not marked deleted."""
    with wh.connect(read_only=False) as conn:
        rows = conn.execute(
            "select chatbot_id, project_id from raw.robofy__chatbots"
            " where not _is_deleted order by 1"
        ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


# --------------------------------------------------------------------------- list scans


@dataclass(frozen=True)
class _ListSpec:
    """A newest-first list endpoint scanned per chatbot, and how its records are placed."""

    table: str  # the raw table its records land in
    endpoint: str
    order_field: str  # newest first: the scan may stop once it is past the window
    slice_field: str  # the record's day (partition)
    key_field: str
    # How long after its ``order_field`` a record may still change without a newer
    # ``order_field`` (see STATUS_SETTLE); the scan reaches this much further back.
    settle: timedelta = timedelta(0)


_SESSIONS_LIST = _ListSpec(
    "robofy__inbox_sessions",
    "sessions",
    "last_message_time",
    "created_on",
    "session_id",
    settle=STATUS_SETTLE,
)
_LEADS_LIST = _ListSpec("robofy__leads", "leads", "created_at", "created_at", "id")


@dataclass
class _Scan:
    """One chatbot's list scan: the in-window records and how the scan went."""

    chatbot_id: str
    project_id: int
    records: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    # Records that started before the window but were active in or after it (conversations
    # that continue): their transcripts live in older partitions and must still be refreshed.
    continued: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    pages: int = 0
    ordered: bool = True
    stopped_early: bool = False
    # The same key twice in one scan: the list moved under the paging (an offset-like token
    # while newer activity pushed items down). Items can then also have been skipped.
    unstable: bool = False
    gone: bool = False  # the chatbot answered 404: deleted since the snapshot
    attempts: int = 1


def _scan(
    api: RobofyClient,
    t: _Tracker,
    spec: _ListSpec,
    window: Window,
    chatbot_id: str,
    project_id: int,
    *,
    full_scan: bool,
) -> _Scan:
    """Walks a newest-first list, keeping records whose ``slice_field`` falls in the window.

    While every page keeps ``order_field`` non-increasing, the scan stops after the first page
    that reaches past the window start: nothing after it can belong to the window. Any disorder
    (or a missing order value) switches to a full scan, so no record is ever missed.

    Records that started before the window but whose ``order_field`` is later than the window
    start minus ``settle`` are kept in ``continued``: conversations that went on, or whose status
    may have changed since their last message.
    """
    table, endpoint, slice_field, key_field = (
        spec.table,
        spec.endpoint,
        spec.slice_field,
        spec.key_field,
    )
    horizon = window.start_dt - spec.settle
    scan = _Scan(chatbot_id, project_id)
    params: dict[str, Any] = {"chatbot_id": chatbot_id}
    if endpoint == "leads":
        params["project_id"] = project_id
    previous: datetime | None = None
    seen: set[object] = set()
    try:
        for page in api.paginate(endpoint, **params):
            scan.pages += 1
            for record in page.items:
                t.observe(table, record)
                key = record.get(key_field)
                if key is not None:
                    if key in seen:
                        scan.unstable = True
                    seen.add(key)
                order_value = t.ts(record.get(spec.order_field))
                if order_value is None or (previous is not None and order_value > previous):
                    if scan.ordered:
                        log.info(
                            "%s of chatbot %s are not newest-first (page %d): scanning all pages",
                            endpoint,
                            chatbot_id,
                            scan.pages,
                        )
                    scan.ordered = False
                if order_value is not None:
                    previous = order_value if previous is None else min(previous, order_value)
                slice_value = t.ts(record.get(slice_field))
                if slice_value is None:
                    if record.get(slice_field) in (None, ""):
                        reason = f"missing '{slice_field}', so its day is unknown"
                    else:
                        reason = f"unparseable '{slice_field}': {record.get(slice_field)!r}"
                    t.reject(table, reason, {**record, "chatbot_id": chatbot_id})
                    continue
                if window.contains(slice_value):
                    scan.records.append((slice_value, record))
                elif (
                    slice_value < window.start_dt
                    and order_value is not None
                    and order_value >= horizon
                ):
                    scan.continued.append((slice_value, record))
            if scan.ordered and not full_scan and previous is not None and previous < horizon:
                scan.stopped_early = True
                break
    except RobofyNotFoundError:
        log.warning("chatbot %s is gone (404 on %s): its stored data is kept", chatbot_id, endpoint)
        scan.gone = True
        scan.records.clear()
        scan.continued.clear()
    return scan


_EARLIEST = datetime(1, 1, 1)


def _moment(value: Any) -> datetime:
    parsed = parse_timestamp(value) if value else None
    return parsed or _EARLIEST


def _merge(first: _Scan, second: _Scan, spec: _ListSpec) -> _Scan:
    """The union of two scans of one list, keeping each key's most recent record."""
    key_field, order_field = spec.key_field, spec.order_field

    def by_key(
        items: list[tuple[datetime, dict[str, Any]]],
        into: dict[object, tuple[datetime, dict[str, Any]]],
    ) -> None:
        for started, record in items:
            key = record.get(key_field)
            old = into.get(key)
            if old is None or str(record.get(order_field) or "") > str(
                old[1].get(order_field) or ""
            ):
                into[key] = (started, record)

    records: dict[object, tuple[datetime, dict[str, Any]]] = {}
    continued: dict[object, tuple[datetime, dict[str, Any]]] = {}
    for scan in (first, second):
        by_key(scan.records, records)
        by_key(scan.continued, continued)
    second.records = list(records.values())
    second.continued = list(continued.values())
    second.pages += first.pages
    second.attempts = first.attempts + 1
    second.ordered = first.ordered and second.ordered
    return second


def _scan_all(
    api: RobofyClient,
    t: _Tracker,
    spec: _ListSpec,
    window: Window,
    chatbots: Sequence[tuple[str, int]],
    *,
    full_scan: bool,
) -> list[_Scan]:
    """Scans every chatbot's list at once; a list that moved under its paging is scanned again.

    A key seen twice in one scan means the list shifted while it was paged, so items may also
    have been skipped. Such a list is scanned again (up to ``SCAN_ATTEMPTS`` times) and the
    scans are merged: an item that moved ahead during one scan sits near the front in the next.
    """

    def scan_once(chatbot: tuple[str, int]) -> _Scan:
        return _scan(api, t, spec, window, *chatbot, full_scan=full_scan)

    def one(chatbot: tuple[str, int]) -> _Scan:
        scan = scan_once(chatbot)
        while scan.unstable and scan.attempts < SCAN_ATTEMPTS:
            log.info(
                "%s of chatbot %s moved during the scan: scanning again", spec.endpoint, chatbot[0]
            )
            again = scan_once(chatbot)
            unstable = again.unstable
            scan = _merge(scan, again, spec)
            scan.unstable = unstable
        return scan

    scans = [scan for _, scan in api.fan_out(chatbots, one)]
    scans.sort(key=lambda s: s.chatbot_id)
    details = t.report.details
    details["list_pages"] = details.get("list_pages", 0) + sum(s.pages for s in scans)
    details["list_scans_stopped_early"] = sum(s.stopped_early for s in scans)
    details["list_scans_unordered"] = sum(not s.ordered for s in scans)
    details["list_scans_repeated"] = sum(s.attempts > 1 for s in scans)
    details["chatbots_gone"] = sum(s.gone for s in scans)
    return scans


# --------------------------------------------------------------------------- sessions + messages


def _message_rows(
    t: _Tracker,
    chatbot_id: str,
    session_id: str,
    project_id: int,
    day: str,
    records: Iterable[dict[str, Any]],
) -> list[dict[str, Any]]:
    table = "robofy__chat_messages"
    rows: list[dict[str, Any]] = []
    for ordinal, record in enumerate(records):
        t.observe(table, record)
        message_id = _str(record.get("id", record.get("message_id")))
        if message_id is None:
            t.reject(
                table,
                "missing message id ('id')",
                {**record, "chatbot_id": chatbot_id, "session_id": session_id},
            )
            continue
        rows.append(
            {
                "chatbot_id": chatbot_id,
                "session_id": session_id,
                "message_id": message_id,
                "project_id": project_id,
                "ordinal": ordinal,
                "sent_at": t.ts(_message_time(record)),
                "_payload": record,
                "_slice": day,
            }
        )
    return rows


def _message_time(record: Mapping[str, Any]) -> Any:
    """A message's time: its first part's ``data.time`` (InboxChatDto), else a top-level one."""
    parts = record.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("data"), dict):
                value = part["data"].get("time")
                if value:
                    return value
    for name in ("time", "created_at", "created_on", "timestamp"):
        if record.get(name):
            return record[name]
    return None


def sync_conversations(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
    full_scan: bool = False,
    chunk_sessions: int = TRANSCRIPT_CHUNK,
    pass_days: int | None = None,
) -> SyncReport:
    """Inbox sessions started in ``window`` and their transcripts (new or changed sessions only).

    Writes ``raw.robofy__inbox_sessions`` and ``raw.robofy__chat_messages`` together, one
    transaction per run of whole days, so a session and its messages are never out of step.

    A window longer than ``pass_days`` (default ``BACKFILL_PASS_DAYS``) is synced in passes of
    that many days, oldest first, each with its own list scan: the sessions listed for a pass
    are held in memory until their days are written, so a multi-year backfill needs no more
    memory than a quarter. Each later pass pages through the newer sessions again (list pages
    only, a small share of the requests; transcripts are fetched once).
    """
    passes = window.split(pass_days or BACKFILL_PASS_DAYS)
    if len(passes) == 1:
        return _sync_conversations(api, wh, run_id, window, naive_tz, full_scan, chunk_sessions)
    log.info(
        "%s spans %d days: syncing it in %d passes, oldest first",
        window,
        (window.end - window.start).days,
        len(passes),
    )
    reports = [
        _sync_conversations(api, wh, run_id, part, naive_tz, full_scan, chunk_sessions)
        for part in passes
    ]
    return _combined(window, reports)


# Report details that describe the run as a whole rather than add up over passes.
_NOT_ADDITIVE = frozenset({"chatbots", "chatbots_gone"})


def _combined(window: Window, reports: Sequence[SyncReport]) -> SyncReport:
    """One report for a window synced in several passes."""
    out = SyncReport(stream=reports[0].stream, window=str(window))
    for report in reports:
        for table, counts in report.counts.items():
            out.add_counts(table, counts)
        for table, rows in report.rows.items():
            out.rows[table] = out.rows.get(table, 0) + rows
        for name, value in report.api.items():
            out.api[name] = out.api.get(name, 0) + value
        out.quarantined += report.quarantined
        out.unparseable_timestamps += report.unparseable_timestamps
        out.drift += [entry for entry in report.drift if entry not in out.drift]
        for name, value in report.details.items():
            if name in _NOT_ADDITIVE or not isinstance(value, int):
                out.details[name] = max(value, out.details.get(name, value))
            else:
                out.details[name] = out.details.get(name, 0) + value
        out.duration_s += report.duration_s
    out.details["passes"] = len(reports)
    return out


def _sync_conversations(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    window: Window,
    naive_tz: str,
    full_scan: bool,
    chunk_sessions: int,
) -> SyncReport:
    """`sync_conversations` for a window synced in one pass."""
    t = _Tracker(api, "conversations", str(window), naive_tz)
    sessions_table, messages_table = _SESSIONS_LIST.table, "robofy__chat_messages"
    chatbots = active_chatbots(wh)
    chatbot_ids = [c for c, _ in chatbots]
    stored = wh.session_watermarks(chatbot_ids, window.start, window.end)

    scans = _scan_all(api, t, _SESSIONS_LIST, window, chatbots, full_scan=full_scan)
    # A chatbot deleted since the snapshot (404) keeps its stored data untouched this run.
    chatbots = [(s.chatbot_id, s.project_id) for s in scans if not s.gone]
    chatbot_ids = [c for c, _ in chatbots]
    stored = {key: value for key, value in stored.items() if key[0] in chatbot_ids}

    # Session rows, by start day; transcripts needed for new or changed sessions. A listed
    # session is held as a compact tuple with its payload already serialized (far smaller than
    # the record dict; large peak RSS 516 -> 496 MB) until its days are written.
    by_day: dict[str, list[_SessionRow]] = {}
    changed_by_day: dict[str, list[tuple[str, str, int, str]]] = {}
    listed: set[tuple[str, str]] = set()
    for scan in scans:
        for started_at, record in scan.records:
            session_id = _str(record.get("session_id"))
            if session_id is None:
                t.reject(
                    sessions_table,
                    "missing session id ('session_id')",
                    {**record, "chatbot_id": scan.chatbot_id},
                )
                continue
            key = (scan.chatbot_id, session_id)
            if key in listed:
                continue  # the same session listed twice: the first (newest) copy wins
            listed.add(key)
            day = _day(started_at)
            by_day.setdefault(day, []).append(
                _session_row(t, scan.chatbot_id, session_id, scan.project_id, started_at, record)
            )
            previous = stored.get(key)
            if previous is None or previous[0] != _watermark(record) or previous[1] != day:
                changed_by_day.setdefault(day, []).append(
                    (scan.chatbot_id, session_id, scan.project_id, day)
                )
        scan.records = []  # held as rows now
    vanished_by_day: dict[str, list[tuple[str, str]]] = {}
    for key, (_, day, _) in stored.items():
        if key not in listed:
            vanished_by_day.setdefault(day, []).append(key)

    def fetch(task: tuple[str, str, int, str]) -> list[dict[str, Any]] | None:
        chatbot_id, session_id, _, _ = task
        try:
            return list(api.iter_items("transcript", chatbot_id=chatbot_id, session_id=session_id))
        except RobofyNotFoundError:
            return None

    refreshed = _refresh_continued(api, wh, run_id, t, scans, fetch)
    chunks = list(_chunks_of_days(window, changed_by_day, chunk_sessions))
    chunk_of_day = {day: n for n, days in enumerate(chunks) for day in days}
    waiting = [sum(len(changed_by_day.get(d, ())) for d in days) for days in chunks]
    fetched: list[list[dict[str, Any]]] = [[] for _ in chunks]

    def write(n: int, message_rows: list[dict[str, Any]]) -> None:
        """One transaction for chunk ``n``: its days' sessions and their changed transcripts."""
        days = chunks[n]
        changed = [task for d in days for task in changed_by_day.get(d, [])]
        replaced_keys = [(c, s) for c, s, _, _ in changed]
        replaced_keys += [key for d in days for key in vanished_by_day.get(d, [])]
        part = Window(date.fromisoformat(days[0]), date.fromisoformat(days[-1]) + timedelta(days=1))
        last = n == len(chunks) - 1
        with wh.transaction(run_id=run_id) as tx:
            s_counts = tx.replace(
                sessions_table,
                _session_table([row for d in days for row in by_day.get(d, [])]),
                slice=_window_scope(part, chatbots),
            )
            m_counts = tx.replace(
                messages_table,
                message_rows,
                slice=Slice(keys=(("chatbot_id", "session_id"), replaced_keys)),
            )
            requests = t.api_delta()["requests"]
            tx.audit(sessions_table, slice=str(part), counts=s_counts, api_requests=requests)
            tx.audit(messages_table, slice=str(part), counts=m_counts, api_requests=None)
            if last:  # by now every record has been seen: drift, quarantine and scan state
                for table in (sessions_table, messages_table):
                    t.report.rows[table] = tx.count(table, _window_scope(window, chatbots))
                t.write_extras(tx, sessions_table, str(window))
                t.write_extras(tx, messages_table, str(window))
                for scan in scans:
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
        t.report.add_counts(sessions_table, s_counts)
        t.report.add_counts(messages_table, m_counts)

    # Transcripts are fetched in day order by one fan-out; a chunk of days is written (by one
    # writer thread, in order) as soon as its last transcript arrives, while the next chunks
    # are still being fetched. At most the chunk being written and those being fetched are in
    # memory.
    transcripts = missing = 0
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="robofy-writer") as writer:
        pending: Future[None] | None = None

        def flush() -> None:
            nonlocal written, pending
            while written < len(chunks) and waiting[written] == 0:
                if pending is not None:
                    pending.result()  # one transaction at a time, in day order
                rows, fetched[written] = fetched[written], []
                last = written == len(chunks) - 1
                if last:
                    pending = None
                    write(written, rows)  # in this thread: drift and quarantine are final
                else:
                    pending = writer.submit(write, written, rows)
                written += 1

        try:
            flush()
            tasks = [task for days in chunks for d in days for task in changed_by_day.get(d, [])]
            log.info(
                "%d sessions listed in %s; fetching %d new or changed transcripts",
                len(listed),
                window,
                len(tasks),
            )
            next_report = time.monotonic() + PROGRESS_EVERY_S
            for done, (task, records) in enumerate(api.fan_out(tasks, fetch), start=1):
                if time.monotonic() >= next_report:
                    next_report += PROGRESS_EVERY_S
                    log.info(
                        "transcripts: %d of %d (%.0f%%), %d requests so far",
                        done,
                        len(tasks),
                        100.0 * done / len(tasks),
                        t.api_delta()["requests"],
                    )
                chatbot_id, session_id, project_id, day = task
                n = chunk_of_day[day]
                waiting[n] -= 1
                if records is None:
                    missing += 1
                    log.warning("transcript of session %s/%s is gone (404)", chatbot_id, session_id)
                else:
                    transcripts += 1
                    fetched[n].extend(
                        _message_rows(t, chatbot_id, session_id, project_id, day, records)
                    )
                if n == written:
                    flush()
            flush()
        finally:
            if pending is not None:
                pending.result()

    report = t.finish()
    report.details.update(
        {
            "chatbots": len(chatbots),
            "sessions_listed": len(listed),
            "transcripts_fetched": transcripts,
            "transcripts_missing": missing,
            "sessions_vanished": sum(len(v) for v in vanished_by_day.values()),
            "continued_sessions_refreshed": refreshed,
        }
    )
    return report


# (chatbot_id, session_id, project_id, started_at, last_message_at, payload JSON, day)
_SessionRow = tuple[str, str, int, datetime, datetime | None, str, str]
_SESSION_COLUMNS = (
    "chatbot_id",
    "session_id",
    "project_id",
    "started_at",
    "last_message_at",
    "_payload",
    "_slice",
)


def _session_row(
    t: _Tracker,
    chatbot_id: str,
    session_id: str,
    project_id: int,
    started_at: datetime,
    record: Mapping[str, Any],
) -> _SessionRow:
    """One listed session as a compact row in its start day's slice."""
    return (
        chatbot_id,
        session_id,
        project_id,
        started_at,
        t.ts(record.get("last_message_time")),
        encode_payload(record),
        _day(started_at),
    )


def _watermark(record: Mapping[str, Any]) -> str | None:
    """A session's ``last_message_time`` as received: compared with the stored one."""
    value = record.get("last_message_time")
    return None if value is None else str(value)


def _digest(payload: str) -> str:
    """The md5 of a serialized payload, as DuckDB's ``md5(_payload::varchar)`` computes it."""
    return hashlib.md5(payload.encode(), usedforsecurity=False).hexdigest()


def _session_table(rows: Sequence[_SessionRow]) -> pa.Table:
    """Session rows as the Arrow batch the warehouse loads (payloads already serialized)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in _SESSION_COLUMNS]
    types = (
        pa.string(),
        pa.string(),
        pa.int64(),
        pa.timestamp("us"),
        pa.timestamp("us"),
        pa.string(),
        pa.string(),
    )
    return pa.table(
        {
            name: pa.array(list(values), type=typ)
            for name, values, typ in zip(_SESSION_COLUMNS, columns, types, strict=True)
        }
    )


def _refresh_continued(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    t: _Tracker,
    scans: Sequence[_Scan],
    fetch: Callable[[tuple[str, str, int, str]], list[dict[str, Any]] | None],
) -> int:
    """Refreshes sessions that started before the window and changed since they were stored.

    A conversation that continues on later days stays in its start day's partition, so a run
    for recent days must still update it there: its session row and transcript are replaced by
    key, in one transaction. A session whose listing changed without a new message (its status
    flipped to closed after the idle timeout) gets its row replaced and keeps its transcript,
    which is not fetched again. Only sessions already stored are touched (a day never synced is
    not created piecemeal). Returns how many sessions were refreshed.
    """
    sessions_table, messages_table = "robofy__inbox_sessions", "robofy__chat_messages"
    candidates: dict[tuple[str, str], tuple[int, datetime, dict[str, Any]]] = {}
    for scan in scans:
        for started_at, record in scan.continued:
            session_id = _str(record.get("session_id"))
            if session_id is not None:
                candidates[(scan.chatbot_id, session_id)] = (scan.project_id, started_at, record)
    if not candidates:
        return 0
    first = min(started for _, started, _ in candidates.values()).date()
    last = max(started for _, started, _ in candidates.values()).date() + timedelta(days=1)
    stored = wh.session_watermarks(sorted({c for c, _ in candidates}), first, last)
    tasks, session_rows, row_keys = [], [], []
    for key, (project_id, started_at, record) in candidates.items():
        previous = stored.get(key)
        if previous is None:
            continue
        if previous[0] != _watermark(record):
            tasks.append((key[0], key[1], project_id, _day(started_at)))
        else:
            row = _session_row(t, key[0], key[1], project_id, started_at, record)
            if _digest(row[5]) != previous[2]:  # the listing changed, the transcript did not
                session_rows.append(row)
                row_keys.append(key)
    message_rows, transcript_keys = [], []
    for task, records in api.fan_out(tasks, fetch):
        chatbot_id, session_id, project_id, day = task
        if records is None:
            continue  # gone since it was listed: leave it for the next run
        project_id, started_at, record = candidates[(chatbot_id, session_id)]
        transcript_keys.append((chatbot_id, session_id))
        session_rows.append(_session_row(t, chatbot_id, session_id, project_id, started_at, record))
        message_rows.extend(_message_rows(t, chatbot_id, session_id, project_id, day, records))
    keys = row_keys + transcript_keys
    if not keys:
        return 0
    key_columns = ("chatbot_id", "session_id")
    with wh.transaction(run_id=run_id) as tx:
        s_counts = tx.replace(
            sessions_table, _session_table(session_rows), slice=Slice(keys=(key_columns, keys))
        )
        tx.audit(sessions_table, slice=f"{len(keys)} continued sessions", counts=s_counts)
        if transcript_keys:
            m_counts = tx.replace(
                messages_table, message_rows, slice=Slice(keys=(key_columns, transcript_keys))
            )
            label = f"{len(transcript_keys)} continued sessions"
            tx.audit(messages_table, slice=label, counts=m_counts)
            t.report.add_counts(messages_table, m_counts)
    t.report.add_counts(sessions_table, s_counts)
    log.info(
        "refreshed %d conversations that started before %s (%d with new messages)",
        len(keys),
        t.report.window,
        len(transcript_keys),
    )
    return len(keys)


def _chunks_of_days(
    window: Window, changed_by_day: Mapping[str, Sequence[object]], limit: int
) -> Iterator[list[str]]:
    """Splits the window into runs of whole days holding at most ``limit`` changed sessions.

    Every day of the window is in exactly one chunk (empty days too: their vanished sessions
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


# --------------------------------------------------------------------------- leads


def sync_leads(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
    full_scan: bool = False,
) -> SyncReport:
    """Leads created in ``window``, one transaction replacing those days for every chatbot."""
    t = _Tracker(api, "leads", str(window), naive_tz)
    table = _LEADS_LIST.table
    chatbots = active_chatbots(wh)
    scans = _scan_all(api, t, _LEADS_LIST, window, chatbots, full_scan=full_scan)
    chatbots = [(s.chatbot_id, s.project_id) for s in scans if not s.gone]
    rows: dict[str, dict[str, Any]] = {}
    for scan in scans:
        for created_at, record in scan.records:
            lead_id = _str(record.get("id", record.get("lead_id")))
            if lead_id is None:
                t.reject(table, "missing lead id ('id')", {**record, "chatbot_id": scan.chatbot_id})
                continue
            rows[lead_id] = (  # a lead listed twice (the list moved while paged) counts once
                {
                    "lead_id": lead_id,
                    "project_id": scan.project_id,
                    "chatbot_id": scan.chatbot_id,
                    "session_id": _str(record.get("session_id")),
                    "created_at": created_at,
                    "_payload": record,
                    "_slice": _day(created_at),
                }
            )
    report = _write(
        wh, run_id, t, table, list(rows.values()), scope=_window_scope(window, chatbots)
    )
    report.details["chatbots"] = len(chatbots)
    return report


# --------------------------------------------------------------------------- message stats


def sync_message_stats(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    window: Window,
    *,
    naive_tz: str = "UTC",
) -> SyncReport:
    """Daily message statistics per chatbot for ``window``, fetched by date range."""
    t = _Tracker(api, "message_stats", str(window), naive_tz)
    table = "robofy__message_stats"
    chatbots = active_chatbots(wh)
    tasks = []
    for chatbot_id, project_id in chatbots:
        start = window.start
        while start < window.end:
            last = min(start + timedelta(days=STATS_MAX_DAYS - 1), window.last)
            tasks.append((chatbot_id, project_id, start, last))
            start = last + timedelta(days=1)

    def fetch(task: tuple[str, int, date, date]) -> list[dict[str, Any]]:
        chatbot_id, project_id, first, last = task
        return api.message_stats(
            project_id=project_id, chatbot_id=chatbot_id, start=first, end=last
        )

    rows: dict[tuple[str, date], dict[str, Any]] = {}
    for (chatbot_id, project_id, first, last), points in api.fan_out(tasks, fetch):
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
            rows[(chatbot_id, stat_date)] = {
                "project_id": project_id,
                "chatbot_id": chatbot_id,
                "stat_date": stat_date,
                "_payload": record,
                "_slice": stat_date.isoformat(),
            }
    scope = _window_scope(window, chatbots)
    report = _write(wh, run_id, t, table, list(rows.values()), scope=scope)
    report.details["chatbots"] = len(chatbots)
    return report
