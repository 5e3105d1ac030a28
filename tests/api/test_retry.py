"""Retry rules: what is retried, how often, and exactly how long the client waits in between.

Sleep is injected (recorded, never slept) and jitter is 0 unless a test is about jitter, so
every delay is asserted exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from robofy_etl.api import (
    RetryPolicy,
    RobofyAuthError,
    RobofyClient,
    RobofyContractError,
    RobofyError,
    RobofyNotFoundError,
    RobofyRateLimitError,
    RobofyServerError,
    RobofyTimeoutError,
    RobofyTransportError,
)
from robofy_etl.api.retry import backoff_delay, parse_retry_after, should_retry

from .fakes import FakeRobofy, envelope

PATH = "/v1/ai-agent/inbox/sessions/bot1"
SESSIONS = [{"session_id": "s1"}]

# failure kind -> (headers sent with it, error raised once attempts run out)
KINDS: dict[int | str, tuple[dict[str, str], type[RobofyError]]] = {
    408: ({}, RobofyServerError),
    429: ({}, RobofyRateLimitError),
    "429-retry-after": ({"Retry-After": "7"}, RobofyRateLimitError),
    500: ({}, RobofyServerError),
    502: ({}, RobofyServerError),
    503: ({}, RobofyServerError),
    504: ({}, RobofyServerError),
    "connect": ({}, RobofyTransportError),
    "read_timeout": ({}, RobofyTimeoutError),
    "remote_protocol": ({}, RobofyTransportError),
    "reset": ({}, RobofyTransportError),
    "invalid_json": ({}, RobofyContractError),
}


def _queue(fake: FakeRobofy, kind: int | str, times: int) -> None:
    headers = KINDS[kind][0]
    fault = 429 if kind == "429-retry-after" else kind
    fake.fail(PATH, fault, times, headers=headers)


def _expected_delays(kind: int | str, failures: int) -> list[float]:
    if kind == "429-retry-after":
        return [7.0] * failures
    return [0.5 * 2**i for i in range(failures)]


@pytest.mark.parametrize("failures", [0, 1, 4])
@pytest.mark.parametrize("kind", list(KINDS))
def test_retries_then_succeeds_with_exact_delays(
    fake: FakeRobofy, client: RobofyClient, sleeps: list[float], kind: int | str, failures: int
) -> None:
    fake.add(PATH, envelope(SESSIONS, "sessions"))
    _queue(fake, kind, failures)

    items = list(client.iter_items("sessions", chatbot_id="bot1"))

    assert items == SESSIONS
    assert fake.calls(PATH) == failures + 1
    assert sleeps == _expected_delays(kind, failures)
    stats = client.stats()["sessions"]
    assert (stats.requests, stats.retries, stats.errors) == (failures + 1, failures, failures)


@pytest.mark.parametrize("kind", list(KINDS))
def test_exhausted_retries_raise_the_matching_error(
    fake: FakeRobofy, client: RobofyClient, sleeps: list[float], kind: int | str
) -> None:
    fake.add(PATH, envelope(SESSIONS, "sessions"))
    _queue(fake, kind, 5)

    with pytest.raises(KINDS[kind][1]) as caught:
        list(client.paginate("sessions", chatbot_id="bot1"))

    assert fake.calls(PATH) == 5
    assert sleeps == _expected_delays(kind, 4)
    assert PATH in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, RobofyError),
        (401, RobofyAuthError),
        (403, RobofyAuthError),
        (404, RobofyNotFoundError),
    ],
)
def test_client_errors_are_attempted_exactly_once(
    fake: FakeRobofy, client: RobofyClient, sleeps: list[float], status: int, error: type
) -> None:
    fake.add(PATH, envelope(SESSIONS, "sessions"))
    fake.fail(PATH, status, 3)

    with pytest.raises(error) as caught:
        list(client.paginate("sessions", chatbot_id="bot1"))

    assert fake.calls(PATH) == 1
    assert sleeps == []
    assert caught.value.status == status


def test_rate_limit_counts_429s(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add(PATH, envelope(SESSIONS, "sessions"))
    fake.fail(PATH, 429, 2)
    fake.fail(PATH, 503, 1)
    list(client.paginate("sessions", chatbot_id="bot1"))
    assert client.stats()["sessions"].rate_limited == 2


def test_retry_after_is_capped(
    fake: FakeRobofy, make_client: Callable[..., RobofyClient], sleeps: list[float]
) -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0.0, max_retry_after=60.0)
    api = make_client(retry=policy)
    fake.add(PATH, envelope(SESSIONS, "sessions"))
    fake.fail(PATH, 429, 1, headers={"Retry-After": "3600"})
    fake.fail(PATH, 503, 1, headers={"Retry-After": "2.5"})
    list(api.paginate("sessions", chatbot_id="bot1"))
    assert sleeps == [60.0, 2.5]


def test_exhausted_rate_limit_suggests_lowering_concurrency(
    fake: FakeRobofy, client: RobofyClient
) -> None:
    fake.fail(PATH, 429, 5, headers={"Retry-After": "1"})
    with pytest.raises(RobofyRateLimitError) as caught:
        list(client.paginate("sessions", chatbot_id="bot1"))
    assert "ROBOFY_MAX_IN_FLIGHT" in str(caught.value)
    assert "ROBOFY_MAX_RPS" in str(caught.value)
    assert caught.value.retry_after == 1.0


def test_non_retriable_transport_error_is_not_retried(
    make_client: Callable[..., RobofyClient], sleeps: list[float]
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.UnsupportedProtocol("no such scheme", request=request)

    api = make_client(handler=handler)
    with pytest.raises(RobofyTransportError, match="ROBOFY_BASE_URL"):
        api.get_one("project", project_id=1)
    assert len(calls) == 1
    assert sleeps == []


# -- the pure helpers ----------------------------------------------------------------------


class _FixedRng(random.Random):
    def __init__(self, values: list[float]) -> None:
        super().__init__(0)
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)


@pytest.mark.parametrize(
    ("attempt", "rng_value", "expected"),
    [
        (1, 0.5, 0.5),  # factor 1.0
        (1, 0.0, 0.375),  # factor 0.75
        (2, 1.0, 1.25),  # factor 1.25
        (3, 0.5, 2.0),
        (10, 0.5, 30.0),  # 0.5 * 2**9 = 256, capped at 30
        (10, 0.0, 22.5),  # cap, then jitter
    ],
)
def test_backoff_delay_is_exponential_with_multiplicative_jitter(
    attempt: int, rng_value: float, expected: float
) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=30.0, jitter=0.25)
    assert backoff_delay(attempt, policy, _FixedRng([rng_value])) == pytest.approx(expected)


def test_backoff_delay_prefers_retry_after_without_jitter() -> None:
    policy = RetryPolicy(jitter=0.25, max_retry_after=120.0)
    assert backoff_delay(1, policy, _FixedRng([0.0]), retry_after=9.0) == 9.0
    assert backoff_delay(1, policy, _FixedRng([0.0]), retry_after=500.0) == 120.0


def test_seeded_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=0.25)
    rng = random.Random(42)
    delays = [backoff_delay(1, policy, rng) for _ in range(200)]
    assert min(delays) >= 0.75
    assert max(delays) <= 1.25
    assert len(set(delays)) > 100  # jitter actually varies


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (501, False),
        (httpx.ConnectError("x"), True),
        (httpx.ReadTimeout("x"), True),
        (httpx.PoolTimeout("x"), True),
        (httpx.RemoteProtocolError("x"), True),
        (httpx.ReadError("x"), True),
        (httpx.ProxyError("x"), True),
        (ValueError("bad json"), True),
        (httpx.UnsupportedProtocol("x"), False),
        (httpx.LocalProtocolError("x"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_should_retry(value: int | BaseException, expected: bool) -> None:
    # The client's request loop decides with this function (issue 10: it used to inline a copy
    # of the rule, so this table tested nothing the client ran).
    assert should_retry(value) is expected


def test_retry_policy_is_frozen_and_validated() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert policy.retry_statuses == frozenset({408, 429, 500, 502, 503, 504})
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)
