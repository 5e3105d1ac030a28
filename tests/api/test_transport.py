"""The default transport (urllib3 under httpx): reuse, expiry, decoding, the attempt deadline,
closing, and errors the retry layer knows.

Real loopback servers, so sockets, timeouts and resets are real; `servers.ApiServer` counts the
connections it accepted and those still open, so connection reuse and closing are checked at
the server, not taken from the client's word.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient, RobofyTimeoutError
from robofy_etl.api import transport as transport_module
from robofy_etl.api.transport import ATTEMPT_TIMEOUT_FACTOR, KEEPALIVE_EXPIRY_S, Urllib3Transport

from .servers import ApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[int] = set()
    paths: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).connections.add(id(self.connection))
        type(self).paths.append(self.path)
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        if self.path.startswith("/reset"):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        if self.path.startswith("/gzip"):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections = set()
    _Handler.paths = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client(base_url: str, read_timeout: float = 5.0) -> httpx.Client:
    transport = Urllib3Transport(connect_timeout=2.0, read_timeout=read_timeout)
    return httpx.Client(base_url=base_url, transport=transport, headers={"Authorization": "B k"})


def test_requests_reuse_pooled_connections_across_threads(server: str) -> None:
    with _client(server) as client:
        for n in range(20):
            response = client.get("/v1/x", params={"nextPageToken": f"t{n}"})
            assert response.json() == {"path": f"/v1/x?nextPageToken=t{n}", "auth": "B k"}
        assert len(_Handler.connections) == 1

        def work() -> None:
            for _ in range(5):
                client.get("/v1/y").raise_for_status()

        for _ in range(3):  # three generations of threads, as three fan-outs would start
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    # At most one connection per concurrent thread, reused by the next generation; a
    # connection per thread would be 1 + 3 x 4 = 13.
    assert len(_Handler.connections) <= 5


def test_gzip_bodies_are_decoded(server: str) -> None:
    with _client(server) as client:
        assert client.get("/gzip").json()["path"] == "/gzip"


def test_slow_response_raises_read_timeout(server: str) -> None:
    with _client(server, read_timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/slow")
        # The broken connection was dropped: the next request works on a new one.
        assert client.get("/ok").status_code == 200


def test_reset_raises_a_retriable_protocol_error(server: str) -> None:
    with _client(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/reset")
        assert client.get("/ok").status_code == 200


def test_a_reset_on_a_reused_connection_is_not_sent_again_by_the_transport(server: str) -> None:
    # The transport never resends: a request that fails after it went out is the retry
    # layer's to count and retry (an idle connection the server closed is found before reuse).
    with _client(server) as client:
        assert client.get("/ok").status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/reset")
        assert client.get("/ok").status_code == 200
    assert _Handler.paths == ["/ok", "/reset", "/ok"]


def test_refused_connection_raises_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with _client(f"http://127.0.0.1:{port}") as client, pytest.raises(httpx.ConnectError):
            client.get("/v1/projects")


def test_unsupported_scheme_is_not_retriable() -> None:
    transport = Urllib3Transport(connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.handle_request(httpx.Request("GET", "ftp://example.com/x"))


@pytest.mark.parametrize("transport", ["urllib3", "httpx"])
def test_both_transports_read_the_same_account(transport: str) -> None:
    from datetime import datetime

    from robofy_etl.simulator import SimulatorConfig, serve

    with serve(SimulatorConfig(scale="tiny", seed=3, end=datetime(2026, 10, 15))) as sim:
        config = ClientConfig(base_url=sim.base_url, api_key=sim.api_key, http_transport=transport)
        with RobofyClient(config) as api:
            chatbots = [
                c["chatbot_id"]
                for p in api.iter_items("projects")
                for c in api.iter_items("chatbots", project_id=p["id"])
            ]
            sessions = {
                s["session_id"] for c in chatbots for s in api.iter_items("sessions", chatbot_id=c)
            }
    assert sessions == {s.session_id for s in sim.dataset.sessions}


# --------------------------------------------------------------------------- wire format
# A raw socket server that answers each request path with exact bytes, to exercise the framings
# and malformed responses a stdlib server never sends.

_SCRIPTS: dict[str, bytes] = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'4;ext=1\r\n{"a"\r\n6\r\n: [1]}\r\n0\r\nX-Trailer: t\r\n\r\n',
    "/interim": b"HTTP/1.1 100 Continue\r\n\r\n"
    b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"b": 2}',
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    "/http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]",
    "/until-close": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"c": 3}',
    "/garbage": b"SPDY/9 what\r\n\r\n",
    "/truncated": b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial"',
    "/no-content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
}
_CLOSES_AFTER = {"/close", "/http10", "/until-close", "/garbage", "/truncated"}


@pytest.fixture
def wire() -> Iterator[tuple[str, list[int]]]:
    """A scripted server; the list receives one entry per accepted connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while True:
                line = reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                while reader.readline() not in (b"\r\n", b""):
                    pass
                if path == "/idle-close":
                    conn.sendall(_SCRIPTS["/ok"])
                    return  # closes the keep-alive connection right after answering
                conn.sendall(_SCRIPTS[path])
                if path in _CLOSES_AFTER:
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()


def test_chunked_bodies_are_joined_and_trailers_dropped(wire: tuple[str, list[int]]) -> None:
    base, accepted = wire
    with _client(base) as client:
        assert client.get("/chunked").json() == {"a": [1]}
        assert client.get("/ok").json() == {}
    assert len(accepted) == 1  # the chunked response left the connection reusable


def test_interim_responses_are_skipped(wire: tuple[str, list[int]]) -> None:
    with _client(wire[0]) as client:
        assert client.get("/interim").json() == {"b": 2}


@pytest.mark.parametrize("path", ["/close", "/http10", "/until-close"])
def test_a_connection_the_server_closes_is_not_reused(
    wire: tuple[str, list[int]], path: str
) -> None:
    base, accepted = wire
    with _client(base) as client:
        assert client.get(path).status_code == 200
        assert client.get("/ok").json() == {}
    assert len(accepted) == 2


def test_a_body_delimited_by_close_is_read_whole(wire: tuple[str, list[int]]) -> None:
    with _client(wire[0]) as client:
        assert client.get("/until-close").json() == {"c": 3}


def test_no_content_has_an_empty_body(wire: tuple[str, list[int]]) -> None:
    with _client(wire[0]) as client:
        response = client.get("/no-content")
        assert response.status_code == 204
        assert response.content == b""
        assert client.get("/ok").status_code == 200


@pytest.mark.parametrize("path", ["/garbage", "/truncated"])
def test_malformed_responses_raise_a_retriable_protocol_error(
    wire: tuple[str, list[int]], path: str
) -> None:
    with _client(wire[0]) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(path)
        assert client.get("/ok").status_code == 200  # on a fresh connection


def test_an_idle_connection_closed_by_the_server_is_replaced(
    wire: tuple[str, list[int]],
) -> None:
    base, accepted = wire
    with _client(base) as client:
        assert client.get("/idle-close").status_code == 200
        time.sleep(0.3)  # the server's FIN arrives while the connection is idle
        assert client.get("/ok").json() == {}  # no error: the dead connection was noticed
    assert len(accepted) == 2


# --------------------------------------------------------------------------- attempt deadline
# Issue 8: a server that sends one byte every 2 s never trips a 5 s read timeout, and held one
# request for 121 s. Each attempt now ends within the attempt timeout (2 x the read timeout by
# default), in both transports, and counts as a timeout (retried).

_TRICKLE_BODY = b'{"data": {"projects": [{"id": 1}]}, "next_page_token": null}'
_TRICKLE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_TRICKLE_BODY)}\r\n\r\n".encode()
    + _TRICKLE_BODY
)


@pytest.fixture
def trickle() -> Iterator[tuple[str, list[str]]]:
    """A server that sends its response one byte every 0.2 s (about 30 s in all, so a client
    without a deadline finishes, late, instead of hanging the suite); `/ok` is answered at
    once. The list receives each request path."""
    listener = socket.create_server(("127.0.0.1", 0))
    paths: list[str] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while not stop.is_set():
                line = reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                paths.append(path)
                while reader.readline() not in (b"\r\n", b""):
                    pass
                try:
                    if path == "/ok":
                        conn.sendall(_TRICKLE)
                        continue
                    if path == "/trickle-body":  # the head at once, then the body slowly
                        head = len(_TRICKLE) - len(_TRICKLE_BODY)
                        conn.sendall(_TRICKLE[:head])
                    else:
                        head = 0
                    for byte in _TRICKLE[head:]:
                        if stop.wait(0.2):
                            return
                        conn.sendall(bytes([byte]))
                except OSError:
                    return  # the client gave up on us

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", paths
    stop.set()
    listener.close()


@pytest.mark.parametrize("path", ["/trickle", "/trickle-body"])
def test_a_trickling_response_times_out_at_the_attempt_deadline(
    trickle: tuple[str, list[str]], path: str
) -> None:
    base, _ = trickle
    transport = Urllib3Transport(connect_timeout=2.0, read_timeout=0.5, attempt_timeout=1.0)
    with httpx.Client(base_url=base, transport=transport) as client:
        # Without a deadline the trickle never trips the 0.5 s read timeout and the whole
        # response arrives, late: no error at all. The deadline's own error says it is.
        with pytest.raises(httpx.ReadTimeout, match=r"within 1s \(the attempt timeout"):
            client.get(path)
        assert client.get("/ok").json()["data"]["projects"] == [{"id": 1}]  # a new connection


def test_the_default_attempt_timeout_is_twice_the_read_timeout(
    trickle: tuple[str, list[str]],
) -> None:
    assert ATTEMPT_TIMEOUT_FACTOR == 2.0
    transport = Urllib3Transport(connect_timeout=2.0, read_timeout=0.5)
    with (
        httpx.Client(base_url=trickle[0], transport=transport) as client,
        pytest.raises(httpx.ReadTimeout, match=r"within 1s \(the attempt timeout"),
    ):
        client.get("/trickle")


@pytest.mark.parametrize("transport", ["urllib3", "httpx"])
def test_the_client_retries_a_trickle_as_a_timeout_and_gives_up(
    trickle: tuple[str, list[str]], transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    base, paths = trickle
    sleeps: list[float] = []
    config = ClientConfig(
        base_url=base,
        api_key="k",
        http_transport=transport,  # type: ignore[arg-type]
        timeout_s=0.5,  # longer than the 0.2 s between bytes: never trips on its own
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01, jitter=0.0),
    )
    assert config.attempt_timeout == 1.0
    with RobofyClient(config, sleep=sleeps.append) as api:
        with pytest.raises(RobofyTimeoutError, match="at most 1s per attempt"):
            list(api.iter_items("projects"))
        assert api.total_stats().requests == 2
    # Without a deadline the trickle is a slow but complete 200 (the bytes come faster than the
    # read timeout): no error at all. The first attempt's retry warning gives the cause.
    [warning] = [r.getMessage() for r in caplog.records if r.name == "robofy_etl.api.client"]
    assert "failed (ReadTimeout" in warning
    if transport == "urllib3":  # httpx's deadline shortens the socket read: "timed out"
        assert "(the attempt timeout" in warning
    assert sleeps == [0.01]  # retried once, like any timeout
    assert paths == ["/v1/projects"] * 2


# --------------------------------------------------------------------------- connection lifetime


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    yield server
    server.stop()


def test_an_idle_connection_expires_and_is_closed(
    api_server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert KEEPALIVE_EXPIRY_S == 5.0  # the documented default
    monkeypatch.setattr(transport_module, "KEEPALIVE_EXPIRY_S", 0.2)
    with _client(api_server.base_url) as client:
        client.get("/a").raise_for_status()
        client.get("/b").raise_for_status()
        assert api_server.accepted == 1  # reused while fresh
        time.sleep(0.3)  # idle past the expiry
        client.get("/c").raise_for_status()
        assert api_server.accepted == 2  # not reused: a new connection
        # ... and the expired one was closed by the client, not left open.
        assert api_server.open_connections() == 1
    assert api_server.wait_until_all_closed() == 0


def test_idle_connections_beyond_the_pool_size_are_closed(api_server: ApiServer) -> None:
    api_server.delay = 0.3  # so that six requests are in flight at once
    transport = Urllib3Transport(connect_timeout=2.0, read_timeout=5.0, max_connections=2)
    with httpx.Client(base_url=api_server.base_url, transport=transport) as client:

        def get() -> None:
            client.get("/p").raise_for_status()

        threads = [threading.Thread(target=get) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert api_server.accepted == 6
        deadline = time.monotonic() + 5
        while api_server.open_connections() > 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api_server.open_connections() == 2  # two kept for reuse, four closed
        api_server.delay = 0.0
        for _ in range(4):
            get()
        assert api_server.accepted == 6  # the kept ones were reused
    assert api_server.wait_until_all_closed() == 0


def _page(api: RobofyClient, n: int) -> int:
    return len(api.get_one("project", project_id=n))


def test_fan_out_workers_share_the_clients_connections_and_close_closes_them_all(
    api_server: ApiServer,
) -> None:
    config = ClientConfig(base_url=api_server.base_url, api_key="k", max_in_flight=4)
    with RobofyClient(config) as api:
        for _ in range(3):  # each fan-out starts new worker threads
            results = list(api.fan_out(range(40), lambda n: _page(api, n)))
            assert len(results) == 40
        # One pool for the client's lifetime: the later fan-outs reused the first one's
        # connections (one per thread would be 3 x 4).
        assert api_server.accepted <= config.max_in_flight + 1
        assert api_server.open_connections() == api_server.accepted  # kept alive, pooled
    assert len(api_server.paths) == 120
    assert api_server.wait_until_all_closed() == 0  # close() closed every one of them
