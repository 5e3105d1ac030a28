"""What one stream sync did (``SyncReport``) and the bookkeeping that fills it (``Tracker``)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from robofy_etl.api import EndpointStats, RobofyClient, find_drift, parse_timestamp
from robofy_etl.sync.registry import STREAMS
from robofy_etl.sync.rows import PLAUSIBLE_AHEAD, PLAUSIBLE_FROM, utc_now
from robofy_etl.sync.window import Window
from robofy_etl.warehouse import LoadCounts, TransactionLike

log = logging.getLogger(__name__)

# Report details that describe the run as a whole rather than add up over passes.
_NOT_ADDITIVE = frozenset({"chatbots", "chatbots_gone"})


def sum_counts(counts: Iterable[LoadCounts]) -> LoadCounts:
    total = LoadCounts()
    for c in counts:
        total = LoadCounts(
            total.inserted + c.inserted,
            total.updated + c.updated,
            total.deleted + c.deleted,
            total.unchanged + c.unchanged,
        )
    return total


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
        self.counts[table] = counts if prev is None else sum_counts((prev, counts))

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


def combined(window: Window, reports: Sequence[SyncReport]) -> SyncReport:
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


class Tracker:
    """Per-sync bookkeeping: API cost, drift, quarantine and unparseable timestamps.

    Thread-safe where list scans and fetches call it from the client's fan-out workers.
    """

    def __init__(
        self,
        api: RobofyClient,
        stream: str,
        window: str,
        naive_tz: str,
        endpoints: Collection[str] = (),
    ) -> None:
        self.api = api
        self.report = SyncReport(stream=stream, window=window)
        self.naive_tz = naive_tz
        # The API cost counts the requests to these endpoints (all, when empty), so syncs
        # running at once on one client each report their own.
        self._endpoints = tuple(endpoints)
        self._api_before = self._api_total()
        self._started = time.monotonic()
        self.quarantine: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._added: dict[str, dict[str, Any]] = {}
        self._missing: dict[str, Counter[str]] = {}
        self._seen: Counter[str] = Counter()
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[set[str], set[str]]] = {}
        self._lock = threading.Lock()
        self.latest_plausible = utc_now() + PLAUSIBLE_AHEAD

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
            drift = self._shapes[shape] = find_drift(STREAMS[table].endpoint, dict(record))
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
        optional = STREAMS[table].optional_fields
        seen = self._seen[table]
        missing = {
            name
            for name, n in self._missing.get(table, Counter()).items()
            if n == seen and name not in optional
        }
        return added, missing

    def write_extras(self, tx: TransactionLike, table: str, slice_label: str) -> None:
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

    def _api_total(self) -> EndpointStats:
        if not self._endpoints:
            return self.api.total_stats()
        by_endpoint = self.api.stats()
        total = EndpointStats()
        for name in self._endpoints:
            if name in by_endpoint:
                total = total + by_endpoint[name]
        return total

    def api_delta(self) -> dict[str, int]:
        now = self._api_total()
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
