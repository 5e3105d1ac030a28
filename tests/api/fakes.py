"""FakeRobofy: an in-memory Robofy API for `httpx.MockTransport`, with real token paging and faults.

Bodies are registered per (path, token): the first page answers a request without
`nextPageToken`, later pages answer the token the page before returned. Faults are queued per
path and consumed, in order, before the normal answer. Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import httpx

TOKEN_PARAM = "nextPageToken"

# A fault is an int status, or one of these names.
FAULT_KINDS = ("connect", "read_timeout", "remote_protocol", "reset", "invalid_json")


def envelope(
    items: list[Any],
    key: str,
    *,
    variant: str = "data.key",
    token: str | None = None,
    token_at: str | None = "auto",
    token_name: str = "next_page_token",
) -> Any:
    """Wrap items in one of the accepted envelopes.

    Args:
        items: The records.
        key: The collection key (`sessions`, `report.rows`).
        variant: `data.key`, `key` (top-level collection), `data[]` or `[]` (bare array).
        token: The next-page token; `token_at="auto"` places it beside the items when not None.
        token_at: `data`, `data.report`, `top`, `auto` or None (absent). With `auto`, the token
            sits next to the collection (for `report.rows`, in the report).
        token_name: `next_page_token` or `nextPageToken`.
    """
    parts = key.split(".")
    collection: dict[str, Any] = {}
    node = collection
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = items
    if variant == "[]":
        return items
    if variant == "data[]":
        body: dict[str, Any] = {"message": "Success", "data": items}
    elif variant == "key":
        body = {**collection}
    else:
        body = {"message": "Success", "data": collection}
    if token_at == "auto":
        if token is None:
            return body
        nested = "data.report" if len(parts) > 1 else "data"
        token_at = nested if variant == "data.key" else "top"
    if token_at == "data":
        body["data"][token_name] = token
    elif token_at == "data.report":
        body["data"]["report"][token_name] = token
    elif token_at == "top":
        body[token_name] = token
    return body


def raw_path(request: httpx.Request) -> str:
    """The request path exactly as sent (still percent-encoded), without the query."""
    return request.url.raw_path.split(b"?", 1)[0].decode("ascii")


class FakeRobofy:
    """Callable handler for `httpx.MockTransport`.

    Attributes:
        requests: Every request received, in order (thread-safe append).
        max_concurrent: Highest number of requests handled at the same time.
    """

    def __init__(self, *, delay: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        """Create an empty fake.

        Args:
            delay: Seconds each request takes (real sleep; for concurrency tests only).
            clock: Clock recorded per request in `times`.
        """
        self._bodies: dict[tuple[str, str | None], tuple[int, Any, dict[str, str]]] = {}
        self._faults: dict[str, deque[tuple[int | str, dict[str, str]]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._active = 0
        self.delay = delay
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.max_concurrent = 0

    # -- registration ----------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: Any,
        *,
        token: str | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer GET `path` (percent-encoded, as sent) with `body`.

        The answer applies to requests carrying `nextPageToken=token` (or no token when None).
        """
        self._bodies[(path, token)] = (status, body, headers or {})

    def add_pages(
        self,
        path: str,
        key: str,
        pages: list[list[dict[str, Any]]],
        *,
        variant: str = "data.key",
        token_at: str | None = "auto",
        token_name: str = "next_page_token",
        last_token: str | None = None,
        tokens: list[str | None] | None = None,
    ) -> None:
        """Serve a paged list: page i+1 is requested with the token page i returned.

        Args:
            path: Request path.
            key: Collection key.
            pages: Items per page.
            variant: Envelope variant (see `envelope`).
            token_at: Token location (see `envelope`); None omits the token key entirely.
            token_name: Token key name.
            last_token: What the last page carries (None, "" ...). With `token_at="auto"` a None
                last token is left out.
            tokens: Explicit tokens returned by each page (overrides the generated `t1`, `t2`).
        """
        returned = tokens or [f"t{i + 1}" for i in range(len(pages) - 1)] + [last_token]
        sent: str | None = None
        for items, token in zip(pages, returned, strict=True):
            body = envelope(
                items, key, variant=variant, token=token, token_at=token_at, token_name=token_name
            )
            self.add(path, body, token=sent)
            sent = token if token else None

    def fail(
        self, path: str, kind: int | str, times: int = 1, *, headers: dict[str, str] | None = None
    ) -> None:
        """Queue `times` failures of `kind` (a status or a FAULT_KINDS name) for `path`."""
        assert isinstance(kind, int) or kind in FAULT_KINDS, kind
        for _ in range(times):
            self._faults[path].append((kind, headers or {}))

    # -- inspection ------------------------------------------------------------------------

    def calls(self, path: str) -> int:
        """How many requests hit `path` (percent-encoded, as sent)."""
        return sum(1 for r in self.requests if raw_path(r) == path)

    def tokens_sent(self, path: str) -> list[str | None]:
        """The `nextPageToken` of each request to `path`, in order."""
        return [r.url.params.get(TOKEN_PARAM) for r in self.requests if raw_path(r) == path]

    # -- the handler -----------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Handle one request."""
        with self._lock:
            self.requests.append(request)
            self.times.append(self.clock())
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            fault = (
                self._faults[raw_path(request)].popleft()
                if self._faults[raw_path(request)]
                else None
            )
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._respond(request, fault)
        finally:
            with self._lock:
                self._active -= 1

    def _respond(
        self, request: httpx.Request, fault: tuple[int | str, dict[str, str]] | None
    ) -> httpx.Response:
        if request.method != "GET":
            return httpx.Response(405, json={"message": "Method Not Allowed"})
        if fault is not None:
            kind, headers = fault
            if kind == "connect":
                raise httpx.ConnectError("connection refused", request=request)
            if kind == "read_timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            if kind == "remote_protocol":
                raise httpx.RemoteProtocolError("peer closed connection", request=request)
            if kind == "reset":
                raise httpx.ReadError("connection reset by peer", request=request)
            if kind == "invalid_json":
                return httpx.Response(
                    200, content=b'{"data": {"sessions": [{"sess', headers=headers
                )
            assert isinstance(kind, int)
            return httpx.Response(
                kind,
                json={"message": "Error", "error": {"code": f"E{kind}", "detail": f"fault {kind}"}},
                headers=headers,
            )
        token = request.url.params.get(TOKEN_PARAM)
        answer = self._bodies.get((raw_path(request), token))
        if answer is None:
            code = "UNKNOWN_TOKEN" if token is not None else "NOT_FOUND"
            status = 400 if token is not None else 404
            return httpx.Response(
                status, json={"message": "Error", "error": {"code": code, "detail": "no such page"}}
            )
        status, body, headers = answer
        return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)
