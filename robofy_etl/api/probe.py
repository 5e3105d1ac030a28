"""Probe: one GET per read endpoint (first page only) and a report of how the API differs.

The probe never calls a write or chat endpoint. It tells a user with a real key, in one
command, which envelope each endpoint uses, where the paging token sits, which fields differ
from the contract and which timestamp formats appear.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from robofy_etl.api.endpoints import ENDPOINTS, Endpoint, build_path
from robofy_etl.api.errors import RobofyAPIError, RobofyAuthError, RobofyError
from robofy_etl.api.records import find_drift, iter_path, timestamp_format

if TYPE_CHECKING:
    from robofy_etl.api.client import RobofyClient
    from robofy_etl.api.pagination import Page

__all__ = ["ProbeReport", "ProbeResult", "format_probe_report", "probe"]

_log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    """What one endpoint returned.

    Attributes:
        endpoint: Registry name.
        path: The path requested (or the template when skipped).
        status: 200 on success, the HTTP status of an API error, else None.
        error: The error message (or the reason it was skipped), None on success.
        envelope: The envelope variant that matched.
        item_count: Items on the first page (1 for single objects).
        token_location: Where the next-page token key sat, if anywhere.
        has_next_page: Whether the first page carried a token.
        missing: Contract fields no item had.
        extra: Keys not in the contract (empty when the contract lists no fields).
        keys: All top-level keys seen.
        timestamp_formats: Per timestamp field, a count of each format label.
        optional: Whether the endpoint is an optional extra.
        skipped: True when a prerequisite (a parent id) was unavailable.
    """

    endpoint: str
    path: str
    status: int | None = None
    error: str | None = None
    envelope: str | None = None
    item_count: int = 0
    token_location: str | None = None
    has_next_page: bool = False
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    timestamp_formats: dict[str, dict[str, int]] = field(default_factory=dict)
    optional: bool = False
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """True when the endpoint answered with a readable body."""
        return self.error is None


@dataclass
class ProbeReport:
    """The probe's findings, one result per endpoint, in call order."""

    base_url: str
    started_at: datetime
    results: list[ProbeResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every non-optional endpoint answered."""
        return all(r.ok for r in self.results if not r.optional)

    def result(self, endpoint: str) -> ProbeResult:
        """Return the result for one endpoint name."""
        return next(r for r in self.results if r.endpoint == endpoint)


def _summarize(endpoint: Endpoint, page: Page, result: ProbeResult) -> None:
    items = page.items
    result.status = 200
    result.envelope = page.envelope
    result.item_count = len(items)
    result.token_location = page.token_location
    result.has_next_page = page.token is not None
    keys: set[str] = set()
    missing = set(endpoint.fields)
    for item in items:
        _added, absent = find_drift(endpoint, item)
        keys.update(item)
        missing &= absent
    result.keys = sorted(keys)
    if endpoint.fields and items:
        result.missing = sorted(missing)
        result.extra = sorted(keys - set(endpoint.fields))
    for path in endpoint.timestamp_fields:
        counts: Counter[str] = Counter()
        for item in items:
            counts.update(timestamp_format(v) for v in iter_path(item, path))
        if counts:
            result.timestamp_formats[path] = dict(counts)


def _first_page(api: RobofyClient, endpoint: Endpoint, params: dict[str, Any]) -> Page:
    """GET the first page (or the object) of one endpoint; never follows a token."""
    if endpoint.single:
        path_params = {k: params[k] for k in endpoint.path_params}
        return api.fetch_one(endpoint, **path_params)
    if endpoint.name == "message_stats":
        end = datetime.now(UTC).date()
        start = end - timedelta(days=max(int(params["days"]) - 1, 0))
        query = api.stats_query(
            project_id=params["project_id"],
            chatbot_id=params.get("chatbot_id"),
            start=start,
            end=end,
        )
        pages = api.paginate(endpoint, params=query)
    else:
        pages = api.paginate(endpoint, **{k: params[k] for k in endpoint.path_params})
    try:
        return next(pages)
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def _probe_one(
    api: RobofyClient, name: str, params: dict[str, Any]
) -> tuple[ProbeResult, list[dict[str, Any]]]:
    """Probe one endpoint; return its result and the items it returned."""
    endpoint = ENDPOINTS[name]
    result = ProbeResult(endpoint=name, path=endpoint.path, optional=endpoint.optional)
    needed = set(endpoint.path_params) | ({"project_id"} if name == "message_stats" else set())
    if not needed <= params.keys():
        result.skipped = True
        result.error = f"skipped: no {', '.join(sorted(needed - params.keys()))} to request it with"
        return result, []
    result.path = build_path(endpoint, {k: params[k] for k in endpoint.path_params})
    try:
        page = _first_page(api, endpoint, params)
    except RobofyAuthError as exc:
        if exc.status == 401 or not endpoint.optional:
            raise
        result.status, result.error = exc.status, str(exc)
        return result, []
    except RobofyAPIError as exc:
        result.status, result.error = exc.status, str(exc)
        return result, []
    except RobofyError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result, []
    _summarize(endpoint, page, result)
    return result, page.items


def probe(api: RobofyClient, *, project_id: int | None = None, days: int = 7) -> ProbeReport:
    """Call each read endpoint once (GET, first page only) and report what came back.

    Order: projects, project, chatbots, chatbot, agent_settings, sessions, transcript, leads,
    message_stats (last `days` days, today included), account_details, account_limit,
    licenses. Child endpoints use the first id their parent returned.

    Args:
        api: An open client.
        project_id: Probe this project instead of the first one listed.
        days: Width of the message-stats window.

    Returns:
        The report; per-endpoint failures (404 on an optional endpoint, 5xx, unreadable
        bodies) are recorded in it, not raised.

    Raises:
        RobofyAuthError: On a 401 anywhere (nothing else can work until the key is fixed), or
            as `RobofyPermissionError` on a 403 from a required endpoint.
    """
    report = ProbeReport(base_url=api.config.base_url, started_at=datetime.now(UTC))
    params: dict[str, Any] = {"days": days}
    if project_id is not None:
        params["project_id"] = project_id
    # (endpoint, key to take from its first item, parameter it feeds)
    plan: tuple[tuple[str, str | None, str | None], ...] = (
        ("projects", "id", "project_id"),
        ("project", None, None),
        ("chatbots", "chatbot_id", "chatbot_id"),
        ("chatbot", None, None),
        ("agent_settings", None, None),
        ("sessions", "session_id", "session_id"),
        ("transcript", None, None),
        ("leads", None, None),
        ("message_stats", None, None),
        ("account_details", None, None),
        ("account_limit", None, None),
        ("licenses", None, None),
    )
    for name, key, param in plan:
        result, items = _probe_one(api, name, params)
        report.results.append(result)
        _log.info("probe %s: %s", name, result.error or f"ok, {result.item_count} items")
        if key and param and param not in params and items and items[0].get(key) is not None:
            params[param] = items[0][key]
    return report


def _cell(value: object) -> str:
    return "-" if value is None or value == "" or value == [] else str(value)


def format_probe_report(report: ProbeReport) -> str:
    """Render the report as a plain-text table plus per-endpoint details.

    Returns:
        Text for a terminal; no secrets (the report never holds any).
    """
    header = ("endpoint", "status", "envelope", "items", "token at", "next", "missing", "extra")
    rows = []
    for r in report.results:
        if r.skipped:
            status = "skipped"
        elif r.ok:
            status = str(r.status)
        else:
            status = str(r.status) if r.status else "error"
            status += " (optional)" if r.optional else ""
        rows.append(
            (
                r.endpoint,
                status,
                _cell(r.envelope),
                str(r.item_count) if r.ok else "-",
                _cell(r.token_location),
                "yes" if r.has_next_page else "no" if r.ok else "-",
                str(len(r.missing)) if r.ok else "-",
                str(len(r.extra)) if r.ok else "-",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        f"Robofy API probe of {report.base_url} at {report.started_at:%Y-%m-%d %H:%M:%S} UTC",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    details = []
    for r in report.results:
        notes = []
        if r.error:
            notes.append(f"error: {r.error}")
        if r.missing:
            notes.append("missing vs contract: " + ", ".join(r.missing))
        if r.extra:
            notes.append("not in contract: " + ", ".join(r.extra))
        if r.ok and not ENDPOINTS[r.endpoint].fields and r.keys:
            notes.append("keys (no contract yet): " + ", ".join(r.keys))
        for path, counts in r.timestamp_formats.items():
            formats = ", ".join(f"{label} x{n}" for label, n in sorted(counts.items()))
            notes.append(f"timestamps {path}: {formats}")
        if notes:
            details.append(f"{r.endpoint} ({r.path})")
            details += [f"    {note}" for note in notes]
    if details:
        lines += ["", *details]
    verdict = "all required endpoints answered" if report.ok else "some required endpoints failed"
    lines += ["", f"Result: {verdict}."]
    return "\n".join(lines) + "\n"
