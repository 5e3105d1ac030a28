"""Generation of the simulated account: entities, then each (chatbot, UTC day) of activity.

``dataset.py`` explains the model (a plan generated per chatbot and day from a seeded generator,
viewed at a clock value); this module builds the plan, ``Dataset`` is the view of it.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from robofy_etl.simulator.records import SCALES, Chatbot, Lead, Message, Project, Scale

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Content pools (kept small: realism comes from combination and timing, not volume)

_TIMEZONES = (
    ("Asia/Kolkata", 330),
    ("Asia/Dubai", 240),
    ("America/Sao_Paulo", -180),
    ("Asia/Singapore", 480),
    ("Africa/Nairobi", 180),
)
_COMPANIES = (
    "Acme Dental",
    "Northwind Realty",
    "Globex Learning",
    "Initech SaaS",
    "Umbrella Travel",
)
_THEMES = ("Sales", "Support", "Booking", "Onboarding", "Billing", "FAQ", "Leads", "Concierge")
_FIRST = (
    "Aarav", "Priya", "Rahul", "Ananya", "Mohammed", "Fatima", "Lucas", "Mariana", "Wei", "Mei",
    "John", "Sarah", "Kwame", "Amina", "Diego", "Sofia", "Arjun", "Neha", "Omar", "Layla",
)  # fmt: skip
_LAST = (
    "Sharma", "Patel", "Khan", "Silva", "Costa", "Tan", "Lim", "Smith", "Mensah", "Okafor",
    "Garcia", "Rossi", "Iyer", "Nair", "Haddad",
)  # fmt: skip
_PAGES = ("/", "/pricing", "/contact", "/features", "/blog/getting-started", "/book", "/faq")
_GREETINGS = (
    "Hi there! How can I help you today?",
    "Hello! Ask me anything about our services.",
    "Welcome! I'm the virtual assistant. What brings you here?",
)
_USER_LINES = (
    "I want to know more about your pricing.",
    "Do you have any slots available this week?",
    "How do I reset my password?",
    "Can I talk to a human?",
    "What are your opening hours?",
    "Is there a free trial?",
    "Do you ship internationally?",
    "My invoice looks wrong, can you check?",
    "How long does onboarding take?",
    "Can you send me the brochure?",
    "What integrations do you support?",
    "I'd like to book a demo.",
    "Thanks, that helps!",
    "ok",
    "Where are you located?",
    "Can I change my booking to Friday?",
    "What payment methods do you accept?",
    "Is my data stored securely?",
)
_ASSISTANT_LINES = (
    "Our plans start at $29 per month; the Growth plan adds WhatsApp and lead forms.",
    "Sure! We have openings on Tuesday at 10:00 and Thursday at 15:30.",
    "You can reset it from the login page: click 'Forgot password' and follow the email.",
    "I'll connect you with a team member. Could you share your email first?",
    "We're open Monday to Friday, 9:00 to 18:00 local time.",
    "Yes, every plan comes with a 14-day free trial, no card required.",
    "We ship to over 40 countries; delivery usually takes 5-7 business days.",
    "I'm sorry about that. Could you share the invoice number so I can look into it?",
    "Most teams are fully onboarded within two weeks.",
    "Of course, I've sent the brochure to the email you provided.",
    "We integrate with HubSpot, Salesforce, Zapier and Google Sheets.",
    "Great! Please pick a time that suits you and I'll send a calendar invite.",
    "You're welcome! Is there anything else I can help with?",
    "Our office is in the city centre, next to the central station.",
    "Done, your booking has been moved to Friday at the same time.",
    "We accept cards, bank transfer and UPI.",
    "Yes, data is encrypted at rest and in transit, and stored in the EU.",
)
_CAPTIONS = (None, None, "Here is a screenshot", "photo of the receipt")
_BUTTONS = "Book a demo | See pricing | Talk to sales"
_FORMS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("name", "text"), ("email", "email"), ("phone", "phone")),
    (("name", "text"), ("email", "email"), ("company", "text"), ("team_size", "number")),
    (("name", "text"), ("phone", "phone")),
    (("email", "email"),),
    (("name", "text"), ("email", "email"), ("phone", "phone"), ("company", "text"),
     ("message", "textarea")),
)  # fmt: skip
# Relative session starts per local hour: business hours for the web, evenings too on WhatsApp.
_WEB_HOURS = (1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 3, 5, 6, 6.5, 6, 6, 6.5, 6, 5.5, 4.5, 3.5, 3,
              2.8, 2.5, 2, 1.5)  # fmt: skip
_WA_HOURS = (1, 0.6, 0.4, 0.3, 0.3, 0.4, 1, 2, 3, 4, 4.5, 5, 5, 4.5, 4.5, 4.5, 4.5, 4.5, 5, 5.5,
             5.5, 5, 3.5, 2)  # fmt: skip
_WEEKDAY_FACTOR = (1.15, 1.15, 1.15, 1.15, 1.15, 0.62, 0.62)
_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _cumulative(weights: Iterable[float]) -> list[float]:
    out: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


_WEB_CUM = _cumulative(_WEB_HOURS)
_WA_CUM = _cumulative(_WA_HOURS)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    """``rng.choice`` without its overhead (generation calls it ~10 times per message)."""
    return seq[int(rng.random() * len(seq))]


def _randint(rng: random.Random, a: int, b: int) -> int:
    """``rng.randint`` without its overhead."""
    return a + int(rng.random() * (b - a + 1))


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string from ``rng`` (as ``str(uuid.UUID(int=bits, version=4))``)."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _opaque_id(rng: random.Random) -> str:
    n = _randint(rng, 22, 42)
    chars = [_pick(rng, _URLSAFE) for _ in range(n)]
    i, j = rng.sample(range(1, n - 1), 2)
    chars[i], chars[j] = "-", "_"
    return "".join(chars)


def _day_start(day_ordinal: int) -> datetime:
    return datetime.fromordinal(day_ordinal)


# --------------------------------------------------------------------------------------------
# Static entities and per-chatbot generation parameters


@dataclass(frozen=True, slots=True)
class _BotProfile:
    """Generation parameters of one chatbot (not served)."""

    index: int
    chatbot: Chatbot
    project: Project
    rate: float  # mean sessions per day
    whatsapp_share: float
    turn_mean: float
    forms: tuple[int, ...]
    phone_prefix: str
    failed_pct: int


@dataclass(slots=True)
class _Plan:
    """A session as planned in full (all future messages included)."""

    profile: _BotProfile
    session_id: str
    platform: str
    created_on: datetime
    user_profile_name: str | None
    website_url: str | None
    idle: timedelta
    msg_prefix: str
    messages: list[Message]  # only ever appended to (a return visit), never rewritten
    times: list[datetime]
    lead: Lead | None = None

    def add(self, rng: random.Random, role: str, when: datetime, text: str) -> None:
        ordinal = len(self.messages)
        self.messages.append(
            Message(
                chatbot_id=self.profile.chatbot.chatbot_id,
                session_id=self.session_id,
                id=f"{self.msg_prefix}{ordinal:03d}",
                role=role,
                parts=_parts(rng, role, when, text, self.website_url),
                ordinal=ordinal,
                sent_at=when,
            )
        )
        self.times.append(when)


class _World:
    """The generated plan of one simulated account: entities plus per-day activity."""

    def __init__(self, scale: Scale, seed: int, start: datetime) -> None:
        self.scale = scale
        self.seed = seed
        self.start = start
        self.deleted_chatbots: set[str] = set()
        self.deleted_projects: set[int] = set()
        self.profiles: list[_BotProfile] = []
        self.projects: list[Project] = []
        self.plans: dict[str, list[_Plan]] = {}
        self.form_leads: dict[str, list[Lead]] = {}
        self._next_day = start.toordinal()
        self._make_entities()

    # -- entities ------------------------------------------------------------------------------
    def _make_entities(self) -> None:
        scale, rng = self.scale, random.Random(f"{self.seed}:entities")
        base_id = _randint(rng, 3, 60)
        for p in range(scale.projects):
            tz, offset = _TIMEZONES[(p + rng.randrange(len(_TIMEZONES))) % len(_TIMEZONES)]
            if p == 0:
                tz, offset = _TIMEZONES[0]
            company = _COMPANIES[p % len(_COMPANIES)]
            slug = company.lower().replace(" ", "-")
            created = self.start - timedelta(
                days=_randint(rng, 120, 700), seconds=_randint(rng, 0, 86399)
            )
            self.projects.append(
                Project(
                    id=base_id + p * _randint(rng, 1, 9) + p,
                    name=company if p < len(_COMPANIES) else f"{company} {p}",
                    description=f"Customer conversations for {company}.",
                    website_url=f"https://www.{slug}.example",
                    timezone=tz,
                    created_on=created,
                    updated_on=created + timedelta(days=_randint(rng, 1, 100)),
                    utc_offset_minutes=offset,
                )
            )
        weights = [rng.uniform(0.4, 1.6) for _ in range(scale.chatbots)]
        idle = set(range(scale.chatbots - scale.idle_chatbots, scale.chatbots))
        total_w = sum(w for i, w in enumerate(weights) if i not in idle)
        per_day = scale.sessions / scale.days
        for i in range(scale.chatbots):
            project = self.projects[i % scale.projects]
            created = max(project.created_on, self.start - timedelta(days=_randint(rng, 40, 300)))
            created += timedelta(seconds=_randint(rng, 0, 86399))
            # tiny: chatbot 0 is web only, chatbot 1 also has WhatsApp (~30% of all sessions)
            has_wa = i % 2 == 1
            chatbot = Chatbot(
                chatbot_id=_opaque_id(rng),
                project_id=project.id,
                name=f"{project.name} {_THEMES[i % len(_THEMES)]} Assistant",
                description=f"Answers {_THEMES[i % len(_THEMES)].lower()} questions.",
                type=_pick(rng, (1, 2, 2, 3)),
                access_type=_pick(rng, (0, 0, 1)),
                avatar_url=f"https://cdn.robofy.example/avatars/{i:03d}.png",
                llm_source=_pick(rng, (0, 0, 1, 2)),
                language=_pick(rng, ("en", "en", "en", "hi", "ar", "pt", "es")),
                is_ready=i not in idle or rng.random() < 0.5,
                file_usage=_randint(rng, 0, 40),
                link_usage=_randint(rng, 0, 200),
                storage_size=_randint(rng, 10_000, 80_000_000),
                created_on=created,
                updated_on=created
                + timedelta(days=_randint(rng, 0, 30), seconds=_randint(rng, 0, 86399)),
                llm_api_key=f"sk-sim-{rng.getrandbits(128):032x}",
            )
            self.profiles.append(
                _BotProfile(
                    index=i,
                    chatbot=chatbot,
                    project=project,
                    rate=0.0 if i in idle else per_day * weights[i] / total_w,
                    whatsapp_share=0.6 if has_wa else 0.0,
                    turn_mean=rng.uniform(3.4, 4.4),
                    forms=tuple(rng.sample(range(len(_FORMS)), 2)),
                    phone_prefix=_pick(rng, ("9198", "9197", "9199", "9187")),
                    failed_pct=_randint(rng, 0, 3),
                )
            )
            self.plans[chatbot.chatbot_id] = []
            self.form_leads[chatbot.chatbot_id] = []

    # -- activity ------------------------------------------------------------------------------
    def ensure(self, now: datetime) -> None:
        """Generate every day up to and including the day of ``now``."""
        last = now.toordinal()
        while self._next_day <= last:
            for profile in self.profiles:
                self._generate_day(profile, self._next_day)
            self._next_day += 1

    def _generate_day(self, bot: _BotProfile, day: int) -> None:
        if bot.rate <= 0:
            return
        rng = random.Random(f"{self.seed}:{bot.index}:{day}")
        day_start = _day_start(day)
        lam = bot.rate * _WEEKDAY_FACTOR[day_start.weekday()]
        n = _poisson(rng, lam)
        offset_s = bot.project.utc_offset_minutes * 60
        starts = []
        for _ in range(n):
            wa = rng.random() < bot.whatsapp_share
            cum = _WA_CUM if wa else _WEB_CUM
            hour = bisect_left(cum, rng.random() * cum[-1])
            sec = (hour * 3600 + rng.randrange(3600) - offset_s) % 86400
            starts.append((sec, wa))
        starts.sort()
        plans = self.plans[bot.chatbot.chatbot_id]
        for idx, (sec, wa) in enumerate(starts):
            created = day_start + timedelta(seconds=sec)
            # planned even when outside the window, so the random stream (and every later
            # session of the day) does not depend on where the window starts
            plan = self._plan_session(rng, bot, day, idx, created, wa)
            if created >= self.start:
                plans.append(plan)
        self._return_visits(rng, bot, day, lam)
        # leads captured by a plain web form, without a chat session
        leads = self.form_leads[bot.chatbot.chatbot_id]
        for j in range(_poisson(rng, lam * 0.03)):
            hour = bisect_left(_WEB_CUM, rng.random() * _WEB_CUM[-1])
            sec = (hour * 3600 + rng.randrange(3600) - offset_s) % 86400
            created = day_start + timedelta(seconds=sec)
            lead = self._lead(
                rng, bot, f"lead_{bot.index:02x}{day:06x}f{j:03x}", None, created, "form", None
            )
            if created >= self.start:
                leads.append(lead)
        leads.sort(key=lambda x: x.created_at)

    def _plan_session(
        self, rng: random.Random, bot: _BotProfile, day: int, idx: int, created: datetime, wa: bool
    ) -> _Plan:
        project = bot.project
        if wa:
            # unique per chatbot: a bijection of (day, index) onto 8 digits
            n = ((day % 10000) * 10000 + idx) * 7919361 % 100_000_000
            session_id = f"{bot.phone_prefix}{n:08d}"
            website_url = None
            name = f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}" if rng.random() < 0.85 else None
            idle = timedelta(hours=24)
            returns = rng.choices((0, 1, 2, 3), (0.2, 0.35, 0.3, 0.15))[0]
        else:
            session_id = _uuid4(rng)
            website_url = project.website_url + _pick(rng, _PAGES)
            name = f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}" if rng.random() < 0.25 else None
            idle = timedelta(minutes=30)
            returns = 1 if rng.random() < 0.25 else 0
        turns = min(30, 1 + int(rng.expovariate(1.0 / bot.turn_mean)))
        # the visitor comes back later (hours or days) before these turns
        gaps: dict[int, int] = {}
        for k in rng.sample(range(1, turns), min(returns, turns - 1)):
            gaps[k] = (
                _randint(rng, 3600, 8 * 3600)
                if rng.random() < 0.4
                else _randint(rng, 12, 96) * 3600
            )
        plan = _Plan(
            profile=bot,
            session_id=session_id,
            platform="whatsapp" if wa else "web",
            created_on=created,
            user_profile_name=name,
            website_url=website_url,
            idle=idle,
            msg_prefix=f"msg_{bot.index:02x}{day:06x}{idx:04x}",
            messages=[],
            times=[],
        )
        messages = plan.messages
        t = created

        def add(role: str, when: datetime, text: str) -> None:
            plan.add(rng, role, when, text)

        if not wa and rng.random() < 0.55:
            add("assistant", t, _pick(rng, _GREETINGS))
            t += timedelta(seconds=_randint(rng, 3, 40))
        for k in range(turns):
            if k:
                t += timedelta(seconds=min(900, int(rng.lognormvariate(3.6, 0.8))))
            if k in gaps:
                t += timedelta(seconds=gaps[k])
            add("user", t, _pick(rng, _USER_LINES))
            if k == turns - 1 and rng.random() < 0.12:
                break  # the visitor's last question was never answered
            t += timedelta(seconds=_randint(rng, 2, 14))
            add("assistant", t, _pick(rng, _ASSISTANT_LINES))
            if rng.random() < 0.08:
                t += timedelta(seconds=_randint(rng, 1, 4))
                add("assistant", t, _pick(rng, _ASSISTANT_LINES))
        lead = None
        if rng.random() < (0.08 if wa else 0.12):
            users = [m for m in messages if m.role == "user"]
            anchor = _pick(rng, users).sent_at + timedelta(seconds=_randint(rng, 5, 60))
            source = "whatsapp" if wa else "chatbot"
            lead = self._lead(
                rng, bot, f"lead_{bot.index:02x}{day:06x}{idx:04x}", session_id, anchor, source,
                website_url, name,
            )  # fmt: skip
        plan.lead = lead
        return plan

    def _return_visits(self, rng: random.Random, bot: _BotProfile, day: int, lam: float) -> None:
        """Visitors who come back to an earlier, finished conversation on this day (at least one
        a day per active chatbot, so any 24 h of clock movement touches existing sessions)."""
        day_start = _day_start(day)
        since = day_start - timedelta(days=5)
        plans = self.plans[bot.chatbot.chatbot_id]
        candidates = []
        for plan in reversed(plans):
            if plan.created_on < since:
                break
            if plan.created_on < day_start and plan.times[-1] < day_start - timedelta(hours=1):
                candidates.append(plan)
        offset_s = bot.project.utc_offset_minutes * 60
        for _ in range(max(1, _poisson(rng, lam * 0.06)) if candidates else 0):
            plan = _pick(rng, candidates)
            hour = bisect_left(_WA_CUM, rng.random() * _WA_CUM[-1])
            t = day_start + timedelta(
                seconds=(hour * 3600 + rng.randrange(3600) - offset_s) % 86400
            )
            if t <= plan.times[-1] + timedelta(hours=1):
                continue  # that visitor already came back today
            for _turn in range(_randint(rng, 1, 2)):
                plan.add(rng, "user", t, _pick(rng, _USER_LINES))
                t += timedelta(seconds=_randint(rng, 2, 14))
                plan.add(rng, "assistant", t, _pick(rng, _ASSISTANT_LINES))
                t += timedelta(seconds=min(900, int(rng.lognormvariate(3.6, 0.8))))

    def _lead(
        self,
        rng: random.Random,
        bot: _BotProfile,
        lead_id: str,
        session_id: str | None,
        created: datetime,
        source: str,
        page_url: str | None,
        name: str | None = None,
    ) -> Lead:
        first, last = (name or f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}").split(" ", 1)
        if source == "whatsapp":
            form: tuple[tuple[str, str], ...] = (("name", "text"), ("phone", "phone"))
            phone = f"+{session_id}"
            ip = None
        else:
            form = _FORMS[_pick(rng, bot.forms)]
            phone = f"+91 9{rng.randrange(10**9):09d}"
            octets = (
                _randint(rng, 11, 223),
                _randint(rng, 0, 255),
                _randint(rng, 0, 255),
                _randint(rng, 1, 254),
            )
            ip = ".".join(map(str, octets))
            if page_url is None:
                page_url = bot.project.website_url + _pick(rng, ("/contact", "/book", "/pricing"))
        values = {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{_randint(rng, 1, 99)}@mail.example",
            "phone": phone,
            "company": f"{last} {_pick(rng, ('Labs', 'Traders', 'Clinic', 'Group'))}",
            "team_size": str(_pick(rng, (3, 10, 25, 80, 250))),
            "message": _pick(rng, ("Please call me back.", "Need a quote for 20 seats.", "")),
        }
        return Lead(
            id=lead_id,
            project_id=bot.project.id,
            chatbot_id=bot.chatbot.chatbot_id,
            session_id=session_id,
            created_at=created,
            source=source,
            page_url=page_url,
            ip_address=ip,
            lead_data=tuple(
                {"field_name": fname, "field_type": ftype, "field_value": values[fname]}
                for fname, ftype in form
            ),
        )

    # -- views ---------------------------------------------------------------------------------
    def live_profiles(self) -> list[_BotProfile]:
        return [
            p
            for p in self.profiles
            if p.chatbot.chatbot_id not in self.deleted_chatbots
            and p.project.id not in self.deleted_projects
        ]


def _parts(
    rng: random.Random, role: str, when: datetime, text: str, website_url: str | None
) -> tuple[dict[str, Any], ...]:
    ctx = f"ctx_{rng.getrandbits(40):010x}" if role == "assistant" else None
    r = rng.random()

    def part(kind: str, body: str | None, at: datetime) -> dict[str, Any]:
        return {
            "type": kind,
            "text": body,
            "data": {"time": at, "context_id": ctx, "website_url": website_url},
        }

    if role == "user":
        if r < 0.03:
            return (part("image", _pick(rng, _CAPTIONS), when),)
        if r < 0.07:
            return (part("text", text, when), part("text", "Also, one more thing.", when))
        return (part("text", text, when),)
    if r < 0.06:
        return (part("text", text, when), part("buttons", _BUTTONS, when))
    if r < 0.12:
        later = when + timedelta(seconds=1)
        return (part("text", text, when), part("text", "Anything else I can help with?", later))
    return (part("text", text, when),)


def message_text(message: Message) -> str:
    """The preview text of a message, as a session's ``last_message`` shows it."""
    for part in message.parts:
        if part["text"]:
            return str(part["text"])
    return f"[{message.parts[0]['type']}]"


def _default_end(end: datetime | None) -> datetime:
    if end is not None:
        if end.tzinfo is not None:
            raise ValueError("end must be a naive UTC datetime")
        return end.replace(microsecond=0)
    return datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)


def _new_world(scale: str, seed: int, end: datetime | None, days: int | None) -> _World:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    spec = SCALES[scale]
    n_days = spec.days if days is None else days
    if n_days < 1:
        raise ValueError("days must be >= 1")
    return _World(spec, seed, _default_end(end) - timedelta(days=n_days))


def new_world(scale: str, seed: int, end: datetime | None, days: int | None) -> Any:
    """Internal: the mutable plan behind a simulator (used by ``server.Simulator``)."""
    return _new_world(scale, seed, end, days)
