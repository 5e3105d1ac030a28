"""RobofyClient: read-only GETs over one pooled httpx.Client, with retries, pacing and fan-out.

The in-flight cap (a semaphore) and the request-rate pacer live inside the one request method,
so they hold whatever the number of threads calling `paginate` at once.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import httpx

from robofy_etl import __version__
from robofy_etl.api.endpoints import ENDPOINTS, Endpoint, build_path
from robofy_etl.api.errors import (
    RobofyCertificateError,
    RobofyContractError,
    RobofyTimeoutError,
    RobofyTransportError,
    api_error_from_response,
)
from robofy_etl.api.pagination import Page, describe_keys, extract_object, iter_pages
from robofy_etl.api.records import normalize_record
from robofy_etl.api.retry import (
    RetryPolicy,
    backoff_delay,
    certificate_error,
    parse_retry_after,
    should_retry,
)
from robofy_etl.api.transport import (
    ATTEMPT_TIMEOUT_FACTOR,
    Urllib3Transport,
    add_attempt_deadline,
    attempt_deadline,
)
from robofy_etl.settings import DEFAULTS, Settings, check_api_key

__all__ = ["ClientConfig", "EndpointStats", "RobofyClient"]

_log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _NoCookies(httpx.Cookies):
    """A cookie jar that stores nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


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
        http_transport: "urllib3" (default: `transport.Urllib3Transport`, urllib3's pool;
            least CPU per request) or "httpx" (httpx's own transport, httpcore's pool). Both
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


class _Pacer:
    """Spaces request starts at least `1/rate` seconds apart, across threads."""

    def __init__(
        self, rate: float, clock: Callable[[], float], sleep: Callable[[float], Any]
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)


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
            _Pacer(config.max_requests_per_second, clock, self._sleep)
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
        stopping: threading.Event | None = getattr(_fan_out_worker, "stopping", None)
        while True:
            if stopping is not None and stopping.is_set():
                raise _FanOutStopped  # the fan-out this thread serves has ended: no new request
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
        """Run `fn(task)` for every task on a thread pool; yield `(task, result)` as each ends.

        At most `2 * max_workers` tasks are submitted ahead of the consumer, so a generator of
        100k tasks is consumed lazily and memory stays flat. Results come in completion order.
        The HTTP in-flight cap and rate limit still apply to whatever `fn` requests.

        The fan-out stops as soon as the consumer is gone: when `fn` raises, when the consumer
        raises (Ctrl-C's KeyboardInterrupt included) or closes the generator (`break`,
        `close()`). Queued tasks are dropped, no worker starts another request through any
        `RobofyClient` (a `_get` on a stopped worker raises, a retry backoff is cut short), and
        the generator returns once the requests in flight have ended, which the attempt timeout
        bounds. No worker thread outlives it.

        Args:
            tasks: Any iterable (consumed lazily).
            fn: Called once per task, on a worker thread.
            max_workers: Threads (default: `max_in_flight`).

        Yields:
            `(task, fn(task))` pairs.

        Raises:
            Exception: The first exception raised by `fn`, after pending tasks are cancelled and
                running ones have finished.
        """
        workers = max_workers or self._config.max_in_flight
        ahead = 2 * workers
        # Plain threads on C queues rather than a ThreadPoolExecutor: its Future per task (with
        # a Condition and callbacks) was about 5% of a sync's GIL time.
        todo: queue.SimpleQueue[object] = queue.SimpleQueue()
        done: queue.SimpleQueue[tuple[Any, Any, BaseException | None]] = queue.SimpleQueue()
        stopping = threading.Event()

        def work() -> None:
            _fan_out_worker.stopping = stopping
            while True:
                task = todo.get()
                if task is _STOP:
                    # One marker stops every worker: each puts it back for the next. Counting
                    # one marker per thread could leave a worker waiting forever when Ctrl-C
                    # lands between starting a thread and counting it.
                    todo.put(_STOP)
                    return
                if stopping.is_set():
                    continue  # cancelled: the consumer is gone
                try:
                    done.put((task, fn(task), None))  # type: ignore[arg-type]
                except BaseException as exc:  # handed to the consumer, raised there
                    done.put((task, None, exc))

        threads: list[threading.Thread] = []
        source = iter(tasks)
        pending = 0
        try:
            exhausted = False
            while True:
                while not exhausted and pending < ahead:
                    try:
                        task = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    todo.put(task)
                    pending += 1
                    if len(threads) < min(pending, workers):  # start threads as work arrives
                        thread = threading.Thread(
                            target=work, name=f"robofy-fan-out_{len(threads)}", daemon=True
                        )
                        threads.append(thread)  # before start(): joined even if Ctrl-C lands
                        thread.start()
                if not pending:
                    return
                task, result, error = done.get()
                pending -= 1
                if error is not None:
                    raise error
                yield task, result
        finally:
            # Runs on return, on any exception in this frame (KeyboardInterrupt included) and
            # on generator close. Stop first, then wait: a second Ctrl-C while waiting
            # interrupts the join, and the workers still stop on their own.
            stopping.set()
            todo.put(_STOP)
            for thread in threads:
                if thread.is_alive():  # False for a thread whose start() was interrupted
                    thread.join()

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


_STOP = object()  # tells a fan-out thread to end

# On a fan_out worker thread: `.stopping`, the Event set when that fan-out ends.
_fan_out_worker = threading.local()


class _FanOutStopped(BaseException):
    """Raised in a fan-out worker that tries to send a request after its fan-out stopped.

    A BaseException, like KeyboardInterrupt, so that `except Exception` in the task function
    cannot swallow it and carry on. Nobody sees it: the consumer has already gone.
    """


def _reason(status: int, failure: Exception | None) -> str:
    if failure is None:
        return f"HTTP {status}"
    if isinstance(failure, ValueError):
        return f"HTTP {status} with invalid JSON"
    return f"{type(failure).__name__}: {failure}"
