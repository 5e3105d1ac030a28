"""The client: headers, paths, single objects, stats, pacing, the in-flight cap and fan-out."""

from __future__ import annotations

import ast
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date

import httpx
import pytest

import robofy_etl
from robofy_etl.api import (
    ClientConfig,
    RetryPolicy,
    RobofyClient,
    RobofyContractError,
    RobofyNotFoundError,
)
from robofy_etl.api import client as client_module
from robofy_etl.settings import DEFAULTS, Settings

from .conftest import API_KEY, BASE_URL
from .fakes import FakeRobofy, envelope


def test_default_headers_and_bearer_auth(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.add("/v1/projects", envelope([], "projects"))
    list(client.paginate("projects"))
    request = fake.requests[0]
    assert request.method == "GET"
    assert str(request.url) == f"{BASE_URL}/v1/projects"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "api-key" not in request.headers
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == f"robofy-etl/{robofy_etl.__version__}"


def test_api_key_header_style(fake: FakeRobofy, make_client: Callable[..., RobofyClient]) -> None:
    api = make_client(auth_header="api-key")
    fake.add("/v1/projects", envelope([], "projects"))
    list(api.paginate("projects"))
    headers = fake.requests[0].headers
    assert headers["api-key"] == API_KEY
    assert "authorization" not in headers


def test_timeouts_and_pool_are_explicit(client: RobofyClient) -> None:
    http = client._http
    assert http.timeout == httpx.Timeout(30.0, connect=10.0)
    assert http.follow_redirects is False


@pytest.mark.parametrize(
    ("endpoint", "params", "raw_path"),
    [
        ("chatbots", {"project_id": 3}, "/v1/ai-agent/chatbot/3"),
        (
            "chatbot",
            {"project_id": 3, "chatbot_id": "UOmf_vR-h"},
            "/v1/ai-agent/chatbot/3/UOmf_vR-h",
        ),
        (
            "transcript",
            {"chatbot_id": "a/b c", "session_id": "+49 151/123?x#y"},
            "/v1/ai-agent/inbox/chats/a%2Fb%20c/%2B49%20151%2F123%3Fx%23y",
        ),
        ("leads", {"project_id": 3, "chatbot_id": "b%1"}, "/v1/ai-agent/leads/3/b%251"),
        ("sessions", {"chatbot_id": "../admin"}, "/v1/ai-agent/inbox/sessions/..%2Fadmin"),
    ],
)
def test_path_segments_are_url_encoded(
    fake: FakeRobofy, client: RobofyClient, endpoint: str, params: dict, raw_path: str
) -> None:
    read = client.get_one if endpoint == "chatbot" else client.iter_items
    with pytest.raises(RobofyNotFoundError):
        list(read(endpoint, **params))
    assert fake.requests[0].url.raw_path.decode() == raw_path


@pytest.mark.parametrize("bad", [True, 3.0, None, ""])
def test_path_params_must_be_str_or_int(client: RobofyClient, bad: object) -> None:
    with pytest.raises(TypeError):
        client.get_one("project", project_id=bad)


@pytest.mark.parametrize(
    ("body", "envelope_label"),
    [
        ({"message": "Success", "data": {"id": 3, "name": "Acme", "createdOn": "x"}}, "data"),
        ({"id": 3, "name": "Acme", "createdOn": "x"}, "body"),
    ],
)
def test_get_one(fake: FakeRobofy, client: RobofyClient, body: dict, envelope_label: str) -> None:
    fake.add("/v1/projects/3", body)
    page = client.fetch_one("project", project_id=3)
    assert page.envelope == envelope_label
    assert client.get_one("project", project_id=3) == {"id": 3, "name": "Acme", "created_on": "x"}


@pytest.mark.parametrize("body", [{"data": "agent_12345"}, [{"id": 3}], {"data": [1]}])
def test_get_one_rejects_non_objects(fake: FakeRobofy, client: RobofyClient, body: object) -> None:
    fake.add("/v1/projects/3", body)
    with pytest.raises(RobofyContractError, match="project"):
        client.get_one("project", project_id=3)


def test_get_one_on_a_list_endpoint_is_a_type_error(client: RobofyClient) -> None:
    with pytest.raises(TypeError, match="paginate"):
        client.get_one("projects")


def test_message_stats_sends_configured_params_end_inclusive(
    fake: FakeRobofy, make_client: Callable[..., RobofyClient]
) -> None:
    api = make_client(stats_params=("pid", "cid", "from", "to"))
    points = [
        {"date": "2026-10-01", "totalMessages": 3},
        {"date": "2026-10-07", "totalMessages": 0},
    ]
    fake.add("/v1/ai-agent/message_stats", envelope(points, "data_points"))

    result = api.message_stats(
        project_id=3, chatbot_id="abc", start=date(2026, 10, 1), end=date(2026, 10, 7)
    )

    assert result == [
        {"date": "2026-10-01", "total_messages": 3},
        {"date": "2026-10-07", "total_messages": 0},
    ]
    assert dict(fake.requests[0].url.params) == {
        "pid": "3",
        "cid": "abc",
        "from": "2026-10-01",
        "to": "2026-10-07",
    }


def test_message_stats_rejects_reversed_range(client: RobofyClient) -> None:
    with pytest.raises(ValueError, match="before"):
        client.message_stats(project_id=1, start=date(2026, 1, 2), end=date(2026, 1, 1))


def test_stats_count_requests_retries_pages_bytes(fake: FakeRobofy, client: RobofyClient) -> None:
    path = "/v1/ai-agent/inbox/sessions/b"
    fake.add_pages(path, "sessions", [[{"session_id": "1"}], [{"session_id": "2"}]])
    fake.fail(path, 429, 1)
    fake.add("/v1/projects/1", {"data": {"id": 1}})

    list(client.paginate("sessions", chatbot_id="b"))
    client.get_one("project", project_id=1)

    stats = client.stats()
    sessions = stats["sessions"]
    assert (sessions.requests, sessions.retries, sessions.rate_limited) == (3, 1, 1)
    assert (sessions.pages, sessions.errors) == (2, 1)
    assert sessions.bytes > 0
    assert stats["project"].requests == 1
    total = client.total_stats()
    assert (total.requests, total.pages) == (4, 3)
    # snapshots are copies
    stats["sessions"].requests = 99
    assert client.stats()["sessions"].requests == 3


def test_only_get_is_ever_sent() -> None:
    """The client has no way to send another method: it builds requests only with "GET"."""
    tree = ast.parse(inspect.getsource(client_module))
    http_calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_http"
    ]
    assert {node.func.attr for node in http_calls} == {"build_request", "send", "close"}  # type: ignore[attr-defined]
    built = [node for node in http_calls if node.func.attr == "build_request"]  # type: ignore[attr-defined]
    assert built
    for node in built:
        assert isinstance(node.args[0], ast.Constant)
        assert node.args[0].value == "GET"


def test_config_from_settings_carries_every_client_setting() -> None:
    """Settings validates (tests/test_settings.py); the client only takes what it says."""
    settings = Settings.from_env(
        {
            "ROBOFY_BASE_URL": "http://127.0.0.1:8080/",
            "ROBOFY_AUTH_HEADER": "api-key",
            "ROBOFY_TIMEOUT_S": "12.5",
            "ROBOFY_MAX_IN_FLIGHT": "3",
            "ROBOFY_MAX_RPS": "7",
            "ROBOFY_HTTP_TRANSPORT": "httpx",
            "ROBOFY_MAX_ATTEMPTS": "9",
            "ROBOFY_RETRY_DELAY_S": "0.25",
            "ROBOFY_NAIVE_TIMEZONE": "Asia/Kolkata",
            "ROBOFY_STATS_PARAMS": "p,c,s,e",
        }
    )
    config = ClientConfig.from_settings(settings, api_key="k", max_in_flight=2)
    assert (config.base_url, config.auth_header, config.timeout_s) == (
        "http://127.0.0.1:8080",
        "api-key",
        12.5,
    )
    assert (config.max_in_flight, config.max_requests_per_second) == (2, 7.0)
    assert config.http_transport == "httpx"
    assert (config.retry.max_attempts, config.retry.initial_delay) == (9, 0.25)
    assert (config.naive_timezone, config.stats_params) == ("Asia/Kolkata", ("p", "c", "s", "e"))


def test_config_defaults_are_the_settings_defaults() -> None:
    assert ClientConfig(api_key="k") == ClientConfig.from_settings(DEFAULTS, api_key="k")


# -- pacing and concurrency -----------------------------------------------------------------


class FakeClock:
    """A clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_spaces_requests_with_fake_clock() -> None:
    clock = FakeClock()
    fake = FakeRobofy(clock=clock)
    fake.add("/v1/projects/1", {"data": {"id": 1}})
    config = ClientConfig(base_url=BASE_URL, api_key=API_KEY, max_requests_per_second=4)
    with RobofyClient(
        config, transport=httpx.MockTransport(fake), sleep=clock.sleep, clock=clock
    ) as api:
        for _ in range(5):
            api.get_one("project", project_id=1)
    assert fake.times == [100.0, 100.25, 100.5, 100.75, 101.0]
    assert clock.sleeps == [0.25] * 4


def test_pacer_holds_across_threads_in_real_time() -> None:
    fake = FakeRobofy()
    fake.add("/v1/projects/1", {"data": {"id": 1}})
    config = ClientConfig(base_url=BASE_URL, api_key=API_KEY, max_requests_per_second=100)
    with RobofyClient(config, transport=httpx.MockTransport(fake)) as api:
        results = list(api.fan_out(range(12), lambda _: api.get_one("project", project_id=1), 6))
    assert len(results) == 12
    # Start times are reserved 1/100 s apart; thread scheduling can delay a single send, so
    # assert the rate over the whole run (the fake-clock test above checks exact spacing).
    times = sorted(fake.times)
    assert times[-1] - times[0] >= 11 * 0.01 - 0.005


def test_in_flight_cap_holds_across_threads(make_client: Callable[..., RobofyClient]) -> None:
    fake = FakeRobofy(delay=0.01)
    for i in range(4):
        fake.add_pages(f"/v1/ai-agent/inbox/chats/b/s{i}", "messages", [[{"id": "m"}]] * 3)
    api = make_client(handler=fake, max_in_flight=3)

    def transcript(i: int) -> list[dict]:
        return list(api.iter_items("transcript", chatbot_id="b", session_id=f"s{i % 4}"))

    results = list(api.fan_out(range(16), transcript, max_workers=10))

    assert len(results) == 16
    assert all(len(messages) == 3 for _, messages in results)
    assert fake.max_concurrent == 3  # reached, never exceeded


def test_fan_out_yields_every_result_once(client: RobofyClient) -> None:
    results = list(client.fan_out(range(500), lambda n: n * n, max_workers=8))
    assert sorted(task for task, _ in results) == list(range(500))
    assert all(result == task * task for task, result in results)


def test_fan_out_uses_max_in_flight_workers_by_default(
    make_client: Callable[..., RobofyClient],
) -> None:
    api = make_client(max_in_flight=3)
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=5)

    def work(_: int) -> None:
        names.add(threading.current_thread().name)
        barrier.wait()

    list(api.fan_out(range(6), work))
    assert len(names) == 3


def test_fan_out_stays_bounded_over_a_long_generator(client: RobofyClient) -> None:
    workers = 8
    lock = threading.Lock()
    produced = consumed = 0
    most_ahead = 0

    def tasks() -> Iterator[int]:
        nonlocal produced, most_ahead
        for n in range(10_000):
            with lock:
                produced += 1
                most_ahead = max(most_ahead, produced - consumed)
            yield n

    for _task, _result in client.fan_out(tasks(), lambda n: n, max_workers=workers):
        with lock:
            consumed += 1

    assert consumed == 10_000
    assert most_ahead <= 2 * workers + 1


def test_fan_out_propagates_the_first_exception_and_cancels_the_rest(client: RobofyClient) -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        if n == 20:
            raise RuntimeError("task 20 failed")
        time.sleep(0.001)
        return n

    with pytest.raises(RuntimeError, match="task 20 failed"):
        for _ in client.fan_out(range(10_000), work, max_workers=4):
            pass
    count = len(started)
    assert count < 100  # the generator was not drained
    time.sleep(0.02)
    assert len(started) == count  # nothing keeps running after the error


def test_fan_out_stops_when_the_consumer_breaks(client: RobofyClient) -> None:
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        return n

    for _task, _ in client.fan_out(range(10_000), work, max_workers=4):
        break
    count = len(started)
    assert count <= 2 * 4 + 4
    time.sleep(0.02)
    assert len(started) == count


def test_paginate_from_many_threads_on_one_client(client: RobofyClient, fake: FakeRobofy) -> None:
    for i in range(20):
        pages = [[{"session_id": f"{i}-{p}-{k}"} for k in range(3)] for p in range(4)]
        fake.add_pages(f"/v1/ai-agent/inbox/sessions/b{i}", "sessions", pages)

    def sessions(i: int) -> list[str]:
        return [s["session_id"] for s in client.iter_items("sessions", chatbot_id=f"b{i}")]

    results = dict(client.fan_out(range(20), sessions, max_workers=16))

    assert results == {i: [f"{i}-{p}-{k}" for p in range(4) for k in range(3)] for i in range(20)}
    stats = client.stats()["sessions"]
    assert (stats.requests, stats.pages) == (80, 80)


# --------------------------------------------------------------------------- fan-out interrupts
# Issue 8: Ctrl-C during a fan-out hung: the consumer waited in join() for workers that kept
# paginating (or sat in a 2-minute Retry-After backoff) long after nobody wanted their results.
# A real loopback server, slow on purpose: each transcript page takes 0.1 s and, except for
# session "quick", always has a next page, so a task that is not stopped runs until the
# server's 20 s safety stop (a hung test fails, late, instead of hanging the suite).


class _SlowPages:
    """Counts requests; `retry_after` turns every answer but "quick"'s into a 429."""

    def __init__(self) -> None:
        self.requests = 0
        self.lock = threading.Lock()
        self.retry_after: str | None = None
        self.give_up = time.monotonic() + 20.0

    def count(self) -> int:
        with self.lock:
            return self.requests


@pytest.fixture
def slow_api() -> Iterator[tuple[RobofyClient, _SlowPages]]:
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    pages = _SlowPages()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with pages.lock:
                pages.requests += 1
            url = urlsplit(self.path)
            headers = {"Content-Type": "application/json"}
            if pages.retry_after is not None and not url.path.endswith("/quick"):
                status, body = 429, {"message": "slow down"}
                headers["Retry-After"] = pages.retry_after
            else:
                time.sleep(0.1)
                number = int(parse_qs(url.query).get("nextPageToken", ["0"])[0])
                last = url.path.endswith("/quick") or time.monotonic() > pages.give_up
                token = None if last else str(number + 1)
                status = 200
                body = {"data": {"messages": [{"id": f"m{number}"}], "next_page_token": token}}
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = ClientConfig(
        base_url=f"http://127.0.0.1:{server.server_address[1]}",
        api_key=API_KEY,
        max_in_flight=4,
        retry=RetryPolicy(max_attempts=2),
    )
    with RobofyClient(config) as api:  # real sleeps: the backoff itself must be cut short
        yield api, pages
    server.shutdown()
    server.server_close()


def _transcript(api: RobofyClient) -> Callable[[str], int]:
    def fetch(session_id: str) -> int:
        return len(list(api.iter_items("transcript", chatbot_id="bot", session_id=session_id)))

    return fetch


def _fan_out_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("robofy-fan-out")]


WORKERS = 4


def _assert_stopped(pages: _SlowPages, before_stop: int) -> None:
    """The fan-out has ended: call after the generator returned, with the server's request
    count taken just before the stop. Each worker may finish the request it had sent, and
    start one more in the moment between that count and the stop, but no other: a fan-out
    that does not stop keeps paginating, ten pages a second per worker, until the server's
    20 s safety stop (hundreds of requests)."""
    assert _fan_out_threads() == []  # every worker was joined
    count = pages.count()
    assert count - before_stop <= 2 * WORKERS
    time.sleep(0.3)
    assert pages.count() == count  # and no request was started after the generator ended


def test_fan_out_stops_when_the_consumer_raises_keyboard_interrupt(
    slow_api: tuple[RobofyClient, _SlowPages],
) -> None:
    api, pages = slow_api
    tasks = ["quick", *(f"s{n}" for n in range(50))]
    interrupted: list[int] = []

    def consume() -> None:
        for task, _ in api.fan_out(tasks, _transcript(api), max_workers=WORKERS):
            assert task == "quick"
            interrupted.append(pages.count())
            raise KeyboardInterrupt  # what Ctrl-C raises in the consuming thread

    with pytest.raises(KeyboardInterrupt):
        consume()
    _assert_stopped(pages, interrupted[0])


def test_fan_out_stops_when_the_generator_is_closed(
    slow_api: tuple[RobofyClient, _SlowPages],
) -> None:
    api, pages = slow_api
    tasks = ["quick", "s1", "s2", "s3", "s4"]
    results = api.fan_out(tasks, _transcript(api), max_workers=WORKERS)
    assert next(results) == ("quick", 1)
    before_stop = pages.count()
    results.close()
    _assert_stopped(pages, before_stop)


def test_fan_out_stops_on_a_real_sigint_while_waiting_for_results(
    slow_api: tuple[RobofyClient, _SlowPages],
) -> None:
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not raise KeyboardInterrupt under this runner")
    api, pages = slow_api
    main = threading.main_thread().ident
    assert main is not None
    sent: list[int] = []

    def press_ctrl_c() -> None:
        sent.append(pages.count())
        signal.pthread_kill(main, signal.SIGINT)

    tasks = [f"s{n}" for n in range(20)]
    timer = threading.Timer(0.5, press_ctrl_c)  # the workers are paginating by then
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in api.fan_out(tasks, _transcript(api), max_workers=WORKERS):
                pass  # never reached: no task ever ends on its own
    finally:
        timer.cancel()
    _assert_stopped(pages, sent[0])


def test_fan_out_cuts_a_retry_backoff_short_when_it_stops(
    slow_api: tuple[RobofyClient, _SlowPages],
) -> None:
    api, pages = slow_api
    pages.retry_after = "120"  # every slow session: 429, come back in 2 minutes (the cap)
    results = api.fan_out(["quick", "s1", "s2", "s3"], _transcript(api), max_workers=WORKERS)
    assert next(results) == ("quick", 1)
    time.sleep(0.3)  # the other workers are now sleeping off their Retry-After
    before_stop = pages.count()
    # close() joins the workers, so it returns only once their backoffs have ended. Closed on
    # another thread, so that a backoff that is not cut short fails the test instead of
    # holding it for 2 minutes: 30 s is only a hang guard (closing takes a fraction of a
    # second; the behaviour under test is "not 120 s").
    closer = threading.Thread(target=results.close, daemon=True)
    closer.start()
    closer.join(30)
    assert not closer.is_alive(), "close() waited out the workers' Retry-After backoff"
    _assert_stopped(pages, before_stop)


def test_fan_out_tasks_that_swallow_exceptions_still_stop(
    slow_api: tuple[RobofyClient, _SlowPages],
) -> None:
    api, pages = slow_api
    fetch = _transcript(api)
    swallowed: list[Exception] = []

    def stubborn(session_id: str) -> int:
        if session_id == "quick":
            return fetch(session_id)
        total = 0
        for _ in range(100):
            try:
                total += fetch(session_id)
            except Exception as exc:  # a task that means to carry on whatever happens
                swallowed.append(exc)
                continue
        return total

    results = api.fan_out(["quick", "s1", "s2", "s3"], stubborn, max_workers=WORKERS)
    assert next(results)[0] == "quick"
    before_stop = pages.count()
    results.close()
    _assert_stopped(pages, before_stop)
    assert swallowed == []  # the stop went through `except Exception`: the task ended there


def test_fan_out_never_hangs_when_ctrl_c_lands_just_after_a_worker_starts(
    client: RobofyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The original hang: a thread started but not yet counted took a stop marker meant for a
    # counted one, which then waited for it forever while the consumer joined it.
    class CtrlCAfterStart(threading.Thread):
        def start(self) -> None:
            super().start()
            if self.name == "robofy-fan-out_1":
                raise KeyboardInterrupt

    outcome: list[str] = []

    def consume() -> None:
        try:
            list(client.fan_out(range(10), lambda n: n, max_workers=4))
        except KeyboardInterrupt:
            outcome.append("interrupted")

    monkeypatch.setattr(threading, "Thread", CtrlCAfterStart)
    consumer = CtrlCAfterStart(target=consume, daemon=True)
    consumer.start()
    consumer.join(10)
    assert not consumer.is_alive()  # returned, within 10 s
    assert outcome == ["interrupted"]
    assert _fan_out_threads() == []
