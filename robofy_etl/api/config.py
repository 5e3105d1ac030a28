"""What a `RobofyClient` is built from (`ClientConfig`) and what it counts (`EndpointStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from robofy_etl.api.retry import RetryPolicy
from robofy_etl.api.transport import ATTEMPT_TIMEOUT_FACTOR
from robofy_etl.settings import DEFAULTS, Settings, check_api_key

__all__ = ["ClientConfig", "EndpointStats"]


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client needs; no environment reads happen here.

    Build it from the settings with `from_settings`: `Settings` declares and validates every
    value that comes from the environment, and its defaults (`DEFAULTS`) are the defaults
    here, so nothing is declared or checked twice. Only the key is checked here (it is not a
    setting).

    Attributes:
        base_url: API root, e.g. `https://agents.robofy.ai` or a simulator URL.
        api_key: The API key; excluded from repr and never logged.
        auth_header: `bearer` sends `Authorization: Bearer <key>`; `api-key` sends
            `api-key: <key>`.
        timeout_s: Read/write/pool timeout in seconds: the longest wait for any one chunk.
        connect_timeout_s: Connect timeout in seconds.
        attempt_timeout_s: Seconds one attempt may take to send its request and read the whole
            response, however steadily the bytes trickle in; past it the attempt is a timeout
            and is retried. None (default) means `ATTEMPT_TIMEOUT_FACTOR` (2) times
            `timeout_s`; see `attempt_timeout`. Opening a connection is bounded separately
            by `connect_timeout_s`.
        max_in_flight: Hard cap of concurrent HTTP requests across all threads.
        max_requests_per_second: Proactive pacing shared by all threads; None disables it.
        max_pages: Page cap per list (PaginationLoopError beyond it).
        retry: The retry policy.
        naive_timezone: Zone of timestamps without an offset (used by callers of
            `parse_timestamp`).
        stats_params: Query names of E8 for project id, chatbot id, start and end date.
        page_token_param: Query parameter that sends the next-page token back.
        http_transport: "urllib3" (default: `transport.Urllib3Transport`, kept-alive
            ``http.client`` connections, urllib3's pools through a proxy; least CPU per
            request) or "httpx" (httpx's own transport, httpcore's pool). Both
            honour HTTP_PROXY, HTTPS_PROXY and NO_PROXY, SSL_CERT_FILE and SSL_CERT_DIR.
    """

    base_url: str = DEFAULTS.base_url
    api_key: str = field(default="", repr=False)
    auth_header: Literal["bearer", "api-key"] = DEFAULTS.auth_header
    timeout_s: float = DEFAULTS.timeout_s
    connect_timeout_s: float = 10.0
    attempt_timeout_s: float | None = None
    max_in_flight: int = DEFAULTS.max_in_flight
    max_requests_per_second: float | None = DEFAULTS.max_rps
    max_pages: int = 10_000
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(
            max_attempts=DEFAULTS.max_attempts, initial_delay=DEFAULTS.retry_delay_s
        )
    )
    naive_timezone: str = DEFAULTS.naive_timezone
    stats_params: tuple[str, str, str, str] = DEFAULTS.stats_params
    page_token_param: str = "nextPageToken"  # noqa: S105 - a query parameter name, not a secret
    http_transport: Literal["urllib3", "httpx"] = DEFAULTS.http_transport

    def __post_init__(self) -> None:
        """Fail fast on a key that cannot work, without ever echoing it."""
        check_api_key(self.api_key)

    @classmethod
    def from_settings(cls, settings: Settings, *, api_key: str, **overrides: Any) -> ClientConfig:
        """The client `settings` describe, with `api_key`.

        Args:
            settings: The validated settings.
            api_key: The API key (not a setting: it stays out of `Settings`).
            overrides: Fields that win (`max_in_flight=2` for the probe, test knobs).
        """
        values: dict[str, Any] = {
            "base_url": settings.base_url,
            "auth_header": settings.auth_header,
            "timeout_s": settings.timeout_s,
            "max_in_flight": settings.max_in_flight,
            "max_requests_per_second": settings.max_rps,
            "http_transport": settings.http_transport,
            "retry": RetryPolicy(
                max_attempts=settings.max_attempts, initial_delay=settings.retry_delay_s
            ),
            "naive_timezone": settings.naive_timezone,
            "stats_params": settings.stats_params,
        }
        return cls(api_key=api_key, **{**values, **overrides})

    @property
    def attempt_timeout(self) -> float:
        """Seconds one attempt may take, connecting aside (`attempt_timeout_s` or its default)."""
        if self.attempt_timeout_s is not None:
            return self.attempt_timeout_s
        return ATTEMPT_TIMEOUT_FACTOR * self.timeout_s


@dataclass(slots=True)
class EndpointStats:
    """Counters for one endpoint (or summed over all).

    Attributes:
        requests: HTTP attempts sent (retries included).
        retries: Attempts that were followed by another attempt.
        rate_limited: 429 responses received.
        pages: Successful (2xx, valid JSON) responses.
        bytes: Response body bytes received.
        errors: Failed attempts (error status, transport error or invalid JSON), retried or not.
        elapsed_s: Wall time spent in HTTP attempts, summed over threads.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    pages: int = 0
    bytes: int = 0
    errors: int = 0
    elapsed_s: float = 0.0

    def __add__(self, other: EndpointStats) -> EndpointStats:
        """Sum two stats field by field."""
        return EndpointStats(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(EndpointStats))
        )
