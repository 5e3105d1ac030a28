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
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from robofy_etl.api import (
    ENDPOINTS,
    RobofyAuthError,
    RobofyClient,
    RobofyError,
    RobofyNotFoundError,
    find_drift,
    parse_timestamp,
)
from robofy_etl.warehouse import LoadCounts, Slice, Warehouse, ledger
from robofy_etl.warehouse.load import encode_payload, replace_slice

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
# Plausible timestamps: anything earlier, or more than this far ahead of the clock, is a glitch.
PLAUSIBLE_FROM = datetime(2015, 1, 1)
PLAUSIBLE_AHEAD = timedelta(days=1)
# A stored lead (which has no endpoint of its own to ask) is deleted only after this many
# complete scans in a row did not list it.
MISSES_TO_DELETE = 3
# A transcript that ends before its listing's last message time is fetched again on every run;
# after this many fetches that all end there, it is taken as complete (the API's two clocks may
# simply disagree).
SHORT_TRANSCRIPT_ATTEMPTS = 3
# Transcript requests failing in a row before the run stops asking (the API is down, not one
# conversation).
MAX_FAILURES_IN_A_ROW = 25
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
    implausible_timestamps: int = 0
    drift: list[str] = field(default_factory=list)
    # What did not load, and why, by raw table: one line each. A run with problems ends
    # non-zero.
    problems_by_table: dict[str, list[str]] = field(default_factory=dict)
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

    @property
    def problems(self) -> list[str]:
        """Every problem of the sync, whatever its table."""
        return [text for texts in self.problems_by_table.values() for text in texts]

    def problems_of(self, table: str) -> list[str]:
        return self.problems_by_table.get(table, [])

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
            "implausible_timestamps": self.implausible_timestamps,
            "problems": "\n".join(self.problems_of(table)) or "none",
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
        self.latest_plausible = _utc_now() + PLAUSIBLE_AHEAD

    def ts(self, value: Any) -> datetime | None:
        """Parses a timestamp; counts values that are present but unparseable or implausible.

        A time before ``PLAUSIBLE_FROM`` or more than ``PLAUSIBLE_AHEAD`` in the future is a
        glitch (year 1, year 9999): it is treated like an unparseable one (None).
        """
        return self.checked_ts(value)[0]

    def checked_ts(self, value: Any) -> tuple[datetime | None, str | None]:
        """A timestamp and, when it is present but unusable, why: unparseable or implausible."""
        if value is None or value == "":
            return None, None
        parsed = parse_timestamp(value, naive_tz=self.naive_tz)
        if parsed is None:
            with self._lock:
                self.report.unparseable_timestamps += 1
            return None, "unparseable"
        if not PLAUSIBLE_FROM <= parsed <= self.latest_plausible:
            with self._lock:
                self.report.implausible_timestamps += 1
            return None, "implausible"
        return parsed, None

    def problem(self, table: str, text: str) -> None:
        """Something of ``table`` did not load: it is reported, and the run ends non-zero."""
        with self._lock:
            self.report.problems_by_table.setdefault(table, []).append(text)
        log.warning("%s", text)

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


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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
    """Full snapshot of the account's projects, merged on project_id.

    A stored project the listing leaves out is marked deleted only when its own endpoint
    (Retrieve Project) answers 404; if it still answers, the listing was incomplete and the
    project is kept (and reported).
    """
    t = _Tracker(api, "projects", "snapshot", naive_tz)
    table = "robofy__projects"
    stored = active_project_ids(wh)
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
    listed = {row["project_id"] for row in rows}
    vanished = [p for p in stored if p not in listed]
    gone = _confirm_vanished(api, t, "project", [(str(p), {"project_id": p}) for p in vanished])
    within = {"project_id": sorted(listed | {int(p) for p in gone})}
    return _write(wh, run_id, t, table, rows, scope=None, within=within)


def sync_chatbots(
    api: RobofyClient, wh: Warehouse, run_id: str, *, naive_tz: str = "UTC"
) -> SyncReport:
    """Full snapshot of every live project's chatbots, merged on chatbot_id.

    A stored chatbot the listing leaves out is marked deleted only when its own endpoint
    (Retrieve Agent) answers 404. A project whose chatbots cannot be listed (403, an error on
    every attempt) keeps its chatbots as they are, and the problem is reported.
    """
    t = _Tracker(api, "chatbots", "snapshot", naive_tz)
    table = "robofy__chatbots"
    project_ids = active_project_ids(wh)
    stored = active_chatbots(wh)

    def list_chatbots(project_id: int) -> list[dict[str, Any]] | RobofyError:
        try:
            return list(api.iter_items("chatbots", project_id=project_id))
        except RobofyNotFoundError:
            # Deleted since the project snapshot: its chatbots are checked below.
            log.warning("project %s is gone (404 listing its chatbots)", project_id)
            return []
        except RobofyError as exc:
            if _fatal(exc):
                raise
            return exc

    rows: list[dict[str, Any]] = []
    unlisted: set[int] = set()
    for project_id, records in api.fan_out(project_ids, list_chatbots):
        if isinstance(records, RobofyError):
            unlisted.add(project_id)
            t.problem(
                table,
                f"chatbots of project {project_id} did not load: {_reason(records)}. Its stored "
                "chatbots are kept; the next run retries.",
            )
            continue
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
    listed = {row["chatbot_id"] for row in rows}
    vanished = [(c, p) for c, p in stored if c not in listed and p not in unlisted]
    gone = _confirm_vanished(
        api, t, "chatbot", [(c, {"project_id": p, "chatbot_id": c}) for c, p in vanished]
    )
    within = {"chatbot_id": sorted(listed | set(gone))}
    report = _write(wh, run_id, t, table, rows, scope=None, within=within)
    report.details["projects"] = len(project_ids)
    return report


_SNAPSHOT_TABLES = {"project": "robofy__projects", "chatbot": "robofy__chatbots"}


def _confirm_vanished(
    api: RobofyClient,
    t: _Tracker,
    endpoint: str,
    vanished: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[str]:
    """Asks each vanished entity's own endpoint; returns the keys that answer 404 (gone).

    One that still answers was left out of an incomplete listing: it is kept and reported.
    Another error proves nothing: it is kept, and asked again by the next run.
    """

    def ask(item: tuple[str, Mapping[str, Any]]) -> str:
        try:
            api.get_one(endpoint, **item[1])
        except RobofyNotFoundError:
            return "gone"
        except RobofyError as exc:
            if _fatal(exc):
                raise
            return "unknown"
        return "exists"

    gone: list[str] = []
    kept: list[str] = []
    for (key, _), answer in api.fan_out(list(vanished), ask):
        if answer == "gone":
            gone.append(key)
        elif answer == "exists":
            kept.append(key)
    if kept:
        t.problem(
            _SNAPSHOT_TABLES[endpoint],
            f"the {endpoint} listing left out {len(kept)} {endpoint}(s) that still exist "
            f"({', '.join(sorted(kept)[:5])}): the listing was incomplete, so they are kept as "
            "they were.",
        )
    return gone


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
    failed: str | None = None  # why the scan did not complete (its stored rows stay as they are)
    attempts: int = 1

    @property
    def usable(self) -> bool:
        return not self.gone and self.failed is None

    def keys(self, key_field: str) -> set[str]:
        """The keys of the in-window records this scan listed."""
        return {k for k in (_str(r.get(key_field)) for _, r in self.records) if k is not None}


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
    seen: set[str] = set()
    try:
        for page in api.paginate(endpoint, **params):
            scan.pages += 1
            for record in page.items:
                t.observe(table, record)
                key = _str(record.get(key_field))
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
                slice_value, bad = t.checked_ts(record.get(slice_field))
                if slice_value is None:
                    if bad is None:
                        reason = f"missing '{slice_field}', so its day is unknown"
                    elif bad == "implausible":
                        reason = (
                            f"implausible '{slice_field}' (before {PLAUSIBLE_FROM.year} or "
                            f"more than a day ahead): {record.get(slice_field)!r}"
                        )
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
    except RobofyError as exc:
        if _fatal(exc):
            raise
        scan.failed = _reason(exc)
        scan.records.clear()
        scan.continued.clear()
    return scan


def _fatal(exc: RobofyError) -> bool:
    """Errors that stop the whole run: a wrong key (401) fails every request alike."""
    return isinstance(exc, RobofyAuthError) and getattr(exc, "status", None) == 401


def _reason(exc: RobofyError) -> str:
    """A one-line reason for a request that failed on every attempt."""
    if isinstance(exc, RobofyAuthError):
        return (
            "permission denied (403): the API key may not read this resource; grant it access "
            "to this chatbot in Robofy (other chatbots still load)"
        )
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _merge(first: _Scan, second: _Scan, spec: _ListSpec) -> _Scan:
    """The union of two scans of one list, keeping each key's most recent record."""
    key_field, order_field = spec.key_field, spec.order_field

    def by_key(
        items: list[tuple[datetime, dict[str, Any]]],
        into: dict[str | None, tuple[datetime, dict[str, Any]]],
    ) -> None:
        for started, record in items:
            key = _str(record.get(key_field))
            old = into.get(key)
            if old is None or str(record.get(order_field) or "") > str(
                old[1].get(order_field) or ""
            ):
                into[key] = (started, record)

    records: dict[str | None, tuple[datetime, dict[str, Any]]] = {}
    continued: dict[str | None, tuple[datetime, dict[str, Any]]] = {}
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
    details["list_scans_failed"] = sum(s.failed is not None for s in scans)
    for scan in scans:
        if scan.failed is not None:
            t.problem(
                spec.table,
                f"{spec.endpoint} of chatbot {scan.chatbot_id} ({window}) did not load: "
                f"{scan.failed}. Its stored rows are kept; the next run retries it.",
            )
    return scans


# --------------------------------------------------------------------------- sessions + messages

_MESSAGES_TABLE = "robofy__chat_messages"
_SESSION_KEY = ("chatbot_id", "session_id")
_MESSAGE_KEY = ("chatbot_id", "session_id", "message_id")
_GONE = "session removed from Robofy: no longer listed, and its transcript answers 404"
_REPLACED = "not in its session's transcript any more (a complete fetch)"
# (chatbot_id, session_id, project_id, start day): one transcript to fetch
_Task = tuple[str, str, int, str]


def _message_rows(
    t: _Tracker,
    chatbot_id: str,
    session_id: str,
    project_id: int,
    day: str,
    records: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """One transcript's rows, and how many of its messages were quarantined.

    ``ordinal`` counts the messages kept, in API order. A message without an id, or with an
    impossible time (year 1, year 9999), is quarantined; a message repeated (the same id twice,
    e.g. across pages) is kept once, where it first appeared. Neither shifts the ordinals.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    rejected = 0
    for record in records:
        t.observe(_MESSAGES_TABLE, record)
        message_id = _str(record.get("id", record.get("message_id")))
        if message_id is None:
            t.reject(
                _MESSAGES_TABLE,
                "missing message id ('id')",
                {**record, "chatbot_id": chatbot_id, "session_id": session_id},
            )
            rejected += 1
            continue
        if message_id in seen:
            continue
        sent_at, bad = t.checked_ts(_message_time(record))
        if bad == "implausible":
            t.reject(
                _MESSAGES_TABLE,
                f"implausible message time (before {PLAUSIBLE_FROM.year} or more than a day "
                f"ahead): {_message_time(record)!r}",
                {**record, "chatbot_id": chatbot_id, "session_id": session_id},
            )
            rejected += 1
            continue
        seen.add(message_id)
        rows.append(
            {
                "chatbot_id": chatbot_id,
                "session_id": session_id,
                "message_id": message_id,
                "project_id": project_id,
                "ordinal": len(rows),
                "sent_at": sent_at,
                "_payload": record,
                "_slice": day,
            }
        )
    return rows, rejected


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


@dataclass
class _Transcript:
    """One fetched transcript as rows, and whether it arrived complete.

    Attributes:
        rows: the messages that arrived (empty when the request failed).
        problem: why it is not complete (None: complete). An incomplete transcript never
            replaces what is stored: its messages are added by message key, and it stays in
            ``meta.outstanding`` until a later run fetches it complete.
        failed: no transcript arrived at all (404, or an error on every attempt).
    """

    rows: list[dict[str, Any]]
    problem: str | None = None
    failed: bool = False


def _transcript(
    t: _Tracker,
    task: _Task,
    result: list[dict[str, Any]] | RobofyError,
    expected_last: datetime | None,
    attempts: int,
) -> _Transcript:
    """Classifies one transcript fetch: complete, incomplete (with why) or failed."""
    chatbot_id, session_id, project_id, day = task
    if isinstance(result, RobofyNotFoundError):
        return _Transcript([], "its transcript answered 404 (Not Found)", failed=True)
    if isinstance(result, RobofyError):
        return _Transcript([], _reason(result), failed=True)
    rows, rejected = _message_rows(t, chatbot_id, session_id, project_id, day, result)
    if rejected:
        return _Transcript(rows, f"{rejected} malformed message(s) (see meta.quarantine)")
    if expected_last is not None:
        times = [row["sent_at"] for row in rows if row["sent_at"] is not None]
        last = max(times) if times else None
        short = not rows or (last is not None and last + timedelta(seconds=1) < expected_last)
        if short and attempts + 1 < SHORT_TRANSCRIPT_ATTEMPTS:
            return _Transcript(
                rows,
                f"it ends at {last or 'no message'}, but its listing's last message is at "
                f"{expected_last} (a page was cut short?)",
            )
        if short:
            log.warning(
                "transcript of %s/%s still ends at %s (listing: %s) after %d fetches: taken as "
                "complete",
                chatbot_id,
                session_id,
                last,
                expected_last,
                attempts + 1,
            )
    return _Transcript(rows)


def _fetcher(api: RobofyClient) -> Callable[[_Task], list[dict[str, Any]] | RobofyError]:
    """Fetches one transcript; an error other than a wrong key is returned, not raised."""

    def fetch(task: _Task) -> list[dict[str, Any]] | RobofyError:
        chatbot_id, session_id, _, _ = task
        try:
            return list(api.iter_items("transcript", chatbot_id=chatbot_id, session_id=session_id))
        except RobofyError as exc:
            if _fatal(exc):
                raise
            return exc

    return fetch


class _FailureBreaker:
    """Stops a fan-out once many requests in a row failed: the API is down, not one record."""

    def __init__(self, limit: int = MAX_FAILURES_IN_A_ROW) -> None:
        self.limit = limit
        self.in_a_row = 0

    def see(self, result: object) -> None:
        if isinstance(result, RobofyError) and not isinstance(result, RobofyNotFoundError):
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                raise RobofyError(
                    f"{self.in_a_row} transcript requests in a row failed (last: "
                    f"{_reason(result)}); the API seems unavailable, so this run stops. "
                    "Everything written so far is kept; the next run resumes."
                ) from result
        else:
            self.in_a_row = 0


def _outstanding_note(kind: str, items: Sequence[tuple[str, str, str]]) -> str:
    """One problem line for many items: ``(chatbot_id, item, reason)``, a few named."""
    shown = "; ".join(f"{c}/{i}: {r}" for c, i, r in items[:3])
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return (
        f"{len(items)} {kind} did not arrive complete: {shown}{more}. What was stored is kept; "
        "every run retries them (robofy-etl status lists them)."
    )


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
        return _sync_conversations(api, wh, run_id, window, *options)
    log.info(
        "%s spans %d days: syncing it in %d passes, oldest first",
        window,
        (window.end - window.start).days,
        len(passes),
    )
    reports = [_sync_conversations(api, wh, run_id, part, *options) for part in passes]
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
        out.implausible_timestamps += report.implausible_timestamps
        out.drift += [entry for entry in report.drift if entry not in out.drift]
        for table, texts in report.problems_by_table.items():
            out.problems_by_table.setdefault(table, []).extend(texts)
        for name, value in report.details.items():
            if name in _NOT_ADDITIVE or not isinstance(value, int):
                out.details[name] = max(value, out.details.get(name, value))
            else:
                out.details[name] = out.details.get(name, 0) + value
        out.duration_s += report.duration_s
    out.details["passes"] = len(reports)
    return out


def _stored_by_chatbot(keys: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for chatbot_id, key in keys:
        out.setdefault(chatbot_id, set()).add(key)
    return out


def _rescan_short(
    api: RobofyClient,
    t: _Tracker,
    spec: _ListSpec,
    window: Window,
    scans: list[_Scan],
    stored: Mapping[str, set[str]],
) -> list[_Scan]:
    """Scans a list again, in full, when a scan that stopped early did not list stored keys.

    One record with an old order value (an outlier) stops a newest-first scan early; the keys
    it skipped are then missing. Reading the whole list settles whether they are still there.
    """
    redo = [
        s
        for s in scans
        if s.usable and s.stopped_early and stored.get(s.chatbot_id, set()) - s.keys(spec.key_field)
    ]
    if not redo:
        return scans
    log.info(
        "%d %s scans stopped early but missed stored rows: scanning them in full",
        len(redo),
        spec.endpoint,
    )

    def again(scan: _Scan) -> _Scan:
        full = _scan(api, t, spec, window, scan.chatbot_id, scan.project_id, full_scan=True)
        return full if not full.usable else _merge(scan, full, spec)

    redone = {s.chatbot_id: s for _, s in api.fan_out(redo, again)}
    t.report.details["list_scans_redone_in_full"] = len(redo)
    return [redone.get(s.chatbot_id, s) for s in scans]


def _confirm_gone(
    api: RobofyClient, t: _Tracker, window: Window, missing: Mapping[tuple[str, int], list[str]]
) -> set[tuple[str, str]]:
    """Asks for the transcript of each stored session the listing did not show.

    A 404 is evidence that the session is gone. A transcript that answers means the listing was
    incomplete: that chatbot's stored sessions are all kept (none is removed this run) and the
    problem is reported. Any other error proves nothing: the session is kept.
    """

    def probe(item: tuple[tuple[str, int], list[str]]) -> tuple[list[str], str | None]:
        (chatbot_id, _), session_ids = item
        gone: list[str] = []
        for session_id in session_ids:
            try:
                next(iter(api.paginate("transcript", chatbot_id=chatbot_id, session_id=session_id)))
            except RobofyNotFoundError:
                gone.append(session_id)
                continue
            except (RobofyError, StopIteration) as exc:
                if isinstance(exc, RobofyError) and _fatal(exc):
                    raise
                continue
            return [], session_id  # it exists: the listing left it out
        return gone, None

    confirmed: set[tuple[str, str]] = set()
    items = [(chatbot, ids) for chatbot, ids in missing.items() if ids]
    for ((chatbot_id, _), ids), (gone, existing) in api.fan_out(items, probe):
        if existing is not None:
            t.problem(
                _SESSIONS_LIST.table,
                f"sessions of chatbot {chatbot_id} ({window}): the listing left out {len(ids)} "
                f"stored session(s), and at least one still exists (e.g. {existing}): the "
                "listing was incomplete (an empty page, a page without its next token, or an "
                "order outlier). Every stored session of this chatbot is kept; the next run "
                "scans it again.",
            )
        confirmed.update((chatbot_id, session_id) for session_id in gone)
    t.report.details["sessions_confirmed_gone"] = len(confirmed)
    return confirmed


def _list_ledger(
    tx: Any, table: str, endpoint: str, window: Window, scans: Sequence[_Scan]
) -> None:
    """Records failed list scans as outstanding; forgets those a usable scan now covers."""
    _ledger_ranges(
        tx,
        table,
        endpoint,
        [(s.chatbot_id, str(window), s.failed) for s in scans if s.failed],
        [(s.chatbot_id, window) for s in scans if s.usable],
    )


def _ledger_ranges(
    tx: Any,
    table: str,
    endpoint: str,
    failed: Sequence[tuple[str, str, str]],
    done: Sequence[tuple[str, Window]],
) -> None:
    """Marks ``(chatbot_id, 'first..last', reason)`` ranges of ``endpoint`` outstanding, and
    forgets outstanding ranges that a range now loaded in full, ``(chatbot_id, window)``, covers.
    """
    ledger.mark_outstanding(
        tx.conn,
        table,
        [(c, f"{endpoint} {label}", label, reason) for c, label, reason in failed],
        run_id=tx.run_id,
        now=tx.loaded_at,
    )
    loaded: dict[str, list[Window]] = {}
    for chatbot_id, window in done:
        loaded.setdefault(chatbot_id, []).append(window)
    covered = [
        (o.chatbot_id, o.item)
        for o in ledger.outstanding(tx.conn, table)
        if o.item.startswith(f"{endpoint} ")
        and any(_within(o.slice, w) for w in loaded.get(o.chatbot_id, ()))
    ]
    ledger.clear_outstanding(tx.conn, table, covered)


def _within(label: str | None, window: Window) -> bool:
    """Whether a window label ``first..last`` lies inside ``window``."""
    first, _, last = (label or "").partition("..")
    try:
        return window.start <= date.fromisoformat(first) and date.fromisoformat(last) < window.end
    except ValueError:
        return False


def _sync_conversations(
    api: RobofyClient,
    wh: Warehouse,
    run_id: str,
    window: Window,
    naive_tz: str,
    full_scan: bool,
    chunk_sessions: int,
    refetch: bool,
) -> SyncReport:
    """`sync_conversations` for a window synced in one pass."""
    t = _Tracker(api, "conversations", str(window), naive_tz)
    sessions_table = _SESSIONS_LIST.table
    chatbots = active_chatbots(wh)
    chatbot_ids = [c for c, _ in chatbots]
    stored = wh.session_watermarks(chatbot_ids, window.start, window.end)
    with wh.connect() as conn:
        pending = {(o.chatbot_id, o.item): o for o in ledger.outstanding(conn, _MESSAGES_TABLE)}

    scans = _scan_all(api, t, _SESSIONS_LIST, window, chatbots, full_scan=full_scan)
    stored_keys = _stored_by_chatbot(stored)
    scans = _rescan_short(api, t, _SESSIONS_LIST, window, scans, stored_keys)
    # A chatbot deleted since the snapshot (404), or whose scan failed, keeps its stored data.
    usable = [s for s in scans if s.usable]
    chatbots = [(s.chatbot_id, s.project_id) for s in usable]
    chatbot_ids = [c for c, _ in chatbots]
    stored = {key: value for key, value in stored.items() if key[0] in chatbot_ids}
    missing = {
        (s.chatbot_id, s.project_id): sorted(
            stored_keys.get(s.chatbot_id, set()) - s.keys("session_id")
        )
        for s in usable
    }
    gone = _confirm_gone(api, t, window, missing)

    # Session rows, by start day; transcripts needed for new or changed sessions. A listed
    # session is held as a compact tuple with its payload already serialized (far smaller than
    # the record dict; large peak RSS 516 -> 496 MB) until its days are written.
    by_day: dict[str, list[_SessionRow]] = {}
    changed_by_day: dict[str, list[_Task]] = {}
    expected_last: dict[tuple[str, str], datetime | None] = {}
    listed: set[tuple[str, str]] = set()
    for scan in usable:
        for started_at, record in scan.records:
            session_id = _str(record.get("session_id"))
            if session_id is None:
                t.reject(
                    sessions_table,
                    "missing or invalid session id ('session_id')",
                    {**record, "chatbot_id": scan.chatbot_id},
                )
                continue
            key = (scan.chatbot_id, session_id)
            if key in listed:
                continue  # the same session listed twice: the first (newest) copy wins
            listed.add(key)
            day = _day(started_at)
            row = _session_row(t, scan.chatbot_id, session_id, scan.project_id, started_at, record)
            by_day.setdefault(day, []).append(row)
            previous = stored.get(key)
            if (
                refetch
                or previous is None
                or previous[0] != _watermark(record)
                or previous[1] != day
                or key in pending
            ):
                changed_by_day.setdefault(day, []).append(
                    (scan.chatbot_id, session_id, scan.project_id, day)
                )
                expected_last[key] = row[4]
        scan.records = []  # held as rows now
    gone_by_day: dict[str, list[tuple[str, str]]] = {}
    for key in gone:
        gone_by_day.setdefault(stored[key][1], []).append(key)

    fetch = _fetcher(api)
    refreshed = _refresh_continued(api, wh, run_id, t, usable, pending, listed | set(stored), fetch)
    chunks = list(_chunks_of_days(window, changed_by_day, chunk_sessions))
    chunk_of_day = {day: n for n, days in enumerate(chunks) for day in days}
    waiting = [sum(len(changed_by_day.get(d, ())) for d in days) for days in chunks]
    fetched: list[list[tuple[_Task, _Transcript]]] = [[] for _ in chunks]
    incomplete: list[tuple[str, str, str]] = []

    def write(n: int, results: list[tuple[_Task, _Transcript]]) -> None:
        """One transaction for chunk ``n``: its days' sessions and their changed transcripts."""
        days = chunks[n]
        part = Window(date.fromisoformat(days[0]), date.fromisoformat(days[-1]) + timedelta(days=1))
        last = n == len(chunks) - 1
        # An incomplete transcript leaves its stored session row (and so its watermark) as it was.
        keep = {(c, s) for (c, s, _, _), got in results if got.problem and (c, s) in stored}
        session_rows = [
            row for d in days for row in by_day.get(d, []) if (row[0], row[1]) not in keep
        ]
        gone_keys = [key for d in days for key in gone_by_day.get(d, [])]
        complete = [(task, got) for task, got in results if got.problem is None]
        partial = [got for _, got in results if got.problem is not None and not got.failed]
        # The days the replaced keys live in (a session whose start day moved lives in two):
        # a range on _slice lets the load skip the rest of history.
        days_of = [part.start, part.last] + [
            date.fromisoformat(stored[(c, s)][1]) for (c, s, _, _), _ in results if (c, s) in stored
        ]
        span = Window(min(days_of), max(days_of) + timedelta(days=1))
        with wh.transaction(run_id=run_id) as tx:

            def replace(
                table: str, rows: Any, keys: tuple[tuple[str, ...], list[Any]], why: str
            ) -> LoadCounts:
                return replace_slice(
                    tx.conn,
                    table,
                    rows,
                    Slice(day_from=span.start, day_to=span.end, keys=keys),
                    loaded_at=tx.loaded_at,
                    run_id=tx.run_id,
                    removal_reason=why,
                )

            s_counts = replace(
                sessions_table,
                _session_table(session_rows),
                (_SESSION_KEY, [(r[0], r[1]) for r in session_rows] + gone_keys),
                _GONE,
            )
            m_counts = [
                replace(_MESSAGES_TABLE, [], (_SESSION_KEY, gone_keys), _GONE),
                replace(
                    _MESSAGES_TABLE,
                    [row for _, got in complete for row in got.rows],
                    (_SESSION_KEY, [(c, s) for (c, s, _, _), _ in complete]),
                    _REPLACED,
                ),
                replace(
                    _MESSAGES_TABLE,
                    rows := [row for got in partial for row in got.rows],
                    (
                        _MESSAGE_KEY,
                        [(r["chatbot_id"], r["session_id"], r["message_id"]) for r in rows],
                    ),
                    _REPLACED,
                ),
            ]
            ledger.clear_outstanding(
                tx.conn,
                _MESSAGES_TABLE,
                [(c, s) for (c, s, _, _), _ in complete] + gone_keys,
            )
            ledger.mark_outstanding(
                tx.conn,
                _MESSAGES_TABLE,
                [(c, s, day, got.problem) for (c, s, _, day), got in results if got.problem],
                run_id=tx.run_id,
                now=tx.loaded_at,
            )
            requests = t.api_delta()["requests"]
            messages = _sum_counts(m_counts)
            tx.audit(sessions_table, slice=str(part), counts=s_counts, api_requests=requests)
            tx.audit(_MESSAGES_TABLE, slice=str(part), counts=messages, api_requests=None)
            if last:  # by now every record has been seen: drift, quarantine and scan state
                for table in (sessions_table, _MESSAGES_TABLE):
                    t.report.rows[table] = tx.count(table, _window_scope(window, chatbots))
                t.write_extras(tx, sessions_table, str(window))
                t.write_extras(tx, _MESSAGES_TABLE, str(window))
                _list_ledger(tx, sessions_table, "sessions", window, scans)
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
        t.report.add_counts(sessions_table, s_counts)
        t.report.add_counts(_MESSAGES_TABLE, messages)

    # Transcripts are fetched in day order by one fan-out; a chunk of days is written (by one
    # writer thread, in order) as soon as its last transcript arrives, while the next chunks
    # are still being fetched. At most the chunk being written and those being fetched are in
    # memory.
    transcripts = 0
    written = 0
    breaker = _FailureBreaker()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="robofy-writer") as writer:
        pending_write: Future[None] | None = None

        def flush() -> None:
            nonlocal written, pending_write
            while written < len(chunks) and waiting[written] == 0:
                if pending_write is not None:
                    pending_write.result()  # one transaction at a time, in day order
                results, fetched[written] = fetched[written], []
                last = written == len(chunks) - 1
                if last:
                    pending_write = None
                    write(written, results)  # in this thread: drift and quarantine are final
                else:
                    pending_write = writer.submit(write, written, results)
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
            for done, (task, result) in enumerate(api.fan_out(tasks, fetch), start=1):
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
                chatbot_id, session_id, _, day = task
                key = (chatbot_id, session_id)
                attempts = pending[key].attempts if key in pending else 0
                got = _transcript(t, task, result, expected_last.get(key), attempts)
                if got.problem:
                    incomplete.append((chatbot_id, session_id, got.problem))
                if not got.failed:
                    transcripts += 1
                n = chunk_of_day[day]
                waiting[n] -= 1
                fetched[n].append((task, got))
                if n == written:
                    flush()
            flush()
        finally:
            if pending_write is not None:
                pending_write.result()

    if incomplete:
        t.problem(_MESSAGES_TABLE, _outstanding_note("transcripts", incomplete))
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


def _sum_counts(counts: Iterable[LoadCounts]) -> LoadCounts:
    total = LoadCounts()
    for c in counts:
        total = LoadCounts(
            total.inserted + c.inserted,
            total.updated + c.updated,
            total.deleted + c.deleted,
            total.unchanged + c.unchanged,
        )
    return total


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
    pending: Mapping[tuple[str, str], ledger.Outstanding],
    in_window: set[tuple[str, str]],
    fetch: Callable[[_Task], list[dict[str, Any]] | RobofyError],
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
    sessions_table = _SESSIONS_LIST.table
    candidates: dict[tuple[str, str], tuple[int, datetime | None, dict[str, Any] | None]] = {}
    for scan in scans:
        for began, listing in scan.continued:
            session_id = _str(listing.get("session_id"))
            if session_id is not None:
                candidates[(scan.chatbot_id, session_id)] = (scan.project_id, began, listing)
    projects = {s.chatbot_id: s.project_id for s in scans}
    for key in pending:
        if key[0] in projects and key not in in_window and key not in candidates:
            candidates[key] = (projects[key[0]], None, None)
    if not candidates:
        return 0
    days = [
        started.date() if started else date.fromisoformat(pending[key].slice or "2015-01-01")
        for key, (_, started, _) in candidates.items()
    ]
    stored = wh.session_watermarks(
        sorted({c for c, _ in candidates}), min(days), max(days) + timedelta(days=1)
    )
    tasks: list[_Task] = []
    session_rows: list[_SessionRow] = []
    row_keys: list[tuple[str, str]] = []
    forgotten: list[tuple[str, str]] = []
    for key, (project_id, started_at, record) in candidates.items():
        previous = stored.get(key)
        if previous is None:
            if record is None:
                forgotten.append(key)  # outstanding, but its session is no longer stored
            continue
        if record is None or previous[0] != _watermark(record) or key in pending:
            tasks.append((key[0], key[1], project_id, previous[1]))
        elif started_at is not None:
            row = _session_row(t, key[0], key[1], project_id, started_at, record)
            if _digest(row[5]) != previous[2]:  # the listing changed, the transcript did not
                session_rows.append(row)
                row_keys.append(key)
    message_rows: list[dict[str, Any]] = []
    partial_rows: list[dict[str, Any]] = []
    transcript_keys: list[tuple[str, str]] = []
    incomplete: list[tuple[str, str, str, str]] = []
    breaker = _FailureBreaker()
    for task, result in api.fan_out(tasks, fetch):
        breaker.see(result)
        chatbot_id, session_id, project_id, day = task
        key = (chatbot_id, session_id)
        _, started_at, record = candidates[key]
        expected = (
            t.ts(record.get("last_message_time"))
            if record is not None
            else parse_timestamp(stored[key][0] or "", naive_tz=t.naive_tz)
        )
        attempts = pending[key].attempts if key in pending else 0
        got = _transcript(t, task, result, expected, attempts)
        if got.problem:
            incomplete.append((chatbot_id, session_id, day, got.problem))
            partial_rows.extend(got.rows)
            continue
        transcript_keys.append(key)
        if record is not None and started_at is not None:
            session_rows.append(
                _session_row(t, chatbot_id, session_id, project_id, started_at, record)
            )
            row_keys.append(key)
        message_rows.extend(got.rows)
    if not (row_keys or transcript_keys or incomplete or forgotten):
        return 0
    # The days these sessions live in: a range on _slice lets the loads skip the rest of history.
    days_of = [date.fromisoformat(stored[key][1]) for key in row_keys + transcript_keys]
    days_of += [date.fromisoformat(day) for _, _, day, _ in incomplete]
    span = Window(min(days_of), max(days_of) + timedelta(days=1)) if days_of else None
    bounds: dict[str, Any] = {"day_from": span.start, "day_to": span.end} if span else {}
    with wh.transaction(run_id=run_id) as tx:
        s_counts = tx.replace(
            sessions_table,
            _session_table(session_rows),
            slice=Slice(keys=(_SESSION_KEY, row_keys), **bounds),
        )
        tx.audit(sessions_table, slice=f"{len(row_keys)} continued sessions", counts=s_counts)
        m_counts = _sum_counts(
            [
                replace_slice(
                    tx.conn,
                    _MESSAGES_TABLE,
                    rows,
                    Slice(keys=keys, **bounds),
                    loaded_at=tx.loaded_at,
                    run_id=tx.run_id,
                    removal_reason=_REPLACED,
                )
                for rows, keys in (
                    (message_rows, (_SESSION_KEY, transcript_keys)),
                    (
                        partial_rows,
                        (
                            _MESSAGE_KEY,
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
            tx.audit(_MESSAGES_TABLE, slice=label, counts=m_counts)
            t.report.add_counts(_MESSAGES_TABLE, m_counts)
        ledger.clear_outstanding(tx.conn, _MESSAGES_TABLE, transcript_keys + forgotten)
        ledger.mark_outstanding(
            tx.conn, _MESSAGES_TABLE, incomplete, run_id=tx.run_id, now=tx.loaded_at
        )
    t.report.add_counts(sessions_table, s_counts)
    if incomplete:
        t.problem(
            _MESSAGES_TABLE,
            _outstanding_note("transcripts", [(c, s, r) for c, s, _, r in incomplete]),
        )
    log.info(
        "refreshed %d conversations that started before %s or were outstanding (%d with new "
        "messages)",
        len(set(row_keys) | set(transcript_keys)),
        t.report.window,
        len(transcript_keys),
    )
    return len(set(row_keys) | set(transcript_keys))


def _chunks_of_days(
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
    """Leads created in ``window``: listed leads are written, stored ones kept on evidence only.

    A lead has no endpoint of its own, so a stored lead the listing leaves out is counted as
    missed (``meta.missing``) and removed (into ``meta.removed_rows``) only after
    ``MISSES_TO_DELETE`` complete scans in a row left it out. Until then it is kept and the run
    reports it, so one short or empty listing never deletes anything.
    """
    t = _Tracker(api, "leads", str(window), naive_tz)
    table = _LEADS_LIST.table
    chatbots = active_chatbots(wh)
    with wh.connect() as conn:
        stored = ledger.stored_keys(
            conn, table, "lead_id", [c for c, _ in chatbots], str(window.start), str(window.end)
        )
    stored_by_chatbot = _stored_by_chatbot((c, k) for c, k, _ in stored)
    scans = _scan_all(api, t, _LEADS_LIST, window, chatbots, full_scan=full_scan)
    scans = _rescan_short(api, t, _LEADS_LIST, window, scans, stored_by_chatbot)
    usable = [s for s in scans if s.usable]
    chatbots = [(s.chatbot_id, s.project_id) for s in usable]
    rows: dict[str, dict[str, Any]] = {}
    for scan in usable:
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
    in_scope = {c for c, _ in chatbots}
    missed = [(k, c, d) for c, k, d in stored if c in in_scope and k not in rows]
    removal = f"not listed by List Leads in {MISSES_TO_DELETE} complete scans in a row"
    label = str(window)
    with wh.transaction(run_id=run_id) as tx:
        misses = ledger.count_misses(tx.conn, table, missed, run_id=run_id, now=tx.loaded_at)
        remove = sorted(k for k, n in misses.items() if n >= MISSES_TO_DELETE)
        counts = replace_slice(
            tx.conn,
            table,
            list(rows.values()),
            Slice(
                day_from=window.start,
                day_to=window.end,
                keys=(("lead_id",), [(k,) for k in [*rows, *remove]]),
            ),
            loaded_at=tx.loaded_at,
            run_id=run_id,
            removal_reason=removal,
        )
        ledger.clear_missing(tx.conn, table, [*rows, *remove])
        t.report.rows[table] = tx.count(table, _window_scope(window, chatbots))
        t.write_extras(tx, table, label)
        _list_ledger(tx, table, "leads", window, scans)
        report = t.finish()
        tx.audit(table, slice=label, counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    kept = [(k, c) for k, c, _ in missed if k not in remove]
    if kept:
        by_chatbot = _stored_by_chatbot((c, k) for k, c in kept)
        for chatbot_id, keys in sorted(by_chatbot.items()):
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


# --------------------------------------------------------------------------- message stats


def sync_message_stats(
    api: RobofyClient,
    wh: Warehouse,
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

    def fetch(task: tuple[str, int, date, date]) -> list[dict[str, Any]] | RobofyError:
        chatbot_id, project_id, first, last = task
        try:
            return api.message_stats(
                project_id=project_id, chatbot_id=chatbot_id, start=first, end=last
            )
        except RobofyError as exc:
            if _fatal(exc):
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
            failed.append((chatbot_id, label, _reason(points)))
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
            rows[(chatbot_id, stat_date)] = {
                "project_id": project_id,
                "chatbot_id": chatbot_id,
                "stat_date": stat_date,
                "_payload": record,
                "_slice": stat_date.isoformat(),
            }
        lacking = (last - first).days + 1 - len(days)
        if lacking:
            failed.append(
                (chatbot_id, label, f"the response lacks {lacking} of its {label} day(s)")
            )
        else:
            done.append((chatbot_id, Window(first, last + timedelta(days=1))))
    if failed:
        t.problem(table, _outstanding_note("message stats ranges", failed))
    chatbots = [(c, p) for c, p in chatbots if c not in gone]
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
        t.report.rows[table] = tx.count(table, _window_scope(window, chatbots))
        t.write_extras(tx, table, str(window))
        _ledger_ranges(tx, table, "message_stats", failed, done)
        report = t.finish()
        tx.audit(table, slice=str(window), counts=counts, api_requests=report.api["requests"])
    report.add_counts(table, counts)
    report.details["chatbots"] = len(chatbots)
    return report
