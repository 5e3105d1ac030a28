"""The error tree raised by the Robofy client; every message says what to do next.

```text
RobofyError
├── RobofyTransportError          network trouble after all retries (names the base URL)
│   ├── RobofyTimeoutError        connect/read/write/pool timeout after all retries
│   └── RobofyCertificateError    the server's TLS certificate cannot be verified: not retried
├── RobofyAPIError                an HTTP error status (status, error_code, detail, path)
│   ├── RobofyAuthError           401: fatal, check ROBOFY_API_KEY (catches 403 too)
│   │   └── RobofyPermissionError 403: the key is valid but may not read this resource
│   ├── RobofyNotFoundError       404: callers may treat it as a tombstone
│   ├── RobofyRateLimitError      429 after all retries
│   └── RobofyServerError         5xx after all retries
└── RobofyContractError           a 2xx body the client cannot read (invalid JSON, no envelope)
    └── PaginationLoopError       repeated token, empty page with a token, page cap exceeded
```

No exception ever carries the API key or request headers: only the path (never the query
string) and the parsed error body. The client additionally scrubs the key out of any server
text it copies into a message.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "PaginationLoopError",
    "RobofyAPIError",
    "RobofyAuthError",
    "RobofyCertificateError",
    "RobofyContractError",
    "RobofyError",
    "RobofyNotFoundError",
    "RobofyPermissionError",
    "RobofyRateLimitError",
    "RobofyServerError",
    "RobofyTimeoutError",
    "RobofyTransportError",
    "api_error_from_response",
]


class RobofyError(Exception):
    """Base class of every error raised by `robofy_etl.api`."""


class RobofyTransportError(RobofyError):
    """The request never got an HTTP response (connection refused, reset, DNS, protocol error).

    Attributes:
        base_url: The API base URL the client was configured with.
        path: The request path (no query string).
    """

    def __init__(self, message: str, *, base_url: str, path: str) -> None:
        super().__init__(message)
        self.base_url = base_url
        self.path = path


class RobofyTimeoutError(RobofyTransportError):
    """The request timed out on every attempt."""


class RobofyCertificateError(RobofyTransportError):
    """The server's TLS certificate could not be verified; raised after one attempt.

    An unknown or self-signed CA, an expired certificate or a hostname mismatch fails the same
    way every time. Behind a proxy that re-signs HTTPS, point `SSL_CERT_FILE` or `SSL_CERT_DIR`
    at its CA certificates; otherwise the server's certificate must be fixed.

    Attributes:
        reason: OpenSSL's verification message (`self-signed certificate`, `Hostname
            mismatch, ...`).
    """

    def __init__(self, message: str, *, base_url: str, path: str, reason: str) -> None:
        super().__init__(message, base_url=base_url, path=path)
        self.reason = reason


class RobofyAPIError(RobofyError):
    """The API answered with an error status.

    Attributes:
        status: The HTTP status code.
        error_code: `error.code` from the body (for example `PROJECT_NOT_FOUND`), if any.
        detail: `error.detail` (or `error.details`) from the body, if any.
        api_message: The body's top-level `message`, for display only (never branch on it).
        path: The request path (no query string, never headers).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        path: str,
        error_code: str | None = None,
        detail: str | None = None,
        api_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.path = path
        self.error_code = error_code
        self.detail = detail
        self.api_message = api_message


class RobofyAuthError(RobofyAPIError):
    """401 (the key is missing or wrong) or, as `RobofyPermissionError`, 403. Never retried."""


class RobofyPermissionError(RobofyAuthError):
    """403: the key was accepted but may not read this resource (a project or chatbot).

    A permission granted in Robofy, not a wrong key: other resources may still be readable.
    Subclasses `RobofyAuthError`, so existing `except RobofyAuthError` handlers still see it.
    """


class RobofyNotFoundError(RobofyAPIError):
    """404: the resource does not exist (a deleted parent, an optional endpoint)."""


class RobofyRateLimitError(RobofyAPIError):
    """429 on every attempt.

    Attributes:
        retry_after: The last `Retry-After` the server sent, in seconds, if any.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RobofyServerError(RobofyAPIError):
    """5xx (or 408) on every attempt."""


class RobofyContractError(RobofyError):
    """A successful response whose body the client cannot read.

    Attributes:
        endpoint: The endpoint name from the registry.
        path: The request path.
        page: The 1-based page number, when the error concerns a page.
    """

    def __init__(
        self, message: str, *, endpoint: str = "", path: str = "", page: int | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.path = path
        self.page = page


class PaginationLoopError(RobofyContractError):
    """Pagination would not terminate: repeated token, empty page with a token, or page cap."""


def _text(value: Any) -> str | None:
    """Return `value` as a short string, or None when it is empty."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:500]


def parse_error_body(content: bytes) -> tuple[str | None, str | None, str | None]:
    """Read `{"message", "error": {"code", "detail" | "details"}}` leniently.

    Args:
        content: The raw response body.

    Returns:
        `(error_code, detail, message)`, each None when absent or unreadable.
    """
    try:
        body = json.loads(content) if content else None
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    code = detail = None
    if isinstance(error, dict):
        code = _text(error.get("code"))
        detail = _text(error.get("detail", error.get("details")))
    elif isinstance(error, str):
        detail = _text(error)
    return code, detail, _text(body.get("message"))


def api_error_from_response(
    status: int,
    content: bytes,
    path: str,
    *,
    retry_after: float | None = None,
    attempts: int = 1,
    secret: str | None = None,
) -> RobofyAPIError:
    """Build the error for an HTTP error response, with an actionable message.

    Args:
        status: HTTP status code.
        content: Raw response body (parsed for `error.code` / `error.detail`).
        path: Request path, without query string.
        retry_after: Last `Retry-After` in seconds, for 429.
        attempts: How many attempts were made, for the message.
        secret: A string (the API key) to scrub from any server-provided text.

    Returns:
        An instance of the most specific `RobofyAPIError` subclass.
    """
    code, detail, api_message = parse_error_body(content)
    if secret:
        code, detail, api_message = (
            None if v is None else v.replace(secret, "***") for v in (code, detail, api_message)
        )
    said = f" The API said: {code or '-'}: {(detail or api_message or '-').rstrip('.')}."
    kwargs: dict[str, Any] = {
        "status": status,
        "path": path,
        "error_code": code,
        "detail": detail,
        "api_message": api_message,
    }
    if status == 403:
        return RobofyPermissionError(
            f"Robofy refused access to {path} (HTTP 403): the API key was accepted but is not "
            "allowed to read this resource. This is a permission on that project/chatbot in "
            "Robofy, not a wrong key: grant the key's account access to it there, or leave it "
            "out of the sync." + said,
            **kwargs,
        )
    if status == 401:
        return RobofyAuthError(
            f"Robofy rejected the API key (HTTP {status} on {path}). Check ROBOFY_API_KEY "
            "(and ROBOFY_AUTH_HEADER if your account uses the api-key header)." + said,
            **kwargs,
        )
    if status == 404:
        return RobofyNotFoundError(
            f"Robofy has no resource at {path} (HTTP 404): the id may be wrong or the object "
            "deleted; if every path 404s, check ROBOFY_BASE_URL." + said,
            **kwargs,
        )
    if status == 429:
        return RobofyRateLimitError(
            f"Robofy kept rate-limiting {path} (HTTP 429, {attempts} attempts). Lower "
            "ROBOFY_MAX_IN_FLIGHT and/or ROBOFY_MAX_RPS and run again." + said,
            retry_after=retry_after,
            **kwargs,
        )
    if status >= 500 or status == 408:
        return RobofyServerError(
            f"Robofy returned HTTP {status} on {path} on all {attempts} attempts; the service "
            "may be degraded, try again later." + said,
            **kwargs,
        )
    if 300 <= status < 400:
        return RobofyAPIError(
            f"Robofy answered {path} with a redirect (HTTP {status}); check ROBOFY_BASE_URL "
            "(it should be https://agents.robofy.ai or your simulator URL).",
            **kwargs,
        )
    return RobofyAPIError(
        f"Robofy rejected the request to {path} (HTTP {status})." + said, **kwargs
    )
