"""TLS: a certificate that cannot be verified fails at once, and says how to fix it.

Issue 8: an untrusted certificate (a company proxy that re-signs HTTPS, a self-signed test
server, a hostname mismatch) was retried five times as a connection error and reported as
"check the network". It fails the same way every time, so it is raised after one attempt as a
`RobofyCertificateError` that names the problem and SSL_CERT_FILE / SSL_CERT_DIR.

Real loopback HTTPS servers (`servers.ApiServer`) with certificates made by the `openssl`
command: self-signed ones, and a test CA with a server certificate it signs, as a company CA
that re-signs HTTPS would. Both transports are checked: the default (urllib3) and httpx's own.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

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

from .servers import (
    HAVE_OPENSSL,
    ApiServer,
    Certificate,
    certificate_authority,
    issued_by,
    self_signed,
)

pytestmark = pytest.mark.skipif(
    not HAVE_OPENSSL,
    reason="needs the openssl command to make certificates "
    "(the cryptography package is not installed either)",
)

API_KEY = "sk-robofy-TLS-0123456789abcdef"
TRANSPORTS = ["urllib3", "httpx"]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    """`loopback`: self-signed for 127.0.0.1; `elsewhere`: self-signed for another host name;
    `ca` and `other-ca`: two test CAs; `signed`: for 127.0.0.1, signed by `ca`."""
    directory = tmp_path_factory.mktemp("tls")
    ca = certificate_authority(directory, "Robofy Test CA")
    return {
        "loopback": self_signed(directory, "loopback", "IP:127.0.0.1"),
        "elsewhere": self_signed(directory, "elsewhere", "DNS:robofy.invalid"),
        "ca": ca,
        "other-ca": certificate_authority(directory, "Some Other CA"),
        "signed": issued_by(ca, directory, "signed", "IP:127.0.0.1"),
    }


@pytest.fixture
def https_server(certificates: dict[str, Certificate]) -> Iterator[Callable[[str], str]]:
    """Start an HTTPS loopback server with the named certificate; returns its base URL."""
    servers: list[ApiServer] = []

    def start(name: str) -> str:
        server = ApiServer(certificates[name])
        servers.append(server)
        return server.base_url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def trust_nothing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system (or certifi) roots only: the test certificates are unknown to them."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
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
    https_server: Callable[[str], str], transport: str
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
    https_server: Callable[[str], str],
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
    https_server: Callable[[str], str],
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


# -- a company CA -----------------------------------------------------------------------------
# The case SSL_CERT_FILE / SSL_CERT_DIR exist for: a server certificate signed by a CA that is
# not among the system roots.


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_ca_named_by_ssl_cert_file_is_trusted(
    https_server: Callable[[str], str],
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    base_url = https_server("signed")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"].cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with _client(base_url, transport, []) as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]
        assert list(api.iter_items("projects")) == [{"id": 1}]  # a reused TLS connection


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_ca_directory_named_by_ssl_cert_dir_is_trusted(
    https_server: Callable[[str], str],
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    transport: str,
) -> None:
    base_url = https_server("signed")
    (tmp_path / "company-ca.pem").write_bytes(certificates["ca"].cert.read_bytes())
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system roots and the directory
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    with _client(base_url, transport, []) as api:
        assert list(api.iter_items("projects")) == [{"id": 1}]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_wrong_ca_fails_at_once_naming_the_problem_and_ssl_cert_file(
    https_server: Callable[[str], str],
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    base_url = https_server("signed")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["other-ca"].cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    sleeps: list[float] = []
    with _client(base_url, transport, sleeps) as api:
        with pytest.raises(RobofyCertificateError) as caught:
            list(api.iter_items("projects"))
        assert api.total_stats().requests == 1
    assert sleeps == []  # not retried
    message = str(caught.value)
    assert "unable to get local issuer certificate" in caught.value.reason
    assert caught.value.reason in message
    assert "SSL_CERT_FILE" in message
    assert API_KEY not in message


def test_the_default_transport_reports_a_certificate_error_as_its_cause(
    https_server: Callable[[str], str],
    certificates: dict[str, Certificate],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retry layer finds the `ssl` error along the causes (`retry.certificate_error`)."""
    from robofy_etl.api.transport import Urllib3Transport

    base_url = https_server("signed")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["other-ca"].cert))
    with (
        Urllib3Transport(connect_timeout=5.0, read_timeout=5.0) as transport,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        transport.handle_request(httpx.Request("GET", f"{base_url}/v1/projects"))
    found = certificate_error(caught.value)
    assert isinstance(found, ssl.SSLCertVerificationError)
    assert should_retry(caught.value) is False
