"""The stream registry: every stream the pipeline syncs, declared once.

A stream is one raw table fed by one API endpoint. Its entry says how it is read (a snapshot,
or daily slices found by a newest-first list scan), what it hangs off, which checks apply and
how its assets look. Everything else is derived from it: the Dagster raw assets and their
checks (``defs/ingest.py``, ``defs/checks.py``), the scan specs, schema-drift rules, the run
report and the CLI summary.

The endpoint (``api/endpoints.py``, the API contract: the client needs it) and the table
(``warehouse/tables.py``, the landing contract: the storage layer creates it) stay in their
layers, which must not import this one; an entry refers to both instead of repeating them.
The function that syncs a stream registers itself with ``@syncs(...)``. Plain data: no dagster
here. docs/extending.md walks through adding a stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from robofy_etl.api import ENDPOINTS, Endpoint
from robofy_etl.warehouse import tables
from robofy_etl.warehouse.quality import Reference
from robofy_etl.warehouse.reads import Chatbot
from robofy_etl.warehouse.tables import RawTable

# How long after its last message a session's status may still change (to closed, after the
# idle timeout; WhatsApp keeps a conversation open for 24 hours). A run also looks at sessions
# whose last message is this much older than its window, to pick up such changes (an assumption
# about the API: the contract does not state the timeouts).
STATUS_SETTLE = timedelta(hours=24)
# A windowed stream whose latest day is older than this fails its freshness check (a warning).
FRESHNESS = timedelta(hours=26)


@dataclass(frozen=True)
class Stream:
    """One stream: an API endpoint landing in one raw table.

    Attributes:
        table: the raw table (``warehouse.tables``); its name is the stream's name and the
            asset key ``raw/<name>``, its ``key`` the unique-key check.
        endpoint: the API endpoint (``api.ENDPOINTS``) whose records the table holds; schema
            drift is measured against its contract fields.
        description: one sentence about the data (the asset's description in the UI).
        windowed: daily slices (partitioned assets, ``_slice`` = the day) rather than a full
            snapshot merged on the key.
        parent: the stream whose rows this one's requests start from (the asset dependency).
        references: key columns every row shares with its ``parent`` row (a check); empty
            means no referential check.
        slice_field: a listed record's field that gives its day (its partition).
        order_field: the field the list is ordered by, newest first: a scan stops once it is
            past the window. Empty: not a list scan (a snapshot, or fetched another way).
        settle: how long after its ``order_field`` a record may still change; the scan
            reaches this much further back.
        optional_fields: contract fields documented as optional: their absence is not drift.
        fresh: whether a check warns when the last day a run asked for was not loaded lately.
    """

    table: RawTable
    endpoint: Endpoint
    description: str
    windowed: bool
    parent: str | None = None
    references: tuple[str, ...] = ()
    slice_field: str = ""
    order_field: str = ""
    settle: timedelta = timedelta(0)
    optional_fields: frozenset[str] = frozenset()
    fresh: bool = False

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def key(self) -> tuple[str, ...]:
        return self.table.key

    @property
    def record_key(self) -> str:
        """The field that identifies a listed record (before it is mapped to ``key``)."""
        return self.endpoint.key_fields[0]

    @property
    def partition_expr(self) -> str | None:
        """The column holding a row's partition: ``_slice``, its day as 'YYYY-MM-DD'."""
        return "_slice" if self.windowed else None

    @property
    def reference(self) -> Reference | None:
        if self.parent is None or not self.references:
            return None
        return Reference(self.name, self.parent, self.references)

    def list_params(self, chatbot: Chatbot) -> dict[str, Any]:
        """The path parameters of one chatbot's list (those the endpoint's path names)."""
        known = {"chatbot_id": chatbot.chatbot_id, "project_id": chatbot.project_id}
        return {name: known[name] for name in self.endpoint.path_params}


PROJECTS = Stream(
    tables.PROJECTS,
    ENDPOINTS["projects"],
    "One row per Robofy project, as returned by List Projects (full snapshot; vanished "
    "projects are kept and marked deleted).",
    windowed=False,
)
CHATBOTS = Stream(
    tables.CHATBOTS,
    ENDPOINTS["chatbots"],
    "One row per chatbot (agent) of every live project, as returned by List Agents "
    "(full snapshot; vanished chatbots are marked deleted).",
    windowed=False,
    parent="robofy__projects",
    references=("project_id",),
)
SESSIONS = Stream(
    tables.INBOX_SESSIONS,
    ENDPOINTS["sessions"],
    "One row per inbox session (chatbot_id, session_id), by the UTC day it started, as returned "
    "by List Sessions.",
    windowed=True,
    parent="robofy__chatbots",
    references=("chatbot_id",),
    slice_field="created_on",
    order_field="last_message_time",
    settle=STATUS_SETTLE,
    fresh=True,
)
MESSAGES = Stream(
    tables.CHAT_MESSAGES,
    ENDPOINTS["transcript"],
    "One row per transcript message, in the partition of its session's start day. Fetched only "
    "for new or changed sessions.",
    windowed=True,
    parent="robofy__inbox_sessions",
    references=("chatbot_id", "session_id"),
)
LEADS = Stream(
    tables.LEADS,
    ENDPOINTS["leads"],
    "One row per captured lead, by the UTC day it was created, as returned by List Leads.",
    windowed=True,
    parent="robofy__chatbots",
    references=("chatbot_id",),
    slice_field="created_at",
    order_field="created_at",
    optional_fields=frozenset({"session_id"}),
    fresh=True,
)
MESSAGE_STATS = Stream(
    tables.MESSAGE_STATS,
    ENDPOINTS["message_stats"],
    "One row per chatbot and day of the message statistics endpoint.",
    windowed=True,
    parent="robofy__chatbots",
    references=("chatbot_id",),
)

# In dependency order: a stream comes after its parent. The windowed streams of a run are synced
# at once, the first on the step's own thread: keep the longest (the conversations) first.
STREAMS: dict[str, Stream] = {
    s.name: s for s in (PROJECTS, CHATBOTS, SESSIONS, MESSAGES, LEADS, MESSAGE_STATS)
}
# Every row must find its parent row: one check each.
REFERENCES: tuple[Reference, ...] = tuple(
    ref for s in STREAMS.values() if (ref := s.reference) is not None
)

# --------------------------------------------------------------------------- sync functions

F = TypeVar("F", bound=Callable[..., Any])
_SYNCS: dict[str, Callable[..., Any]] = {}


def syncs(*streams: Stream) -> Callable[[F], F]:
    """Registers the function that syncs ``streams`` (several: one sync writes them together).

    A snapshot's function is called as ``fn(api, wh, run_id, naive_tz=...)``, a windowed one's
    as ``fn(api, wh, run_id, window, naive_tz=..., **options)``; both return a ``SyncReport``
    that covers every table they wrote.
    """

    def register(fn: F) -> F:
        for stream in streams:
            if stream.name in _SYNCS:
                raise ValueError(f"stream {stream.name} already has a sync function")
            _SYNCS[stream.name] = fn
        return fn

    return register


def sync_function(stream: Stream) -> Callable[..., Any]:
    """The function that syncs ``stream``."""
    import robofy_etl.sync  # noqa: F401  # importing the package registers every sync function

    try:
        return _SYNCS[stream.name]
    except KeyError:
        raise LookupError(
            f"stream {stream.name} has no sync function: decorate one with @syncs(...)"
        ) from None


def sync_groups() -> list[tuple[Stream, ...]]:
    """The streams grouped by the function that syncs them, in registry order."""
    groups: dict[int, list[Stream]] = {}
    for stream in STREAMS.values():
        groups.setdefault(id(sync_function(stream)), []).append(stream)
    return [tuple(group) for group in groups.values()]


def reports_run_totals(name: str) -> bool:
    """Whether the report of ``name`` carries its sync's API totals: a sync that writes several
    tables reports the same totals on each, so only its first table counts them."""
    stream = STREAMS[name]
    group = next(g for g in sync_groups() if stream in g)
    return group[0] is stream
