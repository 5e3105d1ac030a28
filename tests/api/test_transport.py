"""The stdlib keep-alive transport under httpx: reuse, decoding, and errors the retry layer knows.

A real loopback server (stdlib) so sockets, timeouts and resets are real.
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

from robofy_etl.api.transport import StdlibTransport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[int] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).connections.add(id(self.connection))
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
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client(base_url: str, read_timeout: float = 5.0) -> httpx.Client:
    transport = StdlibTransport(connect_timeout=2.0, read_timeout=read_timeout)
    return httpx.Client(base_url=base_url, transport=transport, headers={"Authorization": "B k"})


def test_requests_reuse_one_connection_per_thread(server: str) -> None:
    with _client(server) as client:
        for n in range(20):
            response = client.get("/v1/x", params={"nextPageToken": f"t{n}"})
            assert response.json() == {"path": f"/v1/x?nextPageToken=t{n}", "auth": "B k"}
        assert len(_Handler.connections) == 1

        def work() -> None:
            for _ in range(5):
                client.get("/v1/y").raise_for_status()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(_Handler.connections) == 5  # the main thread's and one per worker thread


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


def test_refused_connection_raises_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with _client(f"http://127.0.0.1:{port}") as client, pytest.raises(httpx.ConnectError):
            client.get("/v1/projects")


def test_unsupported_scheme_is_not_retriable() -> None:
    transport = StdlibTransport(connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.handle_request(httpx.Request("GET", "ftp://example.com/x"))


@pytest.mark.parametrize("transport", ["stdlib", "httpx"])
def test_both_transports_read_the_same_account(transport: str) -> None:
    from datetime import datetime

    from robofy_etl.api import ClientConfig, RobofyClient
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
