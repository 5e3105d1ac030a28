"""Response shapes: the ``Variants`` a simulator serves, and the renderer that applies them.

A ``Variants`` value chooses, per endpoint, the envelope, key style, timestamp format and the
other shape differences the real API has shown; ``_Renderer`` turns the dataset's records into
wire dicts under them (and under the schema-drift faults). ``app.py`` does the routing and
paging around it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from robofy_etl.simulator.records import Chatbot, Lead, Message, Project, Session, Stat

if TYPE_CHECKING:
    from robofy_etl.simulator.app import State

__all__ = ["ENDPOINTS", "Variants"]

ENDPOINTS = (
    "projects",
    "project",
    "chatbots",
    "chatbot",
    "sessions",
    "transcript",
    "leads",
    "message_stats",
    "account_details",
    "account_limit",
    "licenses",
    "unknown",
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "envelope": ("data.collection", "data.array", "top.collection", "bare"),
    "keys": ("snake", "camel"),
    "timestamps": ("default", "naive", "iso", "iso_z", "iso_offset"),
    "chatbot_id_key": ("chatbot_id", "id"),
    "visitor_key": ("user_profile_name", "visitor_name"),
    "token_location": ("data", "top"),
    "last_token": ("null", "empty", "absent"),
    "session_order": ("activity_desc", "shuffled"),
    "role_style": ("user_assistant", "mixed"),
    "auth_header": ("bearer", "api-key", "either"),
}

PerEndpoint = str | Mapping[str, str]


@dataclass(frozen=True)
class Variants:
    """Response shapes to serve. Each field is one value for every endpoint, or a dict from
    endpoint name to value (``"*"`` sets the fallback; missing endpoints get the default).

    Attributes:
        envelope: ``data.collection``
            (``{"message", "data": {"sessions": [...], "next_page_token"}}``;
            leads: ``data.report.{columns, rows, next_page_token}``), ``data.array``
            (``{"message", "data": [...], "next_page_token"}``), ``top.collection``
            (``{"sessions": [...], "next_page_token"}``) or ``bare`` (a bare array holding the whole
            list in one page; a bare object for single-object endpoints).
        keys: ``snake`` or ``camel`` (item keys and the token key; collection names stay as
            documented).
        timestamps: ``default`` (naive on leads and message part times, iso elsewhere), ``naive``
            (``2026-10-01 10:30:00``), ``iso`` (``2026-10-01T10:30:00``), ``iso_z``
            (``2026-10-01T10:30:00.000Z``) or ``iso_offset`` (the project's UTC offset, same
            instant).
        chatbot_id_key: the chatbot id's key inside chatbot objects: ``chatbot_id`` or ``id``.
        visitor_key: ``user_profile_name`` or ``visitor_name`` on sessions.
        token_location: ``data`` (beside the items) or ``top`` (top level of the body).
        last_token: the last page's token: ``null``, ``empty`` (``""``) or ``absent``.
        session_order: ``activity_desc`` (last_message_time desc) or ``shuffled`` (a fixed,
            deterministic disorder).
        role_style: ``user_assistant`` or ``mixed`` (a fifth of the sessions say visitor/agent or
            inbound/outbound; another tenth use upper-case directions in the listing).
        auth_header: ``bearer`` (``Authorization: Bearer <key>``), ``api-key`` (``api-key: <key>``)
            or ``either``.
        stats_params: the four query parameter names of message_stats (project, chatbot, start,
            end).
    """

    envelope: PerEndpoint = "data.collection"
    keys: PerEndpoint = "snake"
    timestamps: PerEndpoint = "default"
    chatbot_id_key: PerEndpoint = "chatbot_id"
    visitor_key: PerEndpoint = "user_profile_name"
    token_location: PerEndpoint = "data"  # noqa: S105 - a location, not a secret
    last_token: PerEndpoint = "null"  # noqa: S105
    session_order: PerEndpoint = "activity_desc"
    role_style: PerEndpoint = "user_assistant"
    auth_header: str = "bearer"
    stats_params: tuple[str, str, str, str] = ("projectId", "chatbotId", "startDate", "endDate")

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            values = value.values() if isinstance(value, Mapping) else (value,)
            for v in values:
                if v not in allowed:
                    raise ValueError(f"Variants.{name}: {v!r} is not one of {', '.join(allowed)}")
            if isinstance(value, Mapping):
                unknown = set(value) - set(ENDPOINTS) - {"*"}
                if unknown:
                    raise ValueError(f"Variants.{name}: unknown endpoint(s) {sorted(unknown)}")
        if len(self.stats_params) != 4 or len(set(self.stats_params)) != 4:
            raise ValueError("Variants.stats_params must be four distinct names")

    def get(self, name: str, endpoint: str) -> str:
        """The value of variant ``name`` for ``endpoint``."""
        value = getattr(self, name)
        if isinstance(value, Mapping):
            default = getattr(_DEFAULT_VARIANTS, name)
            return str(value.get(endpoint, value.get("*", default)))
        return str(value)


_DEFAULT_VARIANTS = Variants()

# --------------------------------------------------------------------------------------------
# Value formatting


def _offset_suffix(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _formatter(style: str, offset_minutes: int) -> Callable[[datetime | None], str | None]:
    if style == "naive":
        return lambda dt: None if dt is None else dt.isoformat(" ")
    if style == "iso":
        return lambda dt: None if dt is None else dt.isoformat()
    if style == "iso_z":
        return lambda dt: None if dt is None else dt.isoformat(timespec="milliseconds") + "Z"
    delta, suffix = timedelta(minutes=offset_minutes), _offset_suffix(offset_minutes)
    return lambda dt: None if dt is None else (dt + delta).isoformat() + suffix


_CAMEL: dict[str, str] = {}


def _camel(key: str) -> str:
    out = _CAMEL.get(key)
    if out is None:
        head, *rest = key.split("_")
        out = _CAMEL[key] = head + "".join(w[:1].upper() + w[1:] for w in rest)
    return out


def _camelize(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {_camel(k): _camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camelize(v) for v in obj]
    return obj


_MIXED_ROLES = (
    {"user": "visitor", "assistant": "agent"},
    {"user": "inbound", "assistant": "outbound"},
)


def _role_map(session_id: str) -> Mapping[str, str] | None:
    """In the ``mixed`` role style, a fixed fifth of the sessions use another vocabulary."""
    h = zlib.crc32(session_id.encode())
    return _MIXED_ROLES[(h >> 8) & 1] if h % 5 == 0 else None


# --------------------------------------------------------------------------------------------
# Item rendering


def _renderer(state: State, endpoint: str) -> _Renderer:
    renderer = state.renderers.get(endpoint)
    if renderer is None:
        renderer = state.renderers[endpoint] = _Renderer(state, endpoint)
    return renderer


class _Renderer:
    """Renders canonical records to wire dicts for one endpoint under the current variants."""

    def __init__(self, state: State, endpoint: str) -> None:
        v = state.variants
        self.ds = state.dataset
        self.endpoint = endpoint
        style = v.get("timestamps", endpoint)
        if style == "default":
            style = "naive" if endpoint in ("leads", "transcript") else "iso"
        self.style = style
        self._formats: dict[int, Callable[[datetime | None], str | None]] = {}
        self._chatbot_fmt: dict[str, Callable[[datetime | None], str | None]] = {}
        self.camel = v.get("keys", endpoint) == "camel"
        self.chatbot_id_key = v.get("chatbot_id_key", endpoint)
        self.visitor_key = v.get("visitor_key", endpoint)
        self.mixed_roles = v.get("role_style", endpoint) == "mixed"
        self.added = state.faults.drift_added.get(endpoint)
        self.renamed = state.faults.drift_renamed.get(endpoint)
        self._methods: dict[type, Callable[[Any], dict[str, Any]]] = {
            Session: self.session,
            Message: self.message,
            Lead: self.lead,
            Chatbot: self.chatbot,
            Project: self.project,
            Stat: self.stat,
        }

    def fmt(self, project_id: int) -> Callable[[datetime | None], str | None]:
        f = self._formats.get(project_id)
        if f is None:
            offset = self.ds.utc_offset_minutes(project_id) if self.style == "iso_offset" else 0
            f = self._formats[project_id] = _formatter(self.style, offset)
        return f

    def item(self, obj: Any, index: int) -> Any:
        method = self._methods.get(type(obj))
        if method is not None:
            out = method(obj)
        else:
            fmt = self.fmt(-1)
            out = {k: fmt(v) if isinstance(v, datetime) else v for k, v in obj.items()}
        if self.added:
            out[self.added] = round((index * 7919 % 1000) / 1000, 3)
        if self.renamed and self.renamed[0] in out:
            out[self.renamed[1]] = out.pop(self.renamed[0])
        return _camelize(out) if self.camel else out

    def project(self, p: Project) -> dict[str, Any]:
        fmt = self.fmt(p.id)
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "website_url": p.website_url,
            "timezone": p.timezone,
            "created_on": fmt(p.created_on),
            "updated_on": fmt(p.updated_on),
        }

    def chatbot(self, c: Chatbot) -> dict[str, Any]:
        fmt = self.fmt(c.project_id)
        return {
            self.chatbot_id_key: c.chatbot_id,
            "project_id": c.project_id,
            "name": c.name,
            "description": c.description,
            "type": c.type,
            "access_type": c.access_type,
            "avatar_url": c.avatar_url,
            "llm_source": c.llm_source,
            "llm_api_key": c.llm_api_key,
            "language": c.language,
            "is_ready": c.is_ready,
            "file_usage": c.file_usage,
            "link_usage": c.link_usage,
            "storage_size": c.storage_size,
            "created_on": fmt(c.created_on),
            "updated_on": fmt(c.updated_on),
        }

    def session(self, s: Session) -> dict[str, Any]:
        fmt = self.fmt(s.project_id)
        direction = s.last_message_direction
        if self.mixed_roles:
            roles = _role_map(s.session_id)
            if roles is not None:
                direction = roles[direction]
            elif zlib.crc32(s.session_id.encode()) % 10 == 1:
                direction = direction.upper()
        return {
            "session_id": s.session_id,
            "created_on": fmt(s.created_on),
            "last_message_time": fmt(s.last_message_time),
            "last_message": s.last_message,
            "last_message_direction": direction,
            self.visitor_key: s.user_profile_name,
            "website_url": s.website_url,
            "status": s.status,
            "platform": s.platform,
        }

    def message(self, m: Message) -> dict[str, Any]:
        fmt = self._chatbot_fmt.get(m.chatbot_id)
        if fmt is None:
            chatbot = self.ds.chatbot(m.chatbot_id)
            fmt = self._chatbot_fmt[m.chatbot_id] = self.fmt(chatbot.project_id if chatbot else -1)
        role = m.role
        if self.mixed_roles:
            roles = _role_map(m.session_id)
            if roles is not None:
                role = roles[role]
        return {
            "id": m.id,
            "role": role,
            "parts": [
                {
                    "type": p["type"],
                    "text": p["text"],
                    "data": {
                        "time": fmt(p["data"]["time"]),
                        "context_id": p["data"]["context_id"],
                        "website_url": p["data"]["website_url"],
                    },
                }
                for p in m.parts
            ],
        }

    def lead(self, x: Lead) -> dict[str, Any]:
        return {
            "id": x.id,
            "created_at": self.fmt(x.project_id)(x.created_at),
            "source": x.source,
            "page_url": x.page_url,
            "ip_address": x.ip_address,
            "session_id": x.session_id,
            "lead_data": [dict(f) for f in x.lead_data],
        }

    def stat(self, s: Stat) -> dict[str, Any]:
        return {
            "date": s.date.isoformat(),
            "total_messages": s.total_messages,
            "user_messages": s.user_messages,
            "ai_messages": s.ai_messages,
            "sessions": s.sessions,
            "leads": s.leads,
            "failed_messages": s.failed_messages,
        }
