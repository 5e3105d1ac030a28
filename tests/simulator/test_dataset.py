"""The ground truth: deterministic, sized as documented, realistic, and internally consistent.

The pipeline's end-to-end tests compare the warehouse with ``sim.dataset``, so the dataset has to
be right on its own: stats must agree with the transcripts, and moving the clock must only touch
what the plan says it touches.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import pytest

from robofy_etl.simulator import SCALES, Dataset, full_sync_requests
from tests.simulator._helpers import END


def _snapshot(ds: Dataset) -> tuple[object, ...]:
    return (ds.projects, ds.chatbots, ds.sessions, ds.messages, ds.leads, ds.stats)


def test_same_inputs_give_the_same_dataset() -> None:
    a = Dataset.generate("small", seed=3, end=END)
    b = Dataset.generate("small", seed=3, end=END)
    assert _snapshot(a) == _snapshot(b)


def test_different_seeds_give_different_datasets() -> None:
    a = Dataset.generate("tiny", seed=1, end=END)
    b = Dataset.generate("tiny", seed=2, end=END)
    assert {c.chatbot_id for c in a.chatbots} != {c.chatbot_id for c in b.chatbots}
    assert [s.session_id for s in a.sessions] != [s.session_id for s in b.sessions]


@pytest.mark.parametrize(
    ("scale", "sessions", "messages"),
    [("tiny", (35, 100), (300, 1000)), ("small", (450, 800), (4000, 8000))],
)
def test_scale_sizes(scale: str, sessions: tuple[int, int], messages: tuple[int, int]) -> None:
    ds = Dataset.generate(scale, seed=1, end=END)
    spec = SCALES[scale]
    summary = ds.summary()
    assert len(ds.projects) == spec.projects
    assert len(ds.chatbots) == spec.chatbots
    assert sessions[0] <= summary["sessions"] <= sessions[1]
    assert messages[0] <= summary["messages"] <= messages[1]
    assert summary["messages"] == len(ds.messages)
    assert all(ds.start <= s.created_on < ds.now for s in ds.sessions)
    assert ds.now - ds.start == timedelta(days=spec.days)


def test_medium_is_the_benchmark_yardstick() -> None:
    ds = Dataset.generate("medium", seed=1, end=END)
    summary = ds.summary()
    assert (len(ds.projects), len(ds.chatbots)) == (3, 12)
    assert 5000 <= summary["sessions"] <= 7000
    assert 50_000 <= summary["messages"] <= 70_000
    requests = full_sync_requests(ds)["total"]
    assert 9000 <= requests <= 10_000
    # realism: WhatsApp share, idle chatbots, sessions spanning days, multi-part and non-text parts
    assert 0.2 <= summary["whatsapp_sessions"] / summary["sessions"] <= 0.4
    assert any(not ds.sessions_by_chatbot[c.chatbot_id] for c in ds.chatbots)
    spanning = [s for s in ds.sessions if s.last_message_time.date() > s.created_on.date()]
    assert len(spanning) > 100
    kinds = Counter(p["type"] for m in ds.messages for p in m.parts)
    assert {"text", "image", "buttons"} <= set(kinds)
    assert sum(1 for m in ds.messages if len(m.parts) > 1) > 1000
    assert 0.1 < summary["leads_without_session"] / summary["leads"] < 0.4
    field_sets = {tuple(f["field_name"] for f in x.lead_data) for x in ds.leads}
    assert len(field_sets) >= 4
    # sessions cluster in business hours (of the project's timezone, mostly ahead of UTC)
    hours = Counter(s.created_on.hour for s in ds.sessions)
    assert sum(hours[h] for h in range(3, 14)) > sum(hours[h] for h in range(18, 24)) * 1.5


def test_ids_are_well_formed_and_unique() -> None:
    ds = Dataset.generate("small", seed=5, end=END)
    for c in ds.chatbots:
        assert 20 <= len(c.chatbot_id) <= 42
        assert "-" in c.chatbot_id
        assert "_" in c.chatbot_id
    keys = [(s.chatbot_id, s.session_id) for s in ds.sessions]
    assert len(keys) == len(set(keys))
    for s in ds.sessions:
        if s.platform == "whatsapp":
            assert s.session_id.isdigit()
            assert s.session_id.startswith("91")
            assert s.website_url is None
        else:
            assert len(s.session_id) == 36
            assert s.website_url
    assert len({m.id for m in ds.messages}) == len(ds.messages)
    assert len({x.id for x in ds.leads}) == len(ds.leads)


def test_sessions_agree_with_their_transcripts() -> None:
    ds = Dataset.generate("tiny", seed=1, end=END)
    for s in ds.sessions:
        messages = ds.transcript(s.chatbot_id, s.session_id)
        assert len(messages) == s.message_count > 0
        assert [m.ordinal for m in messages] == list(range(len(messages)))
        assert messages[0].sent_at == s.created_on
        assert messages[-1].sent_at == s.last_message_time < ds.now
        assert messages[-1].role == s.last_message_direction
        assert all(a.sent_at <= b.sent_at for a, b in itertools.pairwise(messages))


def test_stats_are_consistent_with_transcripts() -> None:
    ds = Dataset.generate("small", seed=2, end=END)
    cutoff = ds.now - ds.stats_lag
    for chatbot in ds.chatbots:
        cid = chatbot.chatbot_id
        messages = [m for m in ds.messages if m.chatbot_id == cid and m.sent_at < cutoff]
        stats = ds.stats_for(cid, ds.start.date(), ds.now.date())
        assert next(p.date for p in stats) == ds.start.date()
        assert stats[-1].date == ds.now.date()
        for point in stats:
            on_day = [m for m in messages if m.sent_at.date() == point.date]
            assert point.total_messages == point.user_messages + point.ai_messages == len(on_day)
            assert point.user_messages == sum(1 for m in on_day if m.role == "user")
            assert point.sessions == sum(
                1
                for s in ds.sessions_by_chatbot[cid]
                if s.created_on.date() == point.date and s.created_on < cutoff
            )
            assert point.leads == sum(
                1
                for x in ds.leads_by_chatbot[cid]
                if x.created_at.date() == point.date and x.created_at < cutoff
            )
            assert 0 <= point.failed_messages <= max(2, point.ai_messages // 10)


def test_advance_is_path_independent_and_touches_only_active_sessions() -> None:
    ds = Dataset.generate("tiny", seed=1, end=END)
    once = ds.at(ds.now + timedelta(hours=24))
    twice = ds.at(ds.now + timedelta(hours=12)).at(ds.now + timedelta(hours=24))
    assert _snapshot(once) == _snapshot(twice)

    before = {(s.chatbot_id, s.session_id): s for s in ds.sessions}
    after = {(s.chatbot_id, s.session_id): s for s in once.sessions}
    assert set(before) < set(after)  # new sessions, none lost
    changed = [k for k in before if after[k].last_message_time != before[k].last_message_time]
    assert changed, "some open session should have continued"
    for key in changed:  # open sessions continue; closed ones reopen when the visitor returns
        assert after[key].message_count > before[key].message_count
        assert after[key].last_message_time >= ds.now
        assert after[key].created_on == before[key].created_on
    unchanged = [k for k in before if k not in changed]
    assert all(after[k].message_count == before[k].message_count for k in unchanged)
    assert len(ds.at(ds.now + timedelta(hours=72)).leads) > len(ds.leads)  # ~1.3 a day in tiny


def test_overlapping_windows_share_their_sessions() -> None:
    a = Dataset.generate("tiny", seed=1, end=END)
    b = Dataset.generate("tiny", seed=1, end=END + timedelta(days=2))
    shared = {(s.session_id, s.created_on) for s in a.sessions if s.created_on >= b.start}
    assert shared <= {(s.session_id, s.created_on) for s in b.sessions}


def test_stats_are_restated_when_the_clock_moves() -> None:
    ds = Dataset.generate("tiny", seed=1, end=END.replace(hour=12))
    day = ds.now.date()
    today_before = sum(p.total_messages for p in ds.stats if p.date == day)
    later = ds.at(ds.now + timedelta(hours=6))
    today_after = sum(p.total_messages for p in later.stats if p.date == day)
    assert today_after > today_before


def test_summary_counts() -> None:
    ds = Dataset.generate("tiny", seed=1, end=END)
    summary = ds.summary()
    assert summary["sessions"] == len(ds.sessions)
    assert summary["leads"] == len(ds.leads)
    assert summary["projects"] == 1
    assert summary["chatbots"] == 2
