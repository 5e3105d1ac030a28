"""The newest-first list scan: one chatbot's list, kept to the records of a window.

The API has no "changed since" filter, so a windowed stream is read by paging its list per
chatbot. While the list is newest first, the scan stops once it is past the window; any
disorder falls back to a full scan. A list that moved under its paging is scanned again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from robofy_etl.api import RobofyClient, RobofyError, RobofyNotFoundError
from robofy_etl.sync.failures import fatal, reason
from robofy_etl.sync.registry import Stream
from robofy_etl.sync.report import Tracker
from robofy_etl.sync.rows import PLAUSIBLE_FROM, as_str
from robofy_etl.sync.window import Window
from robofy_etl.warehouse.reads import Chatbot

log = logging.getLogger(__name__)

# Scans of one list when it keeps moving under its paging (see scan_all).
SCAN_ATTEMPTS = 3


# One record in a window: its day's moment (the ``slice_field``) and the record.
Dated = tuple[datetime, dict[str, Any]]


@dataclass
class Scan:
    """One chatbot's list scan: the in-window records and how the scan went."""

    chatbot_id: str
    project_id: int
    records: list[Dated] = field(default_factory=list)
    # Records that started before the window but were active in or after it (conversations
    # that continue): their transcripts live in older partitions and must still be refreshed.
    continued: list[Dated] = field(default_factory=list)
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
    def chatbot(self) -> Chatbot:
        return Chatbot(self.chatbot_id, self.project_id)

    @property
    def usable(self) -> bool:
        return not self.gone and self.failed is None

    def keys(self, key_field: str) -> set[str]:
        """The keys of the in-window records this scan listed."""
        return {k for k in (as_str(r.get(key_field)) for _, r in self.records) if k is not None}


def scan(
    api: RobofyClient,
    t: Tracker,
    spec: Stream,
    window: Window,
    chatbot: Chatbot,
    *,
    full_scan: bool,
) -> Scan:
    """Walks a newest-first list, keeping records whose ``slice_field`` falls in the window.

    While every page keeps ``order_field`` non-increasing, the scan stops after the first page
    that reaches past the window start: nothing after it can belong to the window. Any disorder
    (or a missing order value) switches to a full scan, so no record is ever missed.

    Records that started before the window but whose ``order_field`` is later than the window
    start minus ``settle`` are kept in ``continued``: conversations that went on, or whose status
    may have changed since their last message.
    """
    table, endpoint, slice_field, key_field = (
        spec.name,
        spec.endpoint.name,
        spec.slice_field,
        spec.record_key,
    )
    chatbot_id = chatbot.chatbot_id
    horizon = window.start_dt - spec.settle
    out = Scan(chatbot_id, chatbot.project_id)
    previous: datetime | None = None
    seen: set[str] = set()
    try:
        for page in api.paginate(endpoint, **spec.list_params(chatbot)):
            out.pages += 1
            for record in page.items:
                t.observe(table, record)
                key = as_str(record.get(key_field))
                if key is not None:
                    if key in seen:
                        out.unstable = True
                    seen.add(key)
                order_value = t.ts(record.get(spec.order_field))
                if order_value is None or (previous is not None and order_value > previous):
                    if out.ordered:
                        log.info(
                            "%s of chatbot %s are not newest-first (page %d): scanning all pages",
                            endpoint,
                            chatbot_id,
                            out.pages,
                        )
                    out.ordered = False
                if order_value is not None:
                    previous = order_value if previous is None else min(previous, order_value)
                slice_value, bad = t.checked_ts(record.get(slice_field))
                if slice_value is None:
                    if bad is None:
                        why = f"missing '{slice_field}', so its day is unknown"
                    elif bad == "implausible":
                        why = (
                            f"implausible '{slice_field}' (before {PLAUSIBLE_FROM.year} or "
                            f"more than a day ahead): {record.get(slice_field)!r}"
                        )
                    else:
                        why = f"unparseable '{slice_field}': {record.get(slice_field)!r}"
                    t.reject(table, why, {**record, "chatbot_id": chatbot_id})
                    continue
                if window.contains(slice_value):
                    out.records.append((slice_value, record))
                elif (
                    slice_value < window.start_dt
                    and order_value is not None
                    and order_value >= horizon
                ):
                    out.continued.append((slice_value, record))
            if out.ordered and not full_scan and previous is not None and previous < horizon:
                out.stopped_early = True
                break
    except RobofyNotFoundError:
        log.warning("chatbot %s is gone (404 on %s): its stored data is kept", chatbot_id, endpoint)
        out.gone = True
        out.records.clear()
        out.continued.clear()
    except RobofyError as exc:
        if fatal(exc):
            raise
        out.failed = reason(exc)
        out.records.clear()
        out.continued.clear()
    return out


def merge(first: Scan, second: Scan, spec: Stream) -> Scan:
    """The union of two scans of one list, keeping each key's most recent record."""
    key_field, order_field = spec.record_key, spec.order_field

    def by_key(items: list[Dated], into: dict[str | None, Dated]) -> None:
        for started, record in items:
            key = as_str(record.get(key_field))
            old = into.get(key)
            if old is None or str(record.get(order_field) or "") > str(
                old[1].get(order_field) or ""
            ):
                into[key] = (started, record)

    records: dict[str | None, Dated] = {}
    continued: dict[str | None, Dated] = {}
    for one in (first, second):
        by_key(one.records, records)
        by_key(one.continued, continued)
    second.records = list(records.values())
    second.continued = list(continued.values())
    second.pages += first.pages
    second.attempts = first.attempts + 1
    second.ordered = first.ordered and second.ordered
    return second


def scan_chatbot(
    api: RobofyClient,
    t: Tracker,
    spec: Stream,
    window: Window,
    chatbot: Chatbot,
    *,
    full_scan: bool,
) -> Scan:
    """One chatbot's scan; a list that moved under its paging is scanned again.

    A key seen twice in one scan means the list shifted while it was paged, so items may also
    have been skipped. Such a list is scanned again (up to ``SCAN_ATTEMPTS`` times) and the
    scans are merged: an item that moved ahead during one scan sits near the front in the next.
    """
    out = scan(api, t, spec, window, chatbot, full_scan=full_scan)
    while out.unstable and out.attempts < SCAN_ATTEMPTS:
        log.info(
            "%s of chatbot %s moved during the scan: scanning again",
            spec.endpoint.name,
            chatbot.chatbot_id,
        )
        again = scan(api, t, spec, window, chatbot, full_scan=full_scan)
        unstable = again.unstable
        out = merge(out, again, spec)
        out.unstable = unstable
    return out


def report_scans(t: Tracker, spec: Stream, window: Window, scans: list[Scan]) -> list[Scan]:
    """Sorts the scans by chatbot and reports how they went (details and failed scans)."""
    scans.sort(key=lambda s: s.chatbot_id)
    details = t.report.details
    details["list_pages"] = details.get("list_pages", 0) + sum(s.pages for s in scans)
    details["list_scans_stopped_early"] = sum(s.stopped_early for s in scans)
    details["list_scans_unordered"] = sum(not s.ordered for s in scans)
    details["list_scans_repeated"] = sum(s.attempts > 1 for s in scans)
    details["chatbots_gone"] = sum(s.gone for s in scans)
    details["list_scans_failed"] = sum(s.failed is not None for s in scans)
    for one in scans:
        if one.failed is not None:
            t.problem(
                spec.name,
                f"{spec.endpoint.name} of chatbot {one.chatbot_id} ({window}) did not load: "
                f"{one.failed}. Its stored rows are kept; the next run retries it.",
            )
    return scans


@dataclass
class Listed:
    """One chatbot's listing: the scan as first made, and the scan its records come from."""

    first: Scan  # what the run reports (pages, order, failures)
    scan: Scan  # ``first``, or its merge with a full scan when it stopped early and missed keys
    redone: bool = False


def list_chatbot(
    api: RobofyClient,
    t: Tracker,
    spec: Stream,
    window: Window,
    chatbot: Chatbot,
    stored: set[str],
    *,
    full_scan: bool,
) -> Listed:
    """One chatbot's scan (``scan_chatbot``), made again in full when it stopped early and did
    not list keys the warehouse holds (``stored``).

    One record with an old order value (an outlier) stops a newest-first scan early; the keys
    it skipped are then missing. Reading the whole list settles whether they are still there.
    """
    first = scan_chatbot(api, t, spec, window, chatbot, full_scan=full_scan)
    if not (first.usable and first.stopped_early and stored - first.keys(spec.record_key)):
        return Listed(first, first)
    log.info(
        "%s scan of chatbot %s stopped early but missed stored rows: scanning it in full",
        spec.endpoint.name,
        chatbot.chatbot_id,
    )
    full = scan(api, t, spec, window, chatbot, full_scan=True)
    return Listed(first, full if not full.usable else merge(first, full, spec), redone=True)


def list_each(
    api: RobofyClient,
    t: Tracker,
    spec: Stream,
    window: Window,
    chatbots: Sequence[Chatbot],
    stored: Mapping[str, set[str]],
    *,
    full_scan: bool,
) -> Iterator[Listed]:
    """Every chatbot's listing (``list_chatbot``), at once, each as soon as it is done."""

    def one(chatbot: Chatbot) -> Listed:
        keys = stored.get(chatbot.chatbot_id, set())
        return list_chatbot(api, t, spec, window, chatbot, keys, full_scan=full_scan)

    for _, listed in api.fan_out(chatbots, one):
        yield listed


def finish_listing(
    t: Tracker, spec: Stream, window: Window, listings: Sequence[Listed]
) -> list[Scan]:
    """Reports how the scans went; returns the scans to use, by chatbot."""
    report_scans(t, spec, window, [one.first for one in listings])
    redone = sum(one.redone for one in listings)
    if redone:
        t.report.details["list_scans_redone_in_full"] = redone
    return sorted((one.scan for one in listings), key=lambda s: s.chatbot_id)


def scan_all(
    api: RobofyClient,
    t: Tracker,
    spec: Stream,
    window: Window,
    chatbots: Sequence[Chatbot],
    stored: Mapping[str, set[str]],
    *,
    full_scan: bool,
) -> list[Scan]:
    """Every chatbot's listing (``list_chatbot``), reported, by chatbot."""
    listings = list(list_each(api, t, spec, window, chatbots, stored, full_scan=full_scan))
    return finish_listing(t, spec, window, listings)
