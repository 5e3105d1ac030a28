"""The client and the probe against the built-in simulator: real HTTP on loopback, every variant.

The fake in `fakes.py` pins single behaviours; this checks that the client reads a whole
account, in each response shape the simulator can serve, and survives injected faults.
"""

from __future__ import annotations

import random

import pytest

from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient, probe
from robofy_etl.simulator import Faults, SimulatorConfig, Variants, serve

VARIANTS = {
    "documented": (Variants(), "data.sessions"),
    "camel-top-absent": (
        Variants(
            envelope="top.collection",
            keys="camel",
            chatbot_id_key="id",
            visitor_key="visitor_name",
            token_location="top",
            last_token="absent",
            timestamps="iso_z",
        ),
        "sessions",
    ),
    "data-array-empty-token": (Variants(envelope="data.array", last_token="empty"), "data[]"),
    "bare-api-key": (Variants(envelope="bare", auth_header="api-key"), "[]"),
}


def _client(sim: object, variants: Variants, sleeps: list[float]) -> RobofyClient:
    config = ClientConfig(
        base_url=sim.base_url,  # type: ignore[attr-defined]
        api_key=sim.api_key,  # type: ignore[attr-defined]
        auth_header="api-key" if variants.auth_header == "api-key" else "bearer",
        retry=RetryPolicy(max_attempts=5, jitter=0.0),
        timeout_s=5.0,
        max_in_flight=8,
    )
    return RobofyClient(config, sleep=sleeps.append, rng=random.Random(0))


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[Variants, str]:
    return VARIANTS[request.param]


def test_probe_against_simulator(variant: tuple[Variants, str]) -> None:
    variants, sessions_envelope = variant
    with serve(SimulatorConfig(scale="tiny", seed=1, variants=variants)) as sim:
        with _client(sim, variants, []) as api:
            report = probe(api)
        methods = {entry.method for entry in sim.request_log}

    assert report.ok, report
    assert methods == {"GET"}
    sessions = report.result("sessions")
    assert sessions.envelope == sessions_envelope
    assert sessions.item_count > 0
    for name in ("projects", "chatbots", "sessions", "leads", "message_stats"):
        assert report.result(name).missing == [], name
        assert report.result(name).extra == [], name


def test_reads_a_whole_account_through_faults() -> None:
    faults = Faults(rate_429=0.05, rate_5xx=0.05, rate_reset=0.03, rate_malformed=0.03, seed=7)
    variants = Variants()
    sleeps: list[float] = []
    with serve(SimulatorConfig(scale="tiny", seed=1, faults=faults, variants=variants)) as sim:
        truth = sim.dataset
        with _client(sim, variants, sleeps) as api:

            def session_ids(chatbot_id: str) -> list[str]:
                return [s["session_id"] for s in api.iter_items("sessions", chatbot_id=chatbot_id)]

            def message_ids(pair: tuple[str, str]) -> list[str]:
                chatbot_id, session_id = pair
                items = api.iter_items("transcript", chatbot_id=chatbot_id, session_id=session_id)
                return [m["id"] for m in items]

            sessions = {c.chatbot_id: session_ids(c.chatbot_id) for c in truth.chatbots}
            pairs = [(c, s) for c, ids in sessions.items() for s in ids]
            transcripts = dict(api.fan_out(pairs, message_ids))
            total = api.total_stats()

    for chatbot in truth.chatbots:
        expected = {s.session_id for s in truth.sessions_by_chatbot[chatbot.chatbot_id]}
        assert sorted(sessions[chatbot.chatbot_id]) == sorted(expected)
    for (chatbot_id, session_id), ids in transcripts.items():
        assert ids == [m.id for m in truth.transcript(chatbot_id, session_id)]
    assert total.retries > 0  # the faults were really met, and retried
    assert len(sleeps) == total.retries
