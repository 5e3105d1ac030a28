"""The simulated API itself: routing, auth, paging and body caching.

Response shapes (``Variants``) and the rendering of records under them live in ``variants.py``.

``App.handle`` turns one request (method, target, headers) into a ``Response`` without touching
sockets; ``server.py`` does the HTTP and the socket-level faults. Rendered bodies are cached per
request target in the current ``State``; a new state (clock moved, variants or faults changed,
something deleted) starts with an empty cache, so a request costs a dict lookup once its page has
been rendered.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from robofy_etl.simulator.dataset import Chatbot, Dataset, Lead, Project, Session
from robofy_etl.simulator.faults import Faults
from robofy_etl.simulator.variants import (
    _DEFAULT_VARIANTS,
    ENDPOINTS,
    Variants,
    _camel,
    _Renderer,
    _renderer,
)

__all__ = [
    "ENDPOINTS",
    "PAGE_SIZES",
    "App",
    "Response",
    "State",
    "Variants",
    "full_sync_requests",
    "full_sync_targets",
]

# Server page sizes. With these, a full sync of the medium dataset is about 9,500 requests
# (see docs/simulator.md for the arithmetic).
PAGE_SIZES: Mapping[str, int] = {
    "projects": 20,
    "chatbots": 10,
    "sessions": 50,
    "transcript": 9,
    "leads": 25,
    "licenses": 20,
}
_COLLECTIONS = {
    "projects": "projects",
    "chatbots": "chatbots",
    "sessions": "sessions",
    "transcript": "messages",
    "leads": "report",
    "message_stats": "data_points",
    "licenses": "licenses",
}
_MESSAGES = {
    "projects": "Projects retrieved successfully.",
    "project": "Success",
    "chatbots": "Agents retrieved successfully.",
    "chatbot": "Success",
    "sessions": "sessions found successfully.",
    "transcript": "Chats retrieved successfully.",
    "leads": "Leads retrieved successfully.",
    "message_stats": "Stats retrieved successfully.",
    "account_details": "Success",
    "account_limit": "Success",
    "licenses": "Success",
}
_LEAD_COLUMNS = ["id", "created_at", "source", "page_url", "ip_address", "session_id", "lead_data"]


@dataclass(slots=True)
class Response:
    """One rendered response."""

    status: int
    body: bytes
    endpoint: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class State:
    """Everything a response depends on; replaced (never mutated) when any of it changes."""

    dataset: Dataset
    variants: Variants
    faults: Faults
    api_key: str
    cache: dict[str, Response] = field(default_factory=dict)
    renderers: dict[str, _Renderer] = field(default_factory=dict)
    listings: dict[tuple[str, ...], Sequence[Any]] = field(default_factory=dict)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"message": message, "error": {"code": code, "detail": detail}}


def _not_found(code: str, detail: str) -> _HTTPError:
    return _HTTPError(404, "Not Found", code, detail)


def _bad_request(detail: str, code: str = "BAD_REQUEST") -> _HTTPError:
    return _HTTPError(400, "Bad Request", code, detail)


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


# --------------------------------------------------------------------------------------------
# The application


class App:
    """Routes and renders requests against the current ``State``."""

    def __init__(self, state: State) -> None:
        self.state = state

    # -- entry point ---------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Answer one request. ``headers`` keys are lower-case."""
        state = self.state  # one consistent snapshot for the whole request
        path, _, query_string = target.partition("?")
        endpoint, segments = _route(path)
        if method != "GET":
            return _error_response(
                _HTTPError(405, "Method Not Allowed", "METHOD_NOT_ALLOWED", "Only GET is served."),
                endpoint,
                (("Allow", "GET"),),
            )
        if endpoint == "unknown":
            return _error_response(_not_found("NOT_FOUND", f"No route for {path}."), endpoint)
        auth_error = _check_auth(state, headers)
        if auth_error is not None:
            return Response(401, auth_error, endpoint)
        cached = state.cache.get(target)
        if cached is not None:
            return cached
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        try:
            payload = self._dispatch(state, endpoint, segments, query)
        except _HTTPError as exc:
            return _error_response(exc, endpoint)
        response = Response(200, _dumps(payload), endpoint)
        state.cache[target] = response
        return response

    def _dispatch(self, state: State, endpoint: str, seg: list[str], query: dict[str, str]) -> Any:
        ds = state.dataset
        if endpoint == "projects":
            return self._list(state, endpoint, ("projects",), query, lambda: ds.projects)
        if endpoint == "project":
            return self._one(state, endpoint, _project(ds, seg[1]))
        if endpoint == "chatbots":
            project = _project(ds, seg[2])
            return self._list(
                state, endpoint, ("chatbots", str(project.id)), query,
                lambda: ds.chatbots_of(project.id),
            )  # fmt: skip
        if endpoint == "chatbot":
            project = _project(ds, seg[2])
            return self._one(state, endpoint, _chatbot(ds, seg[3], project.id))
        if endpoint == "sessions":
            chatbot = _chatbot(ds, seg[3])
            return self._list(
                state, endpoint, ("sessions", chatbot.chatbot_id), query,
                lambda: _ordered_sessions(state, chatbot.chatbot_id),
            )  # fmt: skip
        if endpoint == "transcript":
            chatbot = _chatbot(ds, seg[3])
            messages = ds.transcript_tuple(chatbot.chatbot_id, seg[4])
            if messages is None:
                raise _not_found("SESSION_NOT_FOUND", "Session not found.")
            return self._list(
                state, endpoint, ("transcript", chatbot.chatbot_id, seg[4]), query,
                lambda: messages,
            )  # fmt: skip
        if endpoint == "leads":
            project = _project(ds, seg[2])
            chatbot = _chatbot(ds, seg[3], project.id)
            session_filter = query.get("sessionId")
            key = ("leads", chatbot.chatbot_id, session_filter or "")

            def leads() -> list[Lead]:
                rows = ds.leads_by_chatbot.get(chatbot.chatbot_id, [])
                if session_filter:
                    rows = [x for x in rows if x.session_id == session_filter]
                return sorted(rows, key=lambda x: (x.created_at, x.id), reverse=True)

            return self._list(state, endpoint, key, query, leads)
        if endpoint == "message_stats":
            return self._stats(state, query)
        if endpoint == "account_details":
            return self._one(state, endpoint, _account_details(ds))
        if endpoint == "account_limit":
            return self._one(state, endpoint, _account_limit(ds))
        if endpoint == "licenses":
            return self._list(state, endpoint, ("licenses",), query, lambda: _licenses(ds))
        raise _not_found("NOT_FOUND", "No such endpoint.")  # pragma: no cover

    # -- shapes --------------------------------------------------------------------------------
    def _one(self, state: State, endpoint: str, obj: Any) -> Any:
        item = _renderer(state, endpoint).item(obj, 0)
        if state.variants.get("envelope", endpoint) in ("top.collection", "bare"):
            return item
        return {"message": _MESSAGES[endpoint], "data": item}

    def _list(
        self,
        state: State,
        endpoint: str,
        key: tuple[str, ...],
        query: dict[str, str],
        load: Callable[[], Sequence[Any]],
    ) -> Any:
        items = state.listings.get(key)
        if items is None:
            items = state.listings[key] = load()
        v = state.variants
        envelope = v.get("envelope", endpoint)
        fingerprint = _fingerprint(key)
        token = query.get("nextPageToken")
        offset = _decode_token(token, fingerprint) if token else 0
        if envelope == "bare":
            page, next_offset = items[offset:], None
        else:
            size = PAGE_SIZES[endpoint]
            page = items[offset : offset + size]
            next_offset = offset + size if offset + size < len(items) else None
        renderer = _renderer(state, endpoint)
        rendered = [renderer.item(x, offset + i) for i, x in enumerate(page)]
        if envelope == "bare":
            return rendered
        camel = v.get("keys", endpoint) == "camel"
        token_key = "nextPageToken" if camel else "next_page_token"
        last = v.get("last_token", endpoint)
        tokens: dict[str, str | None] = {}
        if next_offset is not None:
            tokens[token_key] = _encode_token(fingerprint, next_offset)
        elif last != "absent":
            tokens[token_key] = None if last == "null" else ""
        collection = _COLLECTIONS[endpoint]
        on_top = v.get("token_location", endpoint) == "top" or envelope == "data.array"
        if endpoint == "leads":
            columns = [_camel(c) for c in _LEAD_COLUMNS] if camel else list(_LEAD_COLUMNS)
            inner: Any = {"columns": columns, "rows": rendered}
        else:
            inner = rendered
        if envelope == "data.array":
            return {"message": _MESSAGES[endpoint], "data": rendered, **tokens}
        if envelope == "top.collection":
            if endpoint == "leads":
                return {
                    collection: {**inner, **({} if on_top else tokens)},
                    **(tokens if on_top else {}),
                }
            return {collection: inner, **tokens}
        # data.collection
        if endpoint == "leads":
            report = {**inner, **({} if on_top else tokens)}
            return {
                "message": _MESSAGES[endpoint],
                "data": {"report": report},
                **(tokens if on_top else {}),
            }
        data = {collection: inner, **({} if on_top else tokens)}
        return {"message": _MESSAGES[endpoint], "data": data, **(tokens if on_top else {})}

    def _stats(self, state: State, query: dict[str, str]) -> Any:
        ds = state.dataset
        p_project, p_chatbot, p_start, p_end = state.variants.stats_params
        missing = [p for p in state.variants.stats_params if not query.get(p)]
        if missing:
            raise _bad_request(f"Missing required query parameter(s): {', '.join(missing)}.")
        try:
            project_id = int(query[p_project])
        except ValueError:
            raise _bad_request(f"{p_project} must be an integer.") from None
        first, last = _parse_date(query[p_start], p_start), _parse_date(query[p_end], p_end)
        if first > last:
            raise _bad_request(f"{p_start} must not be after {p_end}.")
        if (last - first).days > 400:
            raise _bad_request("The date range may span at most 400 days.")
        if ds.project(project_id) is None:
            raise _not_found("PROJECT_NOT_FOUND", "Project not found.")
        chatbot = _chatbot(ds, query[p_chatbot], project_id)
        points = ds.stats_for(chatbot.chatbot_id, first, last)
        endpoint = "message_stats"
        renderer = _renderer(state, endpoint)
        rendered = [renderer.item(x, i) for i, x in enumerate(points)]
        envelope = state.variants.get("envelope", endpoint)
        if envelope == "bare":
            return rendered
        if envelope == "top.collection":
            return {"data_points": rendered}
        if envelope == "data.array":
            return {"message": _MESSAGES[endpoint], "data": rendered}
        return {"message": _MESSAGES[endpoint], "data": {"data_points": rendered}}


# --------------------------------------------------------------------------------------------
# Routing, auth, tokens


def _route(path: str) -> tuple[str, list[str]]:
    raw = path.split("/")
    if len(raw) < 3 or raw[0] != "" or raw[1] != "v1":
        return "unknown", []
    seg = [unquote(s) for s in raw[2:]]
    if seg and seg[-1] == "":
        seg.pop()
    n = len(seg)
    if not n or "" in seg:
        return "unknown", seg
    head = seg[0]
    if head == "projects":
        return ({1: "projects", 2: "project"}.get(n, "unknown"), seg)
    if head == "license" and n == 1:
        return "licenses", seg
    if head == "account" and n == 2 and seg[1] in ("details", "limit"):
        return f"account_{seg[1]}", seg
    if head != "ai-agent" or n < 2:
        return "unknown", seg
    kind = seg[1]
    if kind == "chatbot" and n in (3, 4):
        return ("chatbots" if n == 3 else "chatbot"), seg
    if kind == "inbox" and n == 4 and seg[2] == "sessions":
        return "sessions", seg
    if kind == "inbox" and n == 5 and seg[2] == "chats":
        return "transcript", seg
    if kind == "leads" and n == 4:
        return "leads", seg
    if kind == "message_stats" and n == 2:
        return "message_stats", seg
    return "unknown", seg


_MISSING_KEY = _dumps(
    {
        "message": "The request is missing a valid API key.",
        "error": {
            "code": "Unauthorized",
            "details": "Authentication credentials were not provided.",
        },
    }
)
_WRONG_KEY = _dumps(
    {
        "message": "The request is missing a valid API key.",
        "error": {"code": "Unauthorized", "details": "The API key is not valid."},
    }
)


def _check_auth(state: State, headers: Mapping[str, str]) -> bytes | None:
    """None when the request carries the key the way ``Variants.auth_header`` wants it."""
    style = state.variants.auth_header
    offered: list[str] = []
    if style in ("bearer", "either"):
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            offered.append(value.strip())
    if style in ("api-key", "either"):
        value = headers.get("api-key", "").strip()
        if value:
            offered.append(value)
    if state.api_key in offered:
        return None
    return _WRONG_KEY if offered else _MISSING_KEY


def _encode_token(fingerprint: str, offset: int) -> str:
    raw = json.dumps({"list": fingerprint, "offset": offset}, separators=(",", ":")).encode()
    # unpadded urlsafe base64: no character needs percent-encoding, so the URL a client sends
    # back is byte-identical to the one ``full_sync_targets`` predicts (and hits the cache)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _fingerprint(key: tuple[str, ...]) -> str:
    return f"{zlib.crc32('|'.join(key).encode()):08x}"


def _decode_token(token: str, fingerprint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        offset = data["offset"]
        ok = data["list"] == fingerprint and isinstance(offset, int) and offset >= 0
    except (binascii.Error, ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise _bad_request("Invalid nextPageToken.", "INVALID_PAGE_TOKEN")
    return int(offset)


def _error_response(
    exc: _HTTPError, endpoint: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(exc.status, _dumps(exc.body), endpoint, headers)


def _parse_date(value: str, name: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _bad_request(f"{name} must be a date as YYYY-MM-DD.") from None


def _project(ds: Dataset, raw_id: str) -> Project:
    project = ds.project(int(raw_id)) if raw_id.isdigit() else None
    if project is None:
        raise _not_found("PROJECT_NOT_FOUND", "Project not found.")
    return project


def _chatbot(ds: Dataset, chatbot_id: str, project_id: int | None = None) -> Chatbot:
    chatbot = ds.chatbot(chatbot_id)
    if chatbot is None or (project_id is not None and chatbot.project_id != project_id):
        raise _not_found("CHATBOT_NOT_FOUND", "Chatbot not found.")
    return chatbot


def _ordered_sessions(state: State, chatbot_id: str) -> list[Session]:
    sessions = state.dataset.sessions_by_chatbot.get(chatbot_id, [])
    if state.variants.get("session_order", "sessions") == "shuffled":
        seed = state.dataset.seed
        return sorted(sessions, key=lambda s: zlib.crc32(f"{seed}:{s.session_id}".encode()))
    return sorted(sessions, key=lambda s: (s.last_message_time, s.session_id), reverse=True)


# --------------------------------------------------------------------------------------------
# Account-level payloads (small, static per clock)


def _account_details(ds: Dataset) -> dict[str, Any]:
    first = min((p.created_on for p in ds.projects), default=ds.start)
    return {
        "account_id": 1000 + ds.seed % 9000,
        "name": "Simulated Robofy Account",
        "email": "owner@robofy-sim.example",
        "company_name": ds.projects[0].name if ds.projects else "Simulated",
        "address": {"line1": "1 Simulation Way", "city": "Bengaluru", "country": "IN",
                    "postal_code": "560001"},
        "created_on": first - timedelta(days=10),
    }  # fmt: skip


def _account_limit(ds: Dataset) -> dict[str, Any]:
    month_start = ds.now.replace(day=1, hour=0, minute=0, second=0)
    used = sum(1 for m in ds.messages if m.sent_at >= month_start)
    return {
        "plan": "growth",
        "project_limit": 10,
        "projects_used": len(ds.projects),
        "chatbot_limit": max(20, math.ceil(len(ds.chatbots) / 10) * 10 + 10),
        "chatbots_used": len(ds.chatbots),
        "message_limit": 1_000_000,
        "messages_used": used,
        "storage_limit_bytes": 10 * 1024**3,
        "storage_used_bytes": sum(c.storage_size for c in ds.chatbots),
        "period_start": month_start,
    }


def _licenses(ds: Dataset) -> list[dict[str, Any]]:
    start = ds.start.replace(hour=0, minute=0, second=0)
    return [
        {"license_id": f"lic_{ds.seed:04d}01", "plan": "growth", "status": "active", "seats": 5,
         "valid_from": start - timedelta(days=200), "valid_until": start + timedelta(days=165)},
        {"license_id": f"lic_{ds.seed:04d}00", "plan": "starter", "status": "expired", "seats": 1,
         "valid_from": start - timedelta(days=565), "valid_until": start - timedelta(days=200)},
    ]  # fmt: skip


def full_sync_targets(dataset: Dataset, variants: Variants | None = None) -> list[tuple[str, str]]:
    """(endpoint, request target) of a full sync: every list page of projects, chatbots,
    sessions and leads, every transcript page, and one stats call per chatbot covering the
    window. Targets carry the exact tokens the server will hand out."""
    stats_params = (variants or _DEFAULT_VARIANTS).stats_params
    out: list[tuple[str, str]] = []

    def pages(endpoint: str, base: str, key: tuple[str, ...], n: int) -> None:
        out.append((endpoint, base))
        size, fingerprint = PAGE_SIZES[endpoint], _fingerprint(key)
        for offset in range(size, n, size):
            out.append((endpoint, f"{base}?nextPageToken={_encode_token(fingerprint, offset)}"))

    pages("projects", "/v1/projects", ("projects",), len(dataset.projects))
    for project in dataset.projects:
        bots = dataset.chatbots_of(project.id)
        pages("chatbots", f"/v1/ai-agent/chatbot/{project.id}", ("chatbots", str(project.id)),
              len(bots))  # fmt: skip
        for bot in bots:
            cid = quote(bot.chatbot_id, safe="")
            sessions = dataset.sessions_by_chatbot.get(bot.chatbot_id, [])
            pages("sessions", f"/v1/ai-agent/inbox/sessions/{cid}", ("sessions", bot.chatbot_id),
                  len(sessions))  # fmt: skip
            for sess in sessions:
                sid = quote(sess.session_id, safe="")
                key = ("transcript", bot.chatbot_id, sess.session_id)
                pages(
                    "transcript", f"/v1/ai-agent/inbox/chats/{cid}/{sid}", key, sess.message_count
                )
            leads = dataset.leads_by_chatbot.get(bot.chatbot_id, [])
            pages("leads", f"/v1/ai-agent/leads/{project.id}/{cid}", ("leads", bot.chatbot_id, ""),
                  len(leads))  # fmt: skip
            query = urlencode(dict(zip(stats_params, (
                str(project.id), bot.chatbot_id, dataset.start.date().isoformat(),
                dataset.now.date().isoformat()), strict=True)))  # fmt: skip
            out.append(("message_stats", f"/v1/ai-agent/message_stats?{query}"))
    return out


def full_sync_requests(dataset: Dataset) -> dict[str, int]:
    """Requests per endpoint (and ``total``) of a full sync at the default variants: every list
    page of projects, chatbots, sessions and leads, every transcript page, one stats call per
    chatbot."""
    counts: dict[str, int] = {}
    for endpoint, _ in full_sync_targets(dataset):
        counts[endpoint] = counts.get(endpoint, 0) + 1
    counts["total"] = sum(counts.values())
    return counts
