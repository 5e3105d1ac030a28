"""Retry policy: what is retried, and how long to wait before the next attempt.

The client's request loop is the only place that retries (httpx transport retries stay off).
Sleep and randomness are injected into the client, so tests assert exact delays.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "RETRIABLE_EXCEPTIONS",
    "RetryPolicy",
    "backoff_delay",
    "certificate_error",
    "parse_retry_after",
    "should_retry",
]

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

# Transport failures worth another attempt. Deliberately narrower than httpx.TransportError:
# UnsupportedProtocol (a bad ROBOFY_BASE_URL scheme) and LocalProtocolError (a client bug)
# fail the same way every time. So does a certificate that cannot be verified, although httpx
# reports it as a ConnectError: see `certificate_error`.
RETRIABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries a GET.

    Attributes:
        max_attempts: Total attempts per request, the first one included.
        initial_delay: Seconds before the second attempt; doubles each attempt.
        max_delay: Cap of the exponential delay, before jitter.
        max_retry_after: Cap applied to a server-sent `Retry-After`.
        jitter: Multiplicative jitter: the delay is scaled by a factor in `[1-j, 1+j]`.
        retry_statuses: HTTP statuses that are retried. 400/401/403/404 never are.
    """

    max_attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    jitter: float = 0.25
    retry_statuses: frozenset[int] = field(default=DEFAULT_RETRY_STATUSES)

    def __post_init__(self) -> None:
        """Validate the numbers and freeze `retry_statuses`."""
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if min(self.initial_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("RetryPolicy delays must not be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be a fraction in [0, 1)")
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))


def should_retry(
    status_or_exception: int | BaseException, policy: RetryPolicy | None = None
) -> bool:
    """Tell whether a failed attempt deserves another one.

    Args:
        status_or_exception: An HTTP status code, or the exception the attempt raised. A
            `ValueError` (including `json.JSONDecodeError`) stands for a 2xx body that is not
            valid JSON, such as a truncated page, and is retried.
        policy: The policy whose `retry_statuses` apply (default: `RetryPolicy()`).

    Returns:
        True if the request should be attempted again (attempts permitting).
    """
    if isinstance(status_or_exception, int):
        statuses = (policy or _DEFAULT_POLICY).retry_statuses
        return status_or_exception in statuses
    return (
        isinstance(status_or_exception, (*RETRIABLE_EXCEPTIONS, ValueError))
        and certificate_error(status_or_exception) is None
    )


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """Find the certificate-verification failure behind `exc`, if there is one.

    httpx and the client's urllib3 transport raise `httpx.ConnectError` for every TLS handshake
    failure, with the `ssl` error as its cause. A certificate that cannot be verified (unknown or
    self-signed CA, expired, hostname mismatch) fails the same way on every attempt, so it is
    never retried; other TLS errors (a reset mid-handshake) stay retriable.

    Args:
        exc: The exception an attempt raised.

    Returns:
        The `ssl.SSLCertVerificationError` found among `exc` and its causes, or None.
    """
    current: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; the bound guards against a cycle
        if current is None:
            return None
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        current = current.__cause__ or current.__context__
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a `Retry-After` header: delay seconds (int or float) or an HTTP-date.

    Args:
        value: The header value, or None.
        now: The current time for HTTP-dates (default: now, UTC).

    Returns:
        Seconds to wait (never negative), or None when absent or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Seconds to sleep after failed attempt number `attempt` (1-based).

    A server-sent `Retry-After` wins, capped at `policy.max_retry_after`, without jitter.
    Otherwise: `initial_delay * 2**(attempt-1)`, capped at `max_delay`, then scaled by a
    jitter factor `1 + jitter * (2*rng.random() - 1)`.

    Args:
        attempt: The attempt that just failed, starting at 1.
        policy: The retry policy.
        rng: Source of jitter (seeded in tests).
        retry_after: The parsed `Retry-After`, in seconds, if the server sent one.

    Returns:
        The delay in seconds.
    """
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    delay: float = min(policy.initial_delay * 2.0 ** (attempt - 1), policy.max_delay)
    if policy.jitter:
        delay *= 1.0 + policy.jitter * (2.0 * rng.random() - 1.0)
    return delay


_DEFAULT_POLICY = RetryPolicy()
