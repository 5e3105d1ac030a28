"""The simulator's ground truth: a seeded, deterministic Robofy account that evolves with a clock.

How it works
------------
Activity is generated per (chatbot, absolute UTC day) from
``random.Random("<seed>:<chatbot>:<day>")``.
A session is planned in full when its day is generated: every message it will ever have (some
continue hours or days later), the lead it may capture, and its idle timeout. A ``Dataset`` is a
*view* of that plan at a clock value ``now``: an event at time ``t`` is visible when
``start <= t < now`` (``start = end - days`` stays fixed when the clock moves). Consequences:

* same (scale, seed, end, days) -> the same dataset, object for object;
* advancing the clock by 24 h once equals advancing it by 12 h twice (the plan does not depend on
  how the clock got there), and overlapping windows of different ``end`` share their sessions;
* after an advance only sessions with a message in ``[old_now, new_now)`` change
  ``last_message_time``; a session's ``status`` may flip to ``closed`` once it has been idle for its
  timeout (30 min on the web, 24 h on WhatsApp) and nothing more is planned for it.

Records are frozen dataclasses with snake_case canonical names; datetimes are naive UTC, whole
seconds. ``Chatbot.llm_api_key`` is a fake secret served by the API so the client's secret stripping
is exercised; it is not part of ground-truth comparisons.

Modules: ``records.py`` (the record types and scales), ``world.py`` (the plan's generation) and
this one (``Dataset``, the view at a clock value).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from robofy_etl.simulator.records import (
    SCALES,
    Chatbot,
    Lead,
    Message,
    Project,
    Scale,
    Session,
    Stat,
)
from robofy_etl.simulator.world import (
    _default_end,
    _new_world,
    _Plan,
    _World,
    message_text,
)
from robofy_etl.simulator.world import new_world as new_world  # re-exported: server, benchmarks

__all__ = [
    "SCALES",
    "Chatbot",
    "Dataset",
    "Lead",
    "Message",
    "Project",
    "Scale",
    "Session",
    "Stat",
]

DEFAULT_STATS_LAG = timedelta(hours=2)

# --------------------------------------------------------------------------------------------
# The view


@dataclass(slots=True)
class _SessionState:
    plan: _Plan
    visible: int
    session: Session


class Dataset:
    """Ground truth of the simulated account at one clock value.

    Attributes:
        scale, seed: what generated it.
        start: first instant of the window (``end - days``); nothing earlier exists.
        now: the clock; everything strictly before it is visible.
        stats_lag: message stats only count activity older than ``now - stats_lag``.
        projects, chatbots: the live (not deleted) entities.
        sessions: every visible session (by chatbot, then creation time).
        leads: every visible lead (by chatbot, then ``created_at``).
        messages, stats: computed on first access (see the properties).
    """

    def __init__(self, world: _World, now: datetime, stats_lag: timedelta = DEFAULT_STATS_LAG):
        world.ensure(now)
        self._world = world
        self.scale = world.scale
        self.seed = world.seed
        self.start = world.start
        self.now = now
        self.stats_lag = stats_lag
        profiles = world.live_profiles()
        self._profiles = {p.chatbot.chatbot_id: p for p in profiles}
        self.projects: list[Project] = [
            p for p in world.projects if p.id not in world.deleted_projects
        ]
        self.chatbots: list[Chatbot] = [p.chatbot for p in profiles]
        self.sessions_by_chatbot: dict[str, list[Session]] = {}
        self.leads_by_chatbot: dict[str, list[Lead]] = {}
        self._states: dict[tuple[str, str], _SessionState] = {}
        for profile in profiles:
            cid = profile.chatbot.chatbot_id
            sessions: list[Session] = []
            leads: list[Lead] = []
            for plan in world.plans[cid]:
                if plan.created_on >= now:
                    break
                state = self._session_state(plan, now)
                sessions.append(state.session)
                self._states[(cid, plan.session_id)] = state
                if plan.lead is not None and plan.lead.created_at < now:
                    leads.append(plan.lead)
            leads.extend(x for x in world.form_leads[cid] if x.created_at < now)
            leads.sort(key=lambda x: (x.created_at, x.id))
            self.sessions_by_chatbot[cid] = sessions
            self.leads_by_chatbot[cid] = leads
        self.sessions: list[Session] = [s for v in self.sessions_by_chatbot.values() for s in v]
        self.leads: list[Lead] = [x for v in self.leads_by_chatbot.values() for x in v]
        self._messages: list[Message] | None = None
        self._stats: dict[str, dict[int, list[int]]] | None = None

    @staticmethod
    def _session_state(plan: _Plan, now: datetime) -> _SessionState:
        k = bisect_left(plan.times, now)
        last = plan.messages[k - 1]
        # open while the current visit goes on (the next planned message is within the idle
        # timeout) or until the idle timeout has passed since the last message
        ongoing = k < len(plan.times) and plan.times[k] - last.sent_at < plan.idle
        status = "active" if ongoing or now - last.sent_at < plan.idle else "closed"
        session = Session(
            chatbot_id=plan.profile.chatbot.chatbot_id,
            session_id=plan.session_id,
            project_id=plan.profile.project.id,
            created_on=plan.created_on,
            last_message_time=last.sent_at,
            last_message=message_text(last),
            last_message_direction=last.role,
            user_profile_name=plan.user_profile_name,
            website_url=plan.website_url,
            status=status,
            platform=plan.platform,
            message_count=k,
        )
        return _SessionState(plan, k, session)

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def generate(
        cls,
        scale: str = "tiny",
        seed: int = 1,
        end: datetime | None = None,
        days: int | None = None,
        stats_lag: timedelta = DEFAULT_STATS_LAG,
    ) -> Dataset:
        """Generate the dataset of ``scale``/``seed`` covering ``[end - days, end)``.

        ``end`` defaults to the current UTC time floored to the hour; ``days`` to the scale's.
        """
        return cls(_new_world(scale, seed, end, days), _default_end(end), stats_lag)

    def at(self, now: datetime) -> Dataset:
        """The same account viewed at another clock value (``now`` >= ``start``)."""
        return Dataset(self._world, now, self.stats_lag)

    # -- lookups -------------------------------------------------------------------------------
    def project(self, project_id: int) -> Project | None:
        return next((p for p in self.projects if p.id == project_id), None)

    def chatbot(self, chatbot_id: str) -> Chatbot | None:
        profile = self._profiles.get(chatbot_id)
        return profile.chatbot if profile else None

    def chatbots_of(self, project_id: int) -> list[Chatbot]:
        return [c for c in self.chatbots if c.project_id == project_id]

    def session(self, chatbot_id: str, session_id: str) -> Session | None:
        state = self._states.get((chatbot_id, session_id))
        return state.session if state else None

    def transcript(self, chatbot_id: str, session_id: str) -> list[Message]:
        """The visible messages of a session, in order (empty if the session is unknown)."""
        state = self._states.get((chatbot_id, session_id))
        return list(state.plan.messages[: state.visible]) if state else []

    def transcript_tuple(self, chatbot_id: str, session_id: str) -> tuple[Message, ...] | None:
        """Like ``transcript`` without copying; None if the session is unknown."""
        state = self._states.get((chatbot_id, session_id))
        return tuple(state.plan.messages[: state.visible]) if state else None

    def utc_offset_minutes(self, project_id: int) -> int:
        project = self.project(project_id)
        return project.utc_offset_minutes if project else 0

    @property
    def messages(self) -> list[Message]:
        """Every visible message (by chatbot, session, ordinal)."""
        if self._messages is None:
            out: list[Message] = []
            for state in self._states.values():
                out.extend(state.plan.messages[: state.visible])
            self._messages = out
        return self._messages

    # -- stats ---------------------------------------------------------------------------------
    def _stat_counts(self) -> dict[str, dict[int, list[int]]]:
        """Per chatbot, per day ordinal: [user, ai, sessions, leads], counting only activity
        older than ``now - stats_lag`` (late aggregation)."""
        if self._stats is None:
            cutoff = self.now - self.stats_lag
            counts: dict[str, dict[int, list[int]]] = {}
            for cid, sessions in self.sessions_by_chatbot.items():
                days: dict[int, list[int]] = {}
                for s in sessions:
                    plan = self._states[(cid, s.session_id)].plan
                    if plan.created_on < cutoff:
                        days.setdefault(plan.created_on.toordinal(), [0, 0, 0, 0])[2] += 1
                    for m in plan.messages:
                        if m.sent_at >= cutoff:
                            break
                        row = days.setdefault(m.sent_at.toordinal(), [0, 0, 0, 0])
                        row[0 if m.role == "user" else 1] += 1
                for lead in self.leads_by_chatbot[cid]:
                    if lead.created_at < cutoff:
                        days.setdefault(lead.created_at.toordinal(), [0, 0, 0, 0])[3] += 1
                counts[cid] = days
            self._stats = counts
        return self._stats

    def stats_for(self, chatbot_id: str, first: date, last: date) -> list[Stat]:
        """One point per day in ``[first, last]`` (inclusive, clipped to the clock's day)."""
        profile = self._profiles.get(chatbot_id)
        if profile is None:
            return []
        days = self._stat_counts().get(chatbot_id, {})
        last = min(last, self.now.date())
        out = []
        for day in range(first.toordinal(), last.toordinal() + 1):
            user, ai, sessions, leads = days.get(day, (0, 0, 0, 0))
            failed = ai * profile.failed_pct // 100
            failed += 1 if ai and (day * 7 + profile.index) % 5 == 0 else 0
            out.append(
                Stat(
                    project_id=profile.project.id,
                    chatbot_id=chatbot_id,
                    date=date.fromordinal(day),
                    total_messages=user + ai,
                    user_messages=user,
                    ai_messages=ai,
                    sessions=sessions,
                    leads=leads,
                    failed_messages=failed,
                )
            )
        return out

    @property
    def stats(self) -> list[Stat]:
        """Every chatbot's daily stats from the window's first day to the clock's day."""
        out: list[Stat] = []
        for chatbot in self.chatbots:
            out.extend(self.stats_for(chatbot.chatbot_id, self.start.date(), self.now.date()))
        return out

    # -- summaries -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts of everything visible, for logs, docs and tests."""
        return {
            "scale": self.scale.name,
            "seed": self.seed,
            "start": self.start.isoformat(),
            "now": self.now.isoformat(),
            "projects": len(self.projects),
            "chatbots": len(self.chatbots),
            "sessions": len(self.sessions),
            "whatsapp_sessions": sum(1 for s in self.sessions if s.platform == "whatsapp"),
            "active_sessions": sum(1 for s in self.sessions if s.status == "active"),
            "messages": sum(s.message_count for s in self.sessions),
            "leads": len(self.leads),
            "leads_without_session": sum(1 for x in self.leads if x.session_id is None),
        }
