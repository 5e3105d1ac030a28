"""The endpoint registry: every GET the pipeline reads, as data (see robofy-api.md Part 1.3)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

__all__ = ["ENDPOINTS", "Endpoint", "build_path"]


@dataclass(frozen=True)
class Endpoint:
    """One read endpoint of the Robofy API.

    Attributes:
        name: Registry key, also the name used in stats and errors.
        path: Path template; placeholders are the Python keyword names (`{chatbot_id}`).
        items_key: Where a list endpoint's items sit (`sessions`, `report.rows`), or None for
            single-object endpoints.
        parent: Name of the endpoint whose items supply this one's path parameters.
        key_fields: Fields that identify a record (after normalization).
        fields: Field names the contract knows (snake_case, after aliases); drift is measured
            against them. Empty means the shape is unknown.
        timestamp_fields: Timestamp fields, as dotted paths; `[]` walks a list
            (`parts[].data.time`).
        paged: Whether the contract documents a continuation token (tokens are followed anyway).
        single: True for endpoints that return one object in `data`.
        aliases: `(alias, canonical)` pairs applied to top-level keys after snake-casing,
            only when the canonical key is absent.
        query: `(keyword, query name)` pairs of optional query parameters (`session_id` ->
            `sessionId`).
        optional: True for extras (E9) whose absence (404/403) is reported, not fatal.
        path_params: Placeholder names of `path`, derived.
    """

    name: str
    path: str
    items_key: str | None = None
    parent: str | None = None
    key_fields: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    timestamp_fields: tuple[str, ...] = ()
    paged: bool = False
    single: bool = False
    aliases: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    optional: bool = False
    path_params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Derive `path_params` and check the definition is coherent."""
        names = tuple(n for _, n, _, _ in string.Formatter().parse(self.path) if n)
        object.__setattr__(self, "path_params", names)
        if self.single == (self.items_key is not None):
            raise ValueError(f"endpoint {self.name}: set exactly one of single / items_key")


def build_path(endpoint: Endpoint, params: Mapping[str, object]) -> str:
    """Fill the path template, URL-encoding every segment.

    Args:
        endpoint: The endpoint.
        params: Values for every placeholder. Integers (project ids) are sent as decimal
            strings; strings are percent-encoded with no safe characters, so a `/` or `+` in a
            session id cannot change the route.

    Returns:
        The path, for example `/v1/ai-agent/inbox/chats/abc/%2B4915112345678`.

    Raises:
        TypeError: A placeholder is missing or unexpected, or a value is not str/int.
    """
    missing = [p for p in endpoint.path_params if p not in params]
    extra = [p for p in params if p not in endpoint.path_params]
    if missing or extra:
        raise TypeError(
            f"endpoint {endpoint.name!r} ({endpoint.path}) takes path parameters "
            f"{list(endpoint.path_params)}; missing {missing}, unexpected {extra}"
        )
    encoded: dict[str, str] = {}
    for name in endpoint.path_params:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(
                f"path parameter {name!r} must be str or int, not {type(value).__name__}"
            )
        text = str(value)
        if not text:
            raise TypeError(f"path parameter {name!r} of endpoint {endpoint.name!r} is empty")
        encoded[name] = quote(text, safe="")
    return endpoint.path.format_map(encoded)


_PROJECT_FIELDS = (
    "id",
    "name",
    "description",
    "website_url",
    "timezone",
    "created_on",
    "updated_on",
)
_CHATBOT_FIELDS = (
    "chatbot_id",
    "project_id",
    "name",
    "description",
    "type",
    "access_type",
    "avatar_url",
    "llm_source",
    "language",
    "is_ready",
    "file_usage",
    "link_usage",
    "storage_size",
    "created_on",
    "updated_on",
)
_CHATBOT_ALIASES = (("id", "chatbot_id"),)

_ALL: tuple[Endpoint, ...] = (
    Endpoint(
        "projects",
        "/v1/projects",
        items_key="projects",
        key_fields=("id",),
        fields=_PROJECT_FIELDS,
        timestamp_fields=("created_on", "updated_on"),
        paged=True,
    ),
    Endpoint(
        "project",
        "/v1/projects/{project_id}",
        single=True,
        parent="projects",
        key_fields=("id",),
        fields=_PROJECT_FIELDS,
        timestamp_fields=("created_on", "updated_on"),
    ),
    Endpoint(
        "chatbots",
        "/v1/ai-agent/chatbot/{project_id}",
        items_key="chatbots",
        parent="projects",
        key_fields=("chatbot_id",),
        fields=_CHATBOT_FIELDS,
        timestamp_fields=("created_on", "updated_on"),
        paged=True,
        aliases=_CHATBOT_ALIASES,
    ),
    Endpoint(
        "chatbot",
        "/v1/ai-agent/chatbot/{project_id}/{chatbot_id}",
        single=True,
        parent="chatbots",
        key_fields=("chatbot_id",),
        fields=_CHATBOT_FIELDS,
        timestamp_fields=("created_on", "updated_on"),
        aliases=_CHATBOT_ALIASES,
    ),
    Endpoint(
        "sessions",
        "/v1/ai-agent/inbox/sessions/{chatbot_id}",
        items_key="sessions",
        parent="chatbots",
        key_fields=("session_id",),
        fields=(
            "session_id",
            "created_on",
            "last_message_time",
            "last_message",
            "last_message_direction",
            "user_profile_name",
            "website_url",
            "status",
            "platform",
        ),
        timestamp_fields=("created_on", "last_message_time"),
        paged=True,
        aliases=(("visitor_name", "user_profile_name"),),
    ),
    Endpoint(
        "transcript",
        "/v1/ai-agent/inbox/chats/{chatbot_id}/{session_id}",
        items_key="messages",
        parent="sessions",
        key_fields=("id",),
        fields=("id", "role", "parts"),
        timestamp_fields=("parts[].data.time",),
        paged=True,
    ),
    Endpoint(
        "leads",
        "/v1/ai-agent/leads/{project_id}/{chatbot_id}",
        items_key="report.rows",
        parent="chatbots",
        key_fields=("id",),
        fields=("id", "created_at", "source", "page_url", "ip_address", "lead_data", "session_id"),
        timestamp_fields=("created_at",),
        paged=True,
        query=(("session_id", "sessionId"),),
    ),
    Endpoint(
        "message_stats",
        "/v1/ai-agent/message_stats",
        items_key="data_points",
        parent="chatbots",
        key_fields=("date",),
        fields=(
            "date",
            "total_messages",
            "user_messages",
            "ai_messages",
            "sessions",
            "leads",
            "failed_messages",
        ),
    ),
    # Documented (Retrieve Agent Settings) but not in the sync: it carries llm_api_key, which
    # the tolerant reader strips. Listed so probe can report on it.
    Endpoint(
        "agent_settings",
        "/v1/ai-agent/chatbot_ai_settings/{project_id}/{chatbot_id}",
        single=True,
        parent="chatbots",
        optional=True,
    ),
    Endpoint("account_details", "/v1/account/details", single=True, optional=True),
    Endpoint("account_limit", "/v1/account/limit", single=True, optional=True),
    Endpoint("licenses", "/v1/license", items_key="licenses", optional=True),
)

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in _ALL}
