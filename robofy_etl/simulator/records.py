"""The simulator's records: the account's entities and activity, as the dataset serves them.

Records are frozen dataclasses with snake_case canonical names; datetimes are naive UTC, whole
seconds. ``Chatbot.llm_api_key`` is a fake secret served by the API so the client's secret stripping
is exercised; it is not part of ground-truth comparisons. ``Scale`` sizes a simulated account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

__all__ = ["SCALES", "Chatbot", "Lead", "Message", "Project", "Scale", "Session", "Stat"]


@dataclass(frozen=True)
class Scale:
    """Size of a simulated account.

    Attributes:
        name: the scale's name.
        projects: number of projects.
        chatbots: number of chatbots, spread over the projects.
        days: default window length in days.
        sessions: target number of sessions over ``days`` days (all chatbots together).
        idle_chatbots: chatbots with no traffic at all.
    """

    name: str
    projects: int
    chatbots: int
    days: int
    sessions: int
    idle_chatbots: int = 0


SCALES: Mapping[str, Scale] = {
    "tiny": Scale("tiny", projects=1, chatbots=2, days=7, sessions=60),
    "small": Scale("small", projects=2, chatbots=4, days=14, sessions=600),
    "medium": Scale("medium", projects=3, chatbots=12, days=30, sessions=6000, idle_chatbots=1),
    "large": Scale("large", projects=5, chatbots=60, days=30, sessions=30000, idle_chatbots=5),
}


@dataclass(frozen=True, slots=True)
class Project:
    """A Robofy project (E1/E2)."""

    id: int
    name: str
    description: str
    website_url: str
    timezone: str
    created_on: datetime
    updated_on: datetime
    utc_offset_minutes: int = 0  # fixed offset of ``timezone`` (no DST zones are used)


@dataclass(frozen=True, slots=True)
class Chatbot:
    """A chatbot / agent (E3/E4). ``llm_api_key`` is a fake secret, not ground truth."""

    chatbot_id: str
    project_id: int
    name: str
    description: str
    type: int
    access_type: int
    avatar_url: str
    llm_source: int
    language: str
    is_ready: bool
    file_usage: int
    link_usage: int
    storage_size: int
    created_on: datetime
    updated_on: datetime
    llm_api_key: str


@dataclass(frozen=True, slots=True)
class Message:
    """One transcript message (E6).

    ``parts`` are ``{type, text, data: {time, context_id, website_url}}`` dicts with ``data.time``
    a naive UTC datetime; ``sent_at`` is the first part's time.
    """

    chatbot_id: str
    session_id: str
    id: str
    role: str
    parts: tuple[dict[str, Any], ...]
    ordinal: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    """An inbox session as listed at the current clock (E5); ``message_count`` is not served."""

    chatbot_id: str
    session_id: str
    project_id: int
    created_on: datetime
    last_message_time: datetime
    last_message: str
    last_message_direction: str
    user_profile_name: str | None
    website_url: str | None
    status: str
    platform: str
    message_count: int


@dataclass(frozen=True, slots=True)
class Lead:
    """A captured lead (E7). ``lead_data`` items are ``{field_name, field_type, field_value}``."""

    id: str
    project_id: int
    chatbot_id: str
    session_id: str | None
    created_at: datetime
    source: str
    page_url: str | None
    ip_address: str | None
    lead_data: tuple[dict[str, str], ...]


@dataclass(frozen=True, slots=True)
class Stat:
    """One day of message statistics for one chatbot (E8)."""

    project_id: int
    chatbot_id: str
    date: date
    total_messages: int
    user_messages: int
    ai_messages: int
    sessions: int
    leads: int
    failed_messages: int
