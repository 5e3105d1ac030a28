"""The running server: faults a retrying client survives, drift, the moving clock, the request
log, concurrency, shutdown and the ``python -m robofy_etl.simulator`` process."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from robofy_etl.simulator import Faults, Simulator, SimulatorConfig, serve
from tests.simulator._helpers import END, items_and_token, walk


def _get_with_retries(client: httpx.Client, path: str, params: dict[str, str]) -> Any:
    """A deliberately plain retry loop: what any correct client would do."""
    for _attempt in range(6):
        try:
            r = client.get(path, params=params)
        except httpx.TransportError:
            continue
        if r.status_code in (429, 500, 502, 503, 504):
            continue
        try:
            return r.json()
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no data for {path}")


def _sync(sim: Simulator, timeout: float = 5.0) -> dict[str, Any]:
    """Every session list and transcript of the account, retrying through faults."""
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=timeout) as c:
        for chatbot in sim.dataset.chatbots:
            for path, collection in [
                (f"/v1/ai-agent/inbox/sessions/{chatbot.chatbot_id}", "sessions"),
                (f"/v1/ai-agent/leads/{chatbot.project_id}/{chatbot.chatbot_id}", "rows"),
            ]:
                token, items = None, []
                while True:
                    body = _get_with_retries(c, path, {"nextPageToken": token} if token else {})
                    page, token = items_and_token(body, collection)
                    items.extend(page)
                    if not token:
                        break
                out[path] = items
            for s in out[f"/v1/ai-agent/inbox/sessions/{chatbot.chatbot_id}"][:15]:
                path = f"/v1/ai-agent/inbox/chats/{chatbot.chatbot_id}/{s['session_id']}"
                body = _get_with_retries(c, path, {})
                out[path] = items_and_token(body, "messages")[0]
    return out


def test_a_retrying_client_gets_exactly_the_fault_free_data() -> None:
    with serve(SimulatorConfig(end=END)) as sim:
        clean = _sync(sim)
        sim.clear_log()
        sim.set_faults(
            Faults(
                rate_429=0.12,
                retry_after_s=0.01,
                rate_5xx=0.12,
                rate_reset=0.08,
                rate_slow=0.04,
                slow_s=0.4,
                rate_malformed=0.08,
                seed=3,
            )
        )
        faulty = _sync(sim, timeout=0.2)
        log = sim.request_log
    assert faulty == clean
    kinds = Counter(e.fault for e in log if e.fault)
    assert len(set(kinds) & {"429", "reset", "slow", "malformed"}) >= 3
    assert {"500", "502", "503", "504"} & set(kinds)
    assert all(e.status == 0 for e in log if e.fault == "reset")
    assert all(e.status == 200 for e in log if e.fault in ("slow", "malformed"))


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        (Faults(rate_429=1.0), "429"),
        (Faults(rate_5xx=1.0), "500"),
        (Faults(rate_reset=1.0), "reset"),
        (Faults(rate_slow=1.0, slow_s=0.3), "slow"),
        (Faults(rate_malformed=1.0), "malformed"),
    ],
)
def test_each_fault_kind_is_served_and_logged(faults: Faults, kind: str) -> None:
    capped = Faults(**{**faults.__dict__, "max_consecutive": 1})
    with serve(SimulatorConfig(end=END, faults=capped)) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        with httpx.Client(base_url=sim.base_url, headers=headers, timeout=0.2) as c:
            try:
                first: httpx.Response | None = c.get("/v1/projects")
            except httpx.TransportError:  # reset, or slow past the timeout
                first = None
            second = c.get("/v1/projects")
        log = sim.request_log
    assert [e.fault for e in log] == [kind, None]
    assert second.status_code == 200
    if kind == "malformed":
        assert first is not None
        assert first.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            first.json()
    elif kind in ("429", "500"):
        assert first is not None
        assert first.status_code == int(kind)
    else:
        assert first is None


def test_fault_headers_and_consecutive_cap() -> None:
    faults = Faults(rate_429=1.0, retry_after_s=0.05, max_consecutive=2)
    with serve(SimulatorConfig(end=END, faults=faults)) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        with httpx.Client(base_url=sim.base_url, headers=headers) as c:
            statuses = [c.get("/v1/projects") for _ in range(6)]
    assert [r.status_code for r in statuses] == [429, 429, 200, 429, 429, 200]
    assert statuses[0].headers["retry-after"] == "0.05"
    assert statuses[0].json()["error"]["code"] == "RATE_LIMITED"


def test_schema_drift() -> None:
    faults = Faults(
        drift_added={"sessions": "sentiment_score"},
        drift_renamed={"sessions": ("user_profile_name", "visitor_display_name")},
    )
    with serve(SimulatorConfig(end=END, faults=faults)) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        with httpx.Client(base_url=sim.base_url, headers=headers) as c:
            cid = sim.dataset.chatbots[0].chatbot_id
            sessions, _ = walk(c, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
            project = c.get("/v1/projects").json()["data"]["projects"][0]
    assert all("sentiment_score" in s and "visitor_display_name" in s for s in sessions)
    assert not any("user_profile_name" in s for s in sessions)
    assert "sentiment_score" not in project


def test_advance_over_http_changes_only_touched_sessions(
    sim: Simulator, client: httpx.Client
) -> None:
    def listing() -> dict[tuple[str, str], str]:
        out = {}
        for chatbot in sim.dataset.chatbots:
            cid = chatbot.chatbot_id
            for s in walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")[0]:
                out[(cid, s["session_id"])] = s["last_message_time"]
        return out

    before, old_now = listing(), sim.now
    truth_before = {(s.chatbot_id, s.session_id): s for s in sim.dataset.sessions}
    sim.advance(hours=24)
    assert sim.now - old_now == timedelta(hours=24)
    after = listing()
    assert set(before) < set(after)
    changed = {k for k in before if after[k] != before[k]}
    assert changed
    truth_after = {(s.chatbot_id, s.session_id): s for s in sim.dataset.sessions}
    assert changed == {
        k
        for k in truth_before
        if truth_after[k].last_message_time != truth_before[k].last_message_time
    }
    cid, sid = next(iter(changed))
    messages, _ = walk(client, f"/v1/ai-agent/inbox/chats/{cid}/{sid}", "messages")
    assert (
        len(messages)
        == truth_after[(cid, sid)].message_count
        > truth_before[(cid, sid)].message_count
    )


def test_stats_restated_after_advance(sim: Simulator, client: httpx.Client) -> None:
    cid = sim.dataset.chatbots[1].chatbot_id
    day = (sim.now.date()).isoformat()
    yesterday = sim.now.date().toordinal() - 1
    params = {
        "projectId": str(sim.dataset.projects[0].id),
        "chatbotId": cid,
        "startDate": date.fromordinal(yesterday).isoformat(),
        "endDate": day,
    }
    before = client.get("/v1/ai-agent/message_stats", params=params).json()["data"]["data_points"]
    sim.advance(hours=24)
    after = client.get("/v1/ai-agent/message_stats", params=params).json()["data"]["data_points"]
    # yesterday's last 2 hours were not aggregated yet; today did not exist
    assert after[0]["total_messages"] >= before[0]["total_messages"]
    assert after != before
    truth = sim.dataset.stats_for(cid, date.fromordinal(yesterday), sim.now.date())
    assert [p["total_messages"] for p in after] == [p.total_messages for p in truth[:2]]


def test_request_log_and_counters(sim: Simulator, client: httpx.Client) -> None:
    sim.clear_log()
    client.get("/v1/projects")
    client.get("/v1/projects", params={"nextPageToken": "bad"})
    client.post("/v1/projects")
    client.get("/v1/nope")
    log = sim.request_log
    assert [(e.method, e.path, e.status, e.endpoint) for e in log] == [
        ("GET", "/v1/projects", 200, "projects"),
        ("GET", "/v1/projects", 400, "projects"),
        ("POST", "/v1/projects", 405, "projects"),
        ("GET", "/v1/nope", 404, "unknown"),
    ]
    assert log[1].query == {"nextPageToken": "bad"}
    assert log[0].fault is None
    assert sim.counters() == {"projects": 3, "unknown": 1}
    sim.clear_log()
    assert sim.request_log == []
    assert sim.counters() == {}


def test_delete_chatbot_and_project(sim: Simulator, client: httpx.Client) -> None:
    project = sim.dataset.projects[0].id
    gone = sim.dataset.chatbots[0].chatbot_id
    sim.delete_chatbot(gone)
    listed = client.get(f"/v1/ai-agent/chatbot/{project}").json()["data"]["chatbots"]
    assert gone not in {c["chatbot_id"] for c in listed}
    assert len(listed) == 1
    assert client.get(f"/v1/ai-agent/inbox/sessions/{gone}").status_code == 404
    assert gone not in {c.chatbot_id for c in sim.dataset.chatbots}
    sim.delete_project(project)
    assert client.get("/v1/projects").json()["data"]["projects"] == []
    assert client.get(f"/v1/projects/{project}").status_code == 404


def test_latency_is_slept_in_each_handler_thread_while_others_are_served() -> None:
    """Many keep-alive connections at once: every response waits the configured latency, in its
    own handler thread, with no lock held (so the latency of 16 requests overlaps)."""
    in_flight = 16
    together = threading.Barrier(in_flight, timeout=60)  # a guard: it only trips on a deadlock
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        together.wait()  # returns once `in_flight` handlers are sleeping at the same time

    with serve(SimulatorConfig(end=END, latency_ms=20), sleep=sleep) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        targets = [
            f"/v1/ai-agent/inbox/chats/{s.chatbot_id}/{s.session_id}" for s in sim.dataset.sessions
        ] * 4
        del targets[len(targets) // in_flight * in_flight :]  # whole groups for the barrier
        with (
            httpx.Client(base_url=sim.base_url, headers=headers, limits=limits) as c,
            ThreadPoolExecutor(64) as pool,
        ):
            codes = list(pool.map(lambda t: c.get(t).status_code, targets))
        assert codes == [200] * len(targets)
        assert slept == [0.02] * len(targets)
        assert sim.counters()["transcript"] == len(targets)
        assert not together.broken


def test_warm_fills_the_cache_for_a_full_sync(sim: Simulator, client: httpx.Client) -> None:
    pages = sim.warm()
    assert pages == sim.expected_full_sync_requests()["total"]
    cid = sim.dataset.chatbots[0].chatbot_id
    walk(client, f"/v1/ai-agent/inbox/sessions/{cid}", "sessions")
    assert sim.cpu_seconds() > 0


def test_stop_drops_idle_keep_alive_connections() -> None:
    """stop() does not wait for idle keep-alive clients: it closes their connections."""
    sim = Simulator(SimulatorConfig(end=END)).start()
    host, port = sim.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.settimeout(60)  # a guard: a connection left open would block recv() until then
        auth = f"Authorization: Bearer {sim.api_key}"
        head = ["GET /v1/projects HTTP/1.1", f"Host: {host}", auth]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        reply = conn.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in reply.lower()  # kept alive, idle from here on
        sim.stop()
        rest = b""
        while chunk := conn.recv(65536):  # the rest of the response, if any, then EOF
            rest += chunk
    assert len(reply + rest) == reply.index(b"\r\n\r\n") + 4 + _content_length(reply)


def _content_length(head: bytes) -> int:
    match = re.search(rb"content-length: (\d+)", head.lower())
    assert match is not None
    return int(match.group(1))


def test_module_process_serves_and_stops_on_sigterm() -> None:
    command = [
        sys.executable, "-m", "robofy_etl.simulator", "--port", "0", "--scale", "tiny",
        "--end", "2026-10-15", "--api-key", "k1", "--variant", "keys=camel",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = "".join(proc.stdout.readline() for _ in range(3))
            url = re.search(r"ROBOFY_BASE_URL=(\S+)", banner)
            assert url, banner
            assert "ROBOFY_API_KEY=k1" in banner
            r = httpx.get(f"{url.group(1)}/v1/projects", headers={"Authorization": "Bearer k1"})
            assert r.status_code == 200
            assert "nextPageToken" in r.json()["data"]
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
            assert proc.returncode == 0, stderr
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("bad", [{"rate_429": 1.5}, {"rate_429": 0.6, "rate_5xx": 0.6}])
def test_invalid_faults_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="rate"):
        Faults(**bad)
