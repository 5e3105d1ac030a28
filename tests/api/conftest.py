"""Fixtures for the client tests: a fake API, and a client whose sleeps are recorded, not slept."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient

from .fakes import FakeRobofy

API_KEY = "sk-robofy-TEST-9f8e7d6c5b4a"
BASE_URL = "https://fake.robofy.test"

# No jitter, so every expected delay is exact: 0.5, 1, 2, 4 ...
EXACT_RETRY = RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=30.0, jitter=0.0)

PROXY_VARIABLES = [
    name
    for lower in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (lower, lower.upper())
]


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads proxies from the environment: a developer's own proxy settings must not
    route the loopback servers of these tests (the proxy tests set their own)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakeRobofy:
    """An empty fake API."""
    return FakeRobofy()


@pytest.fixture
def sleeps() -> list[float]:
    """Delays the client asked to sleep, in order."""
    return []


@pytest.fixture
def make_client(fake: FakeRobofy, sleeps: list[float]) -> Iterator[Callable[..., RobofyClient]]:
    """Build clients over the fake; config overrides by keyword. Closed after the test."""
    made: list[RobofyClient] = []

    def build(
        *, handler: Any = None, rng: random.Random | None = None, **overrides: Any
    ) -> RobofyClient:
        settings: dict[str, Any] = {"base_url": BASE_URL, "api_key": API_KEY, "retry": EXACT_RETRY}
        settings.update(overrides)
        client = RobofyClient(
            ClientConfig(**settings),
            transport=httpx.MockTransport(handler or fake),
            sleep=sleeps.append,
            rng=rng or random.Random(0),
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., RobofyClient]) -> RobofyClient:
    """A client with the default test settings."""
    return make_client()
