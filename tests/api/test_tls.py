"""TLS: a certificate that cannot be verified fails at once, and says how to fix it.

Issue 8: an untrusted certificate (a company proxy that re-signs HTTPS, a self-signed test
server, a hostname mismatch) was retried five times as a connection error and reported as
"check the network". It fails the same way every time, so it is raised after one attempt as a
`RobofyCertificateError` that names the problem and SSL_CERT_FILE / SSL_CERT_DIR.

A real loopback HTTPS server with a self-signed certificate made by the `openssl` command.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from robofy_etl.api import (
    ClientConfig,
    RetryPolicy,
    RobofyCertificateError,
    RobofyClient,
    RobofyTransportError,
)
from robofy_etl.api.retry import certificate_error, should_retry

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="needs the openssl command to make a self-signed certificate "
    "(the cryptography package is not installed either)",
)

API_KEY = "sk-robofy-TLS-0123456789abcdef"
TRANSPORTS = ["stdlib", "httpx"]


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _make_certificate(directory: Path, name: str, san: str) -> Certificate:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={san}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    """`loopback`: valid for 127.0.0.1; `elsewhere`: valid only for another host name."""
    directory = tmp_path_factory.mktemp("tls")
    return {
        "loopback": _make_certificate(directory, "loopback", "IP:127.0.0.1"),
        "elsewhere": _make_certificate(directory, "elsewhere", "DNS:robofy.invalid"),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"data": {"projects": [{"id": 1}]}, "next_page_token": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, certificate: Certificate) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificate.cert, certificate.key)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        # The handshake runs in the handler thread, so a client that rejects the certificate
        # cannot stall the accept loop.
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on our certificate is the point of these tests


@pytest.fixture
def https_server(certificates: dict[str, Certificate]) -> Iterator[Any]:
    """Start an HTTPS loopback server with the named certificate; returns its base URL."""
    servers: list[_TLSServer] = []

    def start(name: str) -> str:
        server = _TLSServer(certificates[name])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"https://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def trust_nothing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system (or certifi) roots only: the test certificates are unknown to them."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _client(base_url: str, transport: str, sleeps: list[float]) -> RobofyClient:
    config = ClientConfig(
        base_url=base_url,
        api_key=API_KEY,
        http_transport=transport,  # type: ignore[arg-type]
        timeout_s=5.0,
        connect_timeout_s=5.0,
        retry=RetryPolicy(max_attempts=5, initial_delay=0.01, jitter=0.0),
    )
    return RobofyClient(config, sleep=sleeps.append)


@pytest.mark.usefixtures("trust_nothing_extra")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_self_signed_certificate_fails_at_once_and_names_the_fix(
    https_server: Any, transport: str
) -> None:
    base_url = https_server("loopback")
    sleeps: list[float] = []
    with _client(base_url, transport, sleeps) as api:
        with pytest.raises(RobofyCertificateError) as caught:
            list(api.iter_items("projects"))
        assert api.total_stats().requests == 1
    assert sleeps == []  # never retried
    error = caught.value
    assert isinstance(error, RobofyTransportError)
    message = str(error)
    assert "certificate" in message
    assert "self-signed" in error.reason
    assert error.reason in message
    assert "SSL_CERT_FILE" in message
    assert "SSL_CERT_DIR" in message
    assert base_url in message
    assert API_KEY not in message
    assert error.__cause__ is None  # the httpx exception (holding the request) is not chained


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hostname_mismatch_fails_at_once(
    https_server: Any,
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    base_url = https_server("elsewhere")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["elsewhere"].cert))  # trusted CA
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    sleeps: list[float] = []
    with _client(base_url, transport, sleeps) as api:
        with pytest.raises(RobofyCertificateError, match="SSL_CERT_FILE") as caught:
            list(api.iter_items("projects"))
        assert api.total_stats().requests == 1
    assert sleeps == []
    assert "mismatch" in caught.value.reason.lower()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_advice_works_ssl_cert_file_trusts_the_certificate(
    https_server: Any,
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    base_url = https_server("loopback")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["loopback"].cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with _client(base_url, transport, []) as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]


def test_should_retry_rejects_a_connect_error_caused_by_the_certificate() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error = httpx.ConnectError("handshake failed")
    error.__cause__ = cause
    assert certificate_error(error) is cause
    assert should_retry(error) is False
    assert should_retry(httpx.ConnectError("refused")) is True  # other connect errors retry
    reset = httpx.ConnectError("reset")
    reset.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert should_retry(reset) is True  # a TLS reset mid-handshake may not repeat
