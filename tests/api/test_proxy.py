"""Proxies from the environment: HTTP_PROXY (forwarding), HTTPS_PROXY (CONNECT), NO_PROXY.

Issue 10: the old default transport ignored the proxy variables, so a user behind a company
proxy could not sync with the defaults (the proxy saw 0 requests). Here a loopback proxy
(`servers.LoopbackProxy`) counts what it was asked, and the API server counts what reached it.
Both transports are checked: the default (urllib3) and httpx's own.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator

import pytest

from robofy_etl.api import ClientConfig, RetryPolicy, RobofyClient, RobofyTransportError

from .servers import (
    HAVE_OPENSSL,
    ApiServer,
    Certificate,
    LoopbackProxy,
    certificate_authority,
    issued_by,
)

API_KEY = "sk-robofy-PROXY-0123456789abcdef"
TRANSPORTS = ["urllib3", "httpx"]


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    server = LoopbackProxy()
    yield server
    server.stop()


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    server = ApiServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificate, Certificate]:
    """A test CA and a certificate it signed for 127.0.0.1: ``(ca, server)``."""
    if not HAVE_OPENSSL:
        pytest.skip("needs the openssl command to make certificates")
    directory = tmp_path_factory.mktemp("proxy-tls")
    ca = certificate_authority(directory, "Proxy Test CA")
    return ca, issued_by(ca, directory, "server", "IP:127.0.0.1")


def _client(base_url: str, transport: str, *, attempts: int = 1) -> RobofyClient:
    config = ClientConfig(
        base_url=base_url,
        api_key=API_KEY,
        http_transport=transport,  # type: ignore[arg-type]
        timeout_s=5.0,
        connect_timeout_s=5.0,
        retry=RetryPolicy(max_attempts=attempts, initial_delay=0.0, jitter=0.0),
    )
    return RobofyClient(config, sleep=lambda _: None)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_http_requests_are_forwarded_through_http_proxy(
    proxy: LoopbackProxy,
    api_server: ApiServer,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    with _client(api_server.base_url, transport) as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]
        assert list(api.iter_items("projects", params={"page": "2"})) == [{"id": 1}]
    assert proxy.requests == [
        f"GET {api_server.base_url}/v1/projects",
        f"GET {api_server.base_url}/v1/projects?page=2",
    ]
    assert api_server.paths == ["/v1/projects", "/v1/projects?page=2"]  # relayed
    assert api_server.authorizations == [f"Bearer {API_KEY}"] * 2


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_https_requests_are_tunnelled_through_https_proxy_with_connect(
    proxy: LoopbackProxy,
    signed: tuple[Certificate, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    variable: str,
) -> None:
    ca, certificate = signed
    server = ApiServer(certificate)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))
        monkeypatch.setenv(variable, proxy.url)
        with _client(server.base_url, transport) as api:
            for _ in range(3):
                assert list(api.iter_items("projects")) == [{"id": 1}]
    finally:
        server.stop()
    host_port = server.base_url.removeprefix("https://")
    assert proxy.requests == [f"CONNECT {host_port}"]  # one tunnel, kept alive for all three
    assert server.paths == ["/v1/projects"] * 3
    # The proxy relayed TLS: it never saw the key.
    assert proxy.tunnelled
    assert API_KEY.encode() not in proxy.tunnelled


@pytest.mark.parametrize(
    ("variable", "no_proxy"),
    [
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "127.0.0.1"),
        ("NO_PROXY", "example.com, 127.0.0.1"),
        ("NO_PROXY", "*"),
    ],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_proxy_hosts_are_reached_directly(
    proxy: LoopbackProxy,
    api_server: ApiServer,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
    variable: str,
    no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv(variable, no_proxy)
    with _client(api_server.base_url, transport) as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]
    assert proxy.requests == []
    assert api_server.paths == ["/v1/projects"]


def test_a_no_proxy_entry_for_another_host_still_uses_the_proxy(
    proxy: LoopbackProxy, api_server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    with _client(api_server.base_url, "urllib3") as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]
    assert len(proxy.requests) == 1


def test_proxy_credentials_reach_the_proxy_and_nothing_else(
    proxy: LoopbackProxy,
    api_server: ApiServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pr0xy-S3CRET"
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("://", f"://etl%40corp:{password}@"))
    caplog.set_level(logging.DEBUG)
    with _client(api_server.base_url, "urllib3") as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]
    expected = base64.b64encode(f"etl@corp:{password}".encode()).decode()
    assert proxy.proxy_authorizations == [f"Basic {expected}"]
    assert api_server.authorizations == [f"Bearer {API_KEY}"]  # Proxy-Authorization stripped
    assert password not in caplog.text
    assert API_KEY not in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # bound but not listening: connections are refused


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unreachable_proxy_fails_without_showing_its_password(
    api_server: ApiServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
) -> None:
    password = "pr0xy-S3CRET"
    monkeypatch.setenv(
        f"{scheme.upper()}_PROXY", f"http://etl:{password}@127.0.0.1:{_closed_port()}"
    )
    caplog.set_level(logging.DEBUG)
    base_url = api_server.base_url.replace("http://", f"{scheme}://")
    with _client(base_url, "urllib3", attempts=2) as api:
        with pytest.raises(RobofyTransportError) as caught:
            list(api.iter_items("projects"))
        assert api.total_stats().requests == 2  # a proxy failure is retried like the network
    message = str(caught.value)
    assert "ProxyError" in message
    assert "127.0.0.1" in message
    assert password not in message
    assert password not in caplog.text
    assert API_KEY not in caplog.text
    assert api_server.paths == []


@pytest.mark.parametrize(
    ("url", "complaint"),
    [("socks5://127.0.0.1:1080", "SOCKS"), ("http://127.0.0.1:notaport", "not a valid")],
)
def test_an_unusable_proxy_url_fails_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, complaint: str
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", url)
    with pytest.raises(ValueError, match=complaint) as caught:
        _client("https://127.0.0.1:1", "urllib3")
    assert "HTTPS_PROXY" in str(caught.value)
