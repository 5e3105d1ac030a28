"""The client's default httpx transport: urllib3's pools, proxies from the environment, TLS.

Why urllib3 under httpx: a sync is thousands of small GETs from a thread pool, so CPU per
request matters (design.md section 6), and httpx's own transport (httpcore) spends most of it in
its shared pool at 16 threads. urllib3 2.x is a maintained HTTP/1.1 stack (``http.client``
underneath) with a thread-safe connection pool, CONNECT tunnels and TLS. The httpx ``Client``
above it (URLs, headers, content decoding, ``Response``, ``MockTransport`` in tests) stays as it
is; `Urllib3Transport` only moves bytes.

What it adds to urllib3:

- **Proxies** from ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` (either case), read once
  with ``urllib.request.getproxies()``; ``NO_PROXY`` is matched by
  ``urllib.request.proxy_bypass_environment``. HTTP requests are forwarded to the proxy; HTTPS
  requests go through a ``CONNECT`` tunnel, so the proxy never sees the API key. A proxy URL's
  user and password become a ``Proxy-Authorization`` header and never appear in a URL, a log
  line or an error. ``ALL_PROXY`` is not read (it is usually a SOCKS proxy, which urllib3 does
  not speak without an extra dependency).
- **TLS** through one ``ssl.create_default_context()``, built on first use: it verifies the
  certificate and the host name and honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``. A
  verification failure is raised as ``httpx.ConnectError`` caused by the
  ``ssl.SSLCertVerificationError``, which the client reports at once (``retry.certificate_error``).
- **Keep-alive expiry.** A pooled connection idle for more than `KEEPALIVE_EXPIRY_S` is closed
  instead of reused (a firewall may have dropped it silently); one the server closed meanwhile
  is noticed by urllib3 before reuse and replaced.
- **One pool for every thread**, kept for the transport's lifetime: a fan-out's worker threads
  reuse the connections of the previous fan-out, and `close()` closes them all.
- **Errors** as the httpx exceptions the retry layer already understands (``ConnectError``,
  ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``, ``ProxyError``).
  urllib3's own retries and redirects are off: the client retries, in one place.

**The attempt deadline.** A read timeout bounds each wait for bytes, not the response: a server
that sends one byte every 2 s never trips a 5 s read timeout, and once held one request for
121 s. So reading a response, from its status line to its last byte, must also end within an
attempt timeout, by default ``ATTEMPT_TIMEOUT_FACTOR`` (2) times the read timeout: a response
may take as long to arrive as the read timeout allows and as long again to stream in. Past it
the attempt raises ``httpx.ReadTimeout`` and is retried like any timeout. Opening a connection
(TCP, a proxy tunnel and the TLS handshake) is bounded by the connect timeout on top.
`Urllib3Transport` enforces it under ``http.client``, in the reader of each response; for
httpx's own transport, ``add_attempt_deadline`` wraps httpcore's network streams so every read
waits at most until the deadline the client set with ``attempt_deadline``.
"""

from __future__ import annotations

import base64
import http.client
import io
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

import httpcore
import httpx
import urllib3
from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "ATTEMPT_TIMEOUT_FACTOR",
    "KEEPALIVE_EXPIRY_S",
    "Urllib3Transport",
    "add_attempt_deadline",
    "attempt_deadline",
]

ATTEMPT_TIMEOUT_FACTOR = 2.0
"""Default attempt timeout, in read timeouts (see the module docstring)."""

KEEPALIVE_EXPIRY_S = 5.0
"""Seconds a pooled connection may sit idle and still be reused; older ones are closed.

httpx's own default. Servers commonly close idle connections after 5 to 75 s, and one that
closes sooner is noticed before reuse; the expiry guards against connections that a NAT or a
firewall dropped without a word, which would otherwise cost a full read timeout.
"""

_SCHEMES = ("http", "https")

# urllib3 neither retries nor follows redirects: the client retries, in one place. One shared
# object, as urllib3 would otherwise build one per request.
_NO_RETRIES = urllib3.Retry(total=False, redirect=False, raise_on_redirect=False)

# NO_PROXY matching as urllib does it on every platform (``urllib.request.proxy_bypass`` asks
# the system settings instead on macOS and Windows). Present since Python 3.0, but left out of
# the type stubs.
_bypass_proxy: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]

# On the thread running an exchange: `.timeout`, the attempt timeout of its transport, and
# `.expired`, set when a response read hit the deadline.
_exchange = threading.local()


class _DeadlineExceeded(TimeoutError):
    """The response did not arrive in full before the attempt deadline."""


class _DeadlineReader(io.RawIOBase):
    """The read side of a socket whose reads all end by one deadline.

    ``http.client`` reads a response through ``sock.makefile("rb")``; this wraps that raw reader
    and shortens the socket timeout when the deadline is nearer than the read timeout, so a fast
    response pays one clock read per ``recv`` and no extra system call.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._read_timeout = sock.gettimeout()
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int | None:
        remaining = self._deadline - time.monotonic()
        shortened = self._read_timeout is None or remaining < self._read_timeout
        if shortened:
            if remaining <= 0:
                _exchange.expired = True
                raise _DeadlineExceeded
            self._sock.settimeout(remaining)
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if shortened:  # the deadline, not the read timeout, ran out
                _exchange.expired = True
                raise _DeadlineExceeded from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s response, read through a `_DeadlineReader`.

    The deadline starts when the response is read, that is once the request has been sent
    (``http.client`` builds the response object then), and is the attempt timeout of the
    transport running on this thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        timeout: float | None = getattr(_exchange, "timeout", None)
        if timeout is not None:
            # The base class only calls ``sock.makefile("rb")``: hand it the deadline reader.
            reader = io.BufferedReader(_DeadlineReader(sock, time.monotonic() + timeout))
            sock = _ReaderSource(reader)  # type: ignore[assignment]
        super().__init__(sock, debuglevel, method, url)


class _ReaderSource:
    """Stands in for the socket ``http.client.HTTPResponse`` asks for its reader."""

    __slots__ = ("_reader",)

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader

    def makefile(self, mode: str) -> BinaryIO:
        return self._reader


class _ExpiringConnection(HTTPConnection):
    """A urllib3 connection that reads with the attempt deadline and expires when idle."""

    response_class = _DeadlineResponse
    _last_response = float("inf")  # never used: not expired

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        response = super().getresponse()
        self._last_response = time.monotonic()
        return response

    @property
    def is_connected(self) -> bool:
        # urllib3 asks this before reusing a pooled connection, and closes it when False.
        if time.monotonic() - self._last_response > KEEPALIVE_EXPIRY_S:
            return False
        return super().is_connected


class _ExpiringHTTPSConnection(_ExpiringConnection, HTTPSConnection):
    """The HTTPS flavour of `_ExpiringConnection`."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _ExpiringConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _ExpiringHTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` or the first exception of type `kind` among its causes and arguments."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return None


class _Proxy:
    """A proxy URL split into what urllib3 needs and what may be shown."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.scheme = parts.scheme.lower()
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        self.url = f"{self.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        self.secret = unquote(parts.password) if parts.password else None
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{self.secret or ''}"
            token = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
            self.headers["Proxy-Authorization"] = f"Basic {token}"
        self.shown = self.url if parts.username is None else self.url.replace("://", "://***@")


class Urllib3Transport(httpx.BaseTransport):
    """An httpx transport on urllib3's connection pools; safe to share between threads."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        attempt_timeout: float | None = None,
        max_connections: int = 10,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        """Create the transport; pools and connections are opened on first use.

        Args:
            connect_timeout: Seconds to open a connection (TCP, proxy tunnel, TLS handshake).
            read_timeout: Seconds to wait for each chunk of the response.
            attempt_timeout: Seconds to read a whole response (default
                ``ATTEMPT_TIMEOUT_FACTOR * read_timeout``).
            max_connections: Idle connections kept per origin (and proxy) for reuse.
            ssl_context: TLS settings (default: ``ssl.create_default_context()``, which
                verifies certificates and honours SSL_CERT_FILE and SSL_CERT_DIR).
            proxies: Proxy URLs by scheme plus ``no`` (the NO_PROXY list), as
                ``urllib.request.getproxies()`` returns them (the default: read from the
                environment now).

        Raises:
            ValueError: A proxy URL that cannot be used; the message names the variable.
        """
        self._attempt_timeout = (
            ATTEMPT_TIMEOUT_FACTOR * read_timeout if attempt_timeout is None else attempt_timeout
        )
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        found = urllib.request.getproxies() if proxies is None else dict(proxies)
        self._no_proxy = {"no": found["no"]} if found.get("no") else {}
        self._proxies: dict[str, _Proxy] = {}
        for scheme in _SCHEMES:
            if found.get(scheme):
                self._proxies[scheme] = _proxy_from(scheme, found[scheme])
        self._secrets = [p.secret for p in self._proxies.values() if p.secret]
        self._lock = threading.Lock()
        # (scheme, host, port) -> the pool that serves it, and whether it takes absolute URLs
        # (plain HTTP through a forwarding proxy).
        self._routes: dict[tuple[str, str, int], tuple[HTTPConnectionPool, bool]] = {}
        self._managers: dict[str | None, urllib3.PoolManager] = {}

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _manager(self, proxy: _Proxy | None) -> urllib3.PoolManager:
        """The pool manager for direct requests (None) or for one proxy; under `_lock`."""
        key = None if proxy is None else proxy.url
        manager = self._managers.get(key)
        if manager is None:
            pool_kw: dict[str, Any] = {
                "timeout": self._timeout,
                "maxsize": self._max_connections,
                "block": False,
                "retries": _NO_RETRIES,
                "ssl_context": self._context(),
            }
            if proxy is None:
                manager = urllib3.PoolManager(num_pools=64, **pool_kw)
            else:
                manager = urllib3.ProxyManager(
                    proxy.url,
                    num_pools=64,
                    proxy_headers=proxy.headers,
                    proxy_ssl_context=self._context() if proxy.scheme == "https" else None,
                    **pool_kw,
                )
            manager.pool_classes_by_scheme = _POOL_CLASSES
            self._managers[key] = manager
        return manager

    def _route(self, scheme: str, host: str, port: int) -> tuple[HTTPConnectionPool, bool]:
        key = (scheme, host, port)
        route = self._routes.get(key)
        if route is not None and route[0].pool is not None:
            return route
        with self._lock:
            proxy = self._proxies.get(scheme)
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if proxy is not None and self._no_proxy and _bypass_proxy(where, self._no_proxy):
                proxy = None
            manager = self._manager(proxy)
            pool = manager.connection_from_host(host, port, scheme)
            route = self._routes[key] = (pool, proxy is not None and scheme == "http")
        return route

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read its whole response."""
        url = request.url
        scheme = url.scheme
        if scheme not in _SCHEMES:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        host = url.host
        pool, absolute = self._route(scheme, host, url.port or (443 if scheme == "https" else 80))
        target = str(url) if absolute else url.raw_path.decode("ascii")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        _exchange.timeout = self._attempt_timeout
        _exchange.expired = False
        try:
            response = pool.urlopen(
                request.method,
                target,
                body=request.read() or None,
                headers=headers,
                retries=_NO_RETRIES,
                redirect=False,
                assert_same_host=False,
                preload_content=True,
                decode_content=False,
            )
        except Exception as exc:
            raise self._error(exc, host, request) from _cause(exc)
        finally:
            _exchange.timeout = None
        return httpx.Response(
            response.status,
            headers=[
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.iteritems()
            ],
            stream=httpx.ByteStream(response.data),
            request=request,
            extensions={
                "http_version": response.version_string.encode("ascii"),
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    def _error(self, exc: Exception, host: str, request: httpx.Request) -> Exception:
        """The httpx exception for a urllib3 failure, with no proxy password in its text."""
        detail = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        if _find(exc, ssl.SSLCertVerificationError) is not None:
            return httpx.ConnectError(
                f"TLS handshake with {host} failed: {detail}", request=request
            )
        if getattr(_exchange, "expired", False):
            return httpx.ReadTimeout(
                f"no complete response from {host} within {self._attempt_timeout:g}s "
                "(the attempt timeout; the server is sending too slowly)",
                request=request,
            )
        if isinstance(exc, u3.ProxyError):
            proxy = self._proxies.get(request.url.scheme)
            shown = proxy.shown if proxy is not None else "the proxy"
            return httpx.ProxyError(f"proxy {shown} failed for {host}: {detail}", request=request)
        kind: type[httpx.TransportError]
        if isinstance(exc, u3.NewConnectionError):  # before its base class, ConnectTimeoutError
            kind, what = httpx.ConnectError, f"cannot connect to {host}"
        elif isinstance(exc, u3.ConnectTimeoutError):
            kind, what = httpx.ConnectTimeout, f"timed out connecting to {host}"
        elif isinstance(exc, u3.ReadTimeoutError):
            kind, what = httpx.ReadTimeout, f"timed out reading from {host}"
        elif isinstance(exc, u3.SSLError):  # a TLS failure other than the certificate
            kind, what = httpx.ConnectError, f"TLS handshake with {host} failed"
        elif isinstance(exc, u3.ProtocolError):
            broken = _find(exc, ConnectionError) or _find(exc, http.client.HTTPException)
            kind = (
                httpx.RemoteProtocolError if broken or not _find(exc, OSError) else httpx.ReadError
            )
            what = f"connection to {host} broke"
        elif isinstance(exc, (u3.LocationValueError, ValueError)):
            kind, what = httpx.LocalProtocolError, f"cannot send the request to {host}"
        elif isinstance(exc, (u3.HTTPError, OSError)):
            kind, what = httpx.ReadError, f"network error with {host}"
        else:
            raise exc
        return kind(f"{what}: {detail}", request=request)

    def close(self) -> None:
        """Close every pooled connection; connections in use close when they are returned."""
        with self._lock:
            managers = list(self._managers.values())
            self._managers.clear()
            self._routes.clear()
        for manager in managers:
            manager.clear()

    def __enter__(self) -> Urllib3Transport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()


def _cause(exc: Exception) -> BaseException | None:
    """What the httpx exception is raised from: the certificate error when there is one.

    ``retry.certificate_error`` looks for it along the causes; anything else stays out of the
    chain (urllib3's exceptions hold the pool, not secrets, but there is no need to keep them).
    """
    return _find(exc, ssl.SSLCertVerificationError)


def _proxy_from(scheme: str, url: str) -> _Proxy:
    variable = f"{scheme.upper()}_PROXY"
    try:
        proxy = _Proxy(url)
    except ValueError:
        raise ValueError(
            f"{variable} (or {variable.lower()}) is not a valid proxy URL; "
            "expected http://[user:password@]host:port."
        ) from None
    if proxy.scheme not in _SCHEMES or proxy.url.endswith("://"):
        raise ValueError(
            f"{variable} (or {variable.lower()}) must be an http:// or https:// proxy URL with "
            f"a host (found a {proxy.scheme}:// URL); SOCKS proxies are not supported."
        )
    return proxy


# -- the attempt deadline for httpx's own transport ---------------------------------------------

_attempt = threading.local()  # .deadline: monotonic time the current exchange must end by


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Bound the reads of the exchange run inside the block (this thread) to `seconds` in all.

    Only streams wrapped by `add_attempt_deadline` obey it. Time spent opening a connection is
    added back, as the connect timeout bounds that part.
    """
    _attempt.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _attempt.deadline = None


class _DeadlineStream(httpcore.NetworkStream):
    """An httpcore stream whose reads also stop at the thread's attempt deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline: float | None = getattr(_attempt, "deadline", None)
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise httpcore.ReadTimeout(
                    "no complete response within the attempt timeout "
                    "(the server is sending too slowly)"
                )
            if timeout is None or remaining < timeout:
                timeout = remaining
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        with _connecting():
            return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


@contextmanager
def _connecting() -> Iterator[None]:
    """Give the time spent connecting back to the attempt deadline (the connect timeout's)."""
    started = time.monotonic()
    try:
        yield
    finally:
        deadline: float | None = getattr(_attempt, "deadline", None)
        if deadline is not None:
            _attempt.deadline = deadline + (time.monotonic() - started)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Wraps httpcore's network backend so that every stream it opens is a `_DeadlineStream`."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with _connecting():
            stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with _connecting():
            stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def add_attempt_deadline(client: httpx.Client) -> int:
    """Make the httpx transports of `client` honour `attempt_deadline`.

    httpx has no total timeout and does not let a caller choose httpcore's network backend, so
    this swaps the backend of each connection pool the client built (its default transport and
    one per proxy it found in the environment) for a wrapper. It reaches into two private
    attributes (``httpx.HTTPTransport._pool``, ``httpcore.ConnectionPool._network_backend``),
    as the client already does for the cookie jar; the transport tests fail if either moves.
    Call it before the first request.

    Args:
        client: An ``httpx.Client`` built without a custom transport.

    Returns:
        How many connection pools now honour the deadline.
    """
    transports = [client._transport, *client._mounts.values()]
    wrapped = 0
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(
            backend, _DeadlineBackend
        ):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
            wrapped += 1
    return wrapped
