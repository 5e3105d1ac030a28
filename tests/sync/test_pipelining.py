"""Pipelined fetching: syncs that run at once, and transcripts fetched while work is found.

``run_together`` runs a window's syncs concurrently; ``Prefetch`` feeds the client's fan-out
while the caller is still finding tasks. Both hand errors back to the caller instead of losing
them, and leave no thread behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from robofy_etl.api import ClientConfig, RobofyClient
from robofy_etl.sync.prefetch import Prefetch
from robofy_etl.sync.together import run_together


def _never(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected: {request.url}")


@pytest.fixture
def api() -> Iterator[RobofyClient]:
    config = ClientConfig(base_url="https://fake", api_key="k", max_in_flight=4)
    with RobofyClient(config, transport=httpx.MockTransport(_never)) as client:
        yield client


def test_jobs_run_at_once_and_results_come_back_in_order() -> None:
    started = threading.Barrier(3, timeout=10)  # every job must be running at the same time

    def job(value: str) -> str:
        started.wait()
        return value

    assert run_together([lambda: job("a"), lambda: job("b"), lambda: job("c")]) == ["a", "b", "c"]


def test_a_failing_job_is_returned_and_the_others_still_finish() -> None:
    finished: list[str] = []

    def fails() -> str:
        raise ValueError("leads broke")

    def works() -> str:
        finished.append("stats")
        return "stats"

    results = run_together([works, fails, works])
    assert results[0] == "stats"
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "leads broke"
    assert results[2] == "stats"
    assert finished == ["stats", "stats"]


def test_prefetch_fetches_tasks_put_before_and_after_the_rest_is_known(api: RobofyClient) -> None:
    with Prefetch[int, int](api, lambda n: n * n) as prefetch:
        prefetch.put([1, 2])  # early tasks: fetched while the caller goes on
        prefetch.put([2, 3, 4])  # 2 is already queued: not fetched twice
        prefetch.close()
        results = dict(prefetch.results())
    assert results == {1: 1, 2: 4, 3: 9, 4: 16}
    assert prefetch.fed == {1, 2, 3, 4}


def test_prefetch_hands_an_error_of_a_task_to_the_caller(api: RobofyClient) -> None:
    def fn(n: int) -> int:
        if n == 3:
            raise PermissionError("401: wrong key")
        return n

    with Prefetch[int, int](api, fn) as prefetch:
        prefetch.put(range(5))
        prefetch.close()
        with pytest.raises(PermissionError, match="wrong key"):
            list(prefetch.results())


def test_prefetch_refuses_tasks_after_close_and_stops_when_left_early(api: RobofyClient) -> None:
    release = threading.Event()

    def slow(n: int) -> int:
        release.wait(10)
        return n

    before = threading.active_count()
    with Prefetch[int, int](api, slow) as prefetch:
        prefetch.put(range(100))
        prefetch.close()
        with pytest.raises(RuntimeError, match="closed"):
            prefetch.put([100])
        release.set()  # leave without reading the results: the fan-out stops
    assert threading.active_count() == before
