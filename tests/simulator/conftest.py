"""Shared fixtures: a fresh tiny simulator on loopback and a plain httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from robofy_etl.simulator import Simulator, SimulatorConfig, serve
from tests.simulator._helpers import END


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A fresh tiny simulator (function scope: tests may move its clock or change variants)."""
    with serve(SimulatorConfig(scale="tiny", seed=1, end=END)) as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10.0) as c:
        yield c
