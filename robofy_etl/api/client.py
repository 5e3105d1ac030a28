"""RobofyClient: read-only GETs over one pooled httpx.Client, with retries, pacing and fan-out.

The in-flight cap (a semaphore) and the request-rate pacer live inside the one request method,
so they hold whatever the number of threads calling `paginate` at once.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from robofy_etl import __version__
from robofy_etl.api.concurrency import FanOutStopped, Pacer, fan_out, fan_out_stopping
from robofy_etl.api.config import ClientConfig, EndpointStats
from robofy_etl.api.endpoints import ENDPOINTS, Endpoint, build_path
from robofy_etl.api.errors import (
    RobofyCertificateError,
    RobofyContractError,
    RobofyTimeoutError,
    RobofyTransportError,
    api_error_from_response,
)
from robofy_etl.api.httpx_deadline import add_attempt_deadline, attempt_deadline
from robofy_etl.api.pagination import Page, describe_keys, extract_object, iter_pages
from robofy_etl.api.records import normalize_record
from robofy_etl.api.retry import backoff_delay, certificate_error, parse_retry_after, should_retry
from robofy_etl.api.transport import Urllib3Transport

__all__ = ["ClientConfig", "EndpointStats", "RobofyClient"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _NoCookies(httpx.Cookies):
    """A cookie jar that stores nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class RobofyClient:
    """Read-only client for the Robofy REST API. Knows nothing about Dagster or DuckDB.

    Use it as a context manager so the connection pool closes::

        with RobofyClient(ClientConfig(api_key=key)) as api:
            for page in api.paginate("sessions", chatbot_id="abc"):
                ...

    Every method is safe to call from many threads at once.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the client and its connection pool.

        Args:
            config: Settings.
            transport: An httpx transport (tests pass `httpx.MockTransport`).
            sleep: Sleep function for backoff and pacing (tests pass a recorder). None (the
                default) sleeps in real time, and a backoff on a `fan_out` worker is cut
                short when the fan-out stops.
            rng: Jitter source (default: a fresh `random.Random()`).
            clock: Monotonic clock for the pacer.
        """
        self._config = config
        self._retry = config.retry
        self._sleep: Callable[[float], Any] = time.sleep if sleep is None else sleep
        self._real_sleep = sleep is None
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        key = config.api_key
        auth = (
            {"Authorization": f"Bearer {key}"}
            if config.auth_header == "bearer"
            else {"api-key": key}
        )
        pool = config.max_in_flight + 4
        own_httpx = transport is None and config.http_transport == "httpx"
        if transport is None and config.http_transport == "urllib3":
            # One pool for every thread, kept until close(): fan-out workers reuse the
            # connections earlier fan-outs opened.
            transport = Urllib3Transport(
                connect_timeout=config.connect_timeout_s,
                read_timeout=config.timeout_s,
                attempt_timeout=config.attempt_timeout,
                max_connections=pool,
            )
        self._base_url = config.base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={
                "Accept": "application/json",
                "User-Agent": f"robofy-etl/{__version__}",
                **auth,
            },
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
            follow_redirects=False,
        )
        # The API authenticates with a header and never needs cookies, but httpx runs every
        # response through a cookiejar (~7% of the CPU of a sync). A jar that ignores
        # Set-Cookie also keeps a server from pinning state onto later requests.
        self._http._cookies = _NoCookies()
        # httpx has no total timeout: its transport gets the attempt deadline through a wrapped
        # network backend, set per attempt in _get. (Urllib3Transport enforces it itself; an
        # injected transport is the caller's business.)
        self._httpx_deadline: float | None = None
        if own_httpx and add_attempt_deadline(self._http):
            self._httpx_deadline = config.attempt_timeout
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._pacer = (
            Pacer(config.max_requests_per_second, clock, self._sleep)
            if config.max_requests_per_second
            else None
        )
        self._stats_lock = threading.Lock()
        self._stats: dict[str, EndpointStats] = {name: EndpointStats() for name in ENDPOINTS}

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> RobofyClient:
        """Return the client."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection pool."""
        self.close()

    def close(self) -> None:
        """Close the connection pool: every connection, those fan-out workers used included."""
        self._http.close()

    def __repr__(self) -> str:
        """Describe the client without the key."""
        c = self._config
        return f"RobofyClient(base_url={c.base_url!r}, max_in_flight={c.max_in_flight})"

    @property
    def config(self) -> ClientConfig:
        """The client's configuration."""
        return self._config

    # -- the one request method ------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._config.api_key, "***")

    def _get(self, name: str, path: str, params: Mapping[str, str] | None) -> Any:
        """GET `path` with retries; return the parsed JSON body.

        This is the only place that sends requests, and it only sends GET.
        """
        policy = self._retry
        stats = self._stats.get(name)
        if stats is None:
            with self._stats_lock:
                stats = self._stats.setdefault(name, EndpointStats())
        # One absolute URL string: httpx parses it once, where a relative path and params are
        # parsed, merged and re-parsed (89 -> 44 µs of CPU per request). Same encoding as httpx.
        url = self._base_url + path + ("?" + urlencode(params) if params else "")
        attempt = 0
        stopping = fan_out_stopping()
        while True:
            if stopping is not None and stopping.is_set():
                raise FanOutStopped  # the fan-out this thread serves has ended: no new request
            attempt += 1
            failure: Exception | None = None
            response: httpx.Response | None = None
            content = b""
            # Built before taking a slot: the slot (the in-flight cap) covers only the exchange.
            request = self._http.build_request("GET", url)
            started = time.perf_counter()
            with self._slots:
                if self._pacer is not None:
                    self._pacer.wait()
                try:
                    if self._httpx_deadline is None:
                        response = self._http.send(request)
                        content = response.content
                    else:
                        with attempt_deadline(self._httpx_deadline):
                            response = self._http.send(request)
                            content = response.content
                except httpx.TransportError as exc:
                    failure = exc
            elapsed = time.perf_counter() - started
            status = 0 if response is None else response.status_code
            if failure is None and 200 <= status < 300:
                try:
                    body = json.loads(content)
                except ValueError as exc:
                    failure = exc
                else:
                    with self._stats_lock:
                        stats.requests += 1
                        stats.pages += 1
                        stats.bytes += len(content)
                        stats.elapsed_s += elapsed
                    return body
            will_retry = (
                should_retry(status if failure is None else failure, policy)
                and attempt < policy.max_attempts
            )
            with self._stats_lock:
                stats.requests += 1
                stats.errors += 1
                stats.bytes += len(content)
                stats.elapsed_s += elapsed
                stats.rate_limited += status == 429
                stats.retries += will_retry
            retry_after = (
                parse_retry_after(response.headers.get("retry-after"))
                if response is not None and failure is None
                else None
            )
            if not will_retry:
                # `from None`: the httpx exception holds the request, and so the auth header;
                # its type and text are already in our message.
                raise self._final_error(
                    name, path, status, content, failure, attempt, retry_after
                ) from None
            with self._rng_lock:
                delay = backoff_delay(attempt, policy, self._rng, retry_after)
            _log.warning(
                "GET %s failed (%s), attempt %d of %d; retrying in %.2fs",
                path,
                self._scrub(_reason(status, failure)),
                attempt,
                policy.max_attempts,
                delay,
            )
            if stopping is not None and self._real_sleep:
                stopping.wait(delay)  # returns at once when the fan-out stops
            else:
                self._sleep(delay)

    def _final_error(
        self,
        name: str,
        path: str,
        status: int,
        content: bytes,
        failure: Exception | None,
        attempts: int,
        retry_after: float | None,
    ) -> Exception:
        base = self._config.base_url
        if isinstance(failure, ValueError):
            return RobofyContractError(
                f"Robofy returned a body that is not valid JSON for {path} ({name}) on all "
                f"{attempts} attempts (HTTP {status}, {len(content)} bytes). Check "
                "ROBOFY_BASE_URL points at the API, not a web page or a proxy.",
                endpoint=name,
                path=path,
            )
        bad_certificate = None if failure is None else certificate_error(failure)
        if bad_certificate is not None:
            reason = bad_certificate.verify_message or str(bad_certificate)
            return RobofyCertificateError(
                self._scrub(
                    f"Robofy at {base} presented a TLS certificate that cannot be verified "
                    f"({reason}) for {path}; not retried. If a proxy or firewall re-signs HTTPS "
                    "(a company CA), point SSL_CERT_FILE (a PEM bundle) or SSL_CERT_DIR at its "
                    "CA certificates; otherwise the server certificate must be fixed, or "
                    "ROBOFY_BASE_URL names the wrong host."
                ),
                base_url=self._scrub(base),
                path=path,
                reason=reason,
            )
        if isinstance(failure, httpx.TimeoutException):
            return RobofyTimeoutError(
                self._scrub(
                    f"Robofy at {base} did not answer {path} in time "
                    f"({type(failure).__name__}, {attempts} attempts; read timeout "
                    f"{self._config.timeout_s:g}s, at most {self._config.attempt_timeout:g}s "
                    "per attempt). Check ROBOFY_BASE_URL and the network, or raise "
                    "ROBOFY_TIMEOUT_S."
                ),
                base_url=self._scrub(base),
                path=path,
            )
        if failure is not None:
            return RobofyTransportError(
                self._scrub(
                    f"Could not reach Robofy at {base} for {path} after {attempts} attempts "
                    f"({type(failure).__name__}: {failure}). Check ROBOFY_BASE_URL and the "
                    "network (proxy, DNS, firewall)."
                ),
                base_url=self._scrub(base),
                path=path,
            )
        return api_error_from_response(
            status,
            content,
            path,
            retry_after=retry_after,
            attempts=attempts,
            secret=self._config.api_key,
        )

    # -- public reads ----------------------------------------------------------------------

    def _resolve(
        self, endpoint: str | Endpoint, kwargs: Mapping[str, object]
    ) -> tuple[Endpoint, str, dict[str, str]]:
        ep = endpoint if isinstance(endpoint, Endpoint) else ENDPOINTS.get(endpoint)
        if ep is None:
            raise KeyError(f"unknown endpoint {endpoint!r}; known: {sorted(ENDPOINTS)}")
        query_names = dict(ep.query)
        path_kw: dict[str, object] = {}
        query: dict[str, str] = {}
        for key, value in kwargs.items():
            if key in query_names and key not in ep.path_params:
                if value is not None:
                    query[query_names[key]] = str(value)
            else:
                path_kw[key] = value
        return ep, build_path(ep, path_kw), query

    def paginate(
        self,
        endpoint: str | Endpoint,
        /,
        *,
        params: Mapping[str, str] | None = None,
        **path_params: object,
    ) -> Iterator[Page]:
        """Yield the pages of a list endpoint, following next-page tokens.

        Args:
            endpoint: Registry name (`"sessions"`) or an `Endpoint`.
            params: Extra query parameters sent on every page.
            **path_params: Path parameters by name (`chatbot_id="abc"`), plus the endpoint's
                optional query keywords (leads: `session_id`).

        Returns:
            A lazy iterator of `Page` objects with normalized items; nothing is requested until
            it is iterated. Bad endpoint names or parameters raise here, at call time.

        Raises:
            KeyError: Unknown endpoint name.
            TypeError: Missing or unexpected path parameters, or a single-object endpoint.
            RobofyError: Any subclass (see `errors.py`), while iterating.
        """
        ep, path, query = self._resolve(endpoint, path_params)
        if ep.single:
            raise TypeError(f"endpoint {ep.name!r} returns one object; use get_one()")
        if params:
            query.update(params)

        def fetch(page_params: Mapping[str, str]) -> Any:
            return self._get(ep.name, path, page_params)

        return iter_pages(
            ep,
            path,
            fetch,
            params=query,
            token_param=self._config.page_token_param,
            max_pages=self._config.max_pages,
        )

    def iter_items(
        self,
        endpoint: str | Endpoint,
        /,
        *,
        params: Mapping[str, str] | None = None,
        **path_params: object,
    ) -> Iterator[dict[str, Any]]:
        """Yield the normalized items of every page (see `paginate`)."""
        for page in self.paginate(endpoint, params=params, **path_params):
            yield from page.items

    def fetch_one(self, endpoint: str | Endpoint, /, **path_params: object) -> Page:
        """GET a single-object endpoint and return it as a one-item `Page` (with its envelope).

        Raises:
            TypeError: The endpoint is a list endpoint.
            RobofyContractError: The body holds no object.
        """
        ep, path, query = self._resolve(endpoint, path_params)
        if not ep.single:
            raise TypeError(f"endpoint {ep.name!r} is a list; use paginate() or iter_items()")
        body = self._get(ep.name, path, query)
        found = extract_object(body)
        if found is None:
            raise RobofyContractError(
                f"Cannot find the {ep.name} object in the response to {path}: the body has "
                f"{describe_keys(body)}.",
                endpoint=ep.name,
                path=path,
                page=1,
            )
        obj, envelope = found
        return Page([normalize_record(ep, obj)], 1, None, envelope, None, ep.name)

    def get_one(self, endpoint: str | Endpoint, /, **path_params: object) -> dict[str, Any]:
        """GET a single-object endpoint (E2, E4, E9) and return the normalized object."""
        return self.fetch_one(endpoint, **path_params).items[0]

    def stats_query(
        self, *, project_id: int, chatbot_id: str | None, start: date, end: date
    ) -> dict[str, str]:
        """Build E8's query (names from `ClientConfig.stats_params`; dates `YYYY-MM-DD`)."""
        if end < start:
            raise ValueError(f"message_stats: end {end} is before start {start}")
        p_project, p_chatbot, p_start, p_end = self._config.stats_params
        query = {p_project: str(project_id), p_start: start.isoformat(), p_end: end.isoformat()}
        if chatbot_id is not None:
            query[p_chatbot] = chatbot_id
        return query

    def message_stats(
        self,
        *,
        project_id: int,
        chatbot_id: str | None = None,
        start: date,
        end: date,
    ) -> list[dict[str, Any]]:
        """Daily message statistics (E8) for `[start, end]`, end inclusive.

        Returns:
            Normalized data points, in API order.
        """
        query = self.stats_query(project_id=project_id, chatbot_id=chatbot_id, start=start, end=end)
        return list(self.iter_items("message_stats", params=query))

    # -- concurrency -----------------------------------------------------------------------

    def fan_out(
        self,
        tasks: Iterable[T],
        fn: Callable[[T], R],
        max_workers: int | None = None,
    ) -> Iterator[tuple[T, R]]:
        """Run `fn(task)` for every task on `max_workers` threads (default: `max_in_flight`).

        Yields `(task, result)` in completion order; see `concurrency.fan_out` for the
        lookahead, and how it stops (a stopped worker sends no further request through any
        `RobofyClient`). The in-flight cap and rate limit still apply to what `fn` requests.
        """
        return fan_out(tasks, fn, max_workers or self._config.max_in_flight)

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, EndpointStats]:
        """Return a snapshot of the per-endpoint counters, keyed by endpoint name."""
        with self._stats_lock:
            return {name: replace(s) for name, s in self._stats.items()}

    def total_stats(self) -> EndpointStats:
        """Return the counters summed over all endpoints."""
        total = EndpointStats()
        for s in self.stats().values():
            total = total + s
        return total


def _reason(status: int, failure: Exception | None) -> str:
    if failure is None:
        return f"HTTP {status}"
    if isinstance(failure, ValueError):
        return f"HTTP {status} with invalid JSON"
    return f"{type(failure).__name__}: {failure}"
