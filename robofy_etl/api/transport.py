"""The client's default httpx transport: kept-alive ``http.client`` connections, proxies through
urllib3, TLS.

Why not httpx's own transport: a sync is thousands of small GETs from a thread pool, so CPU per
request matters (design.md section 6), and httpx's transport (httpcore) spends most of it in its
shared pool at 16 threads. The httpx ``Client`` above this transport (URLs, headers, content
decoding, ``Response``, ``MockTransport`` in tests) stays as it is; `Urllib3Transport` only
moves bytes, on one of two routes per origin:

- **Direct** (no proxy applies): ``http.client`` connections kept alive in a deque that every
  thread takes from and gives back to (`_Direct`). ``http.client`` is the standard library's
  HTTP/1.1 client (status line, headers, chunked and close-delimited bodies, TLS); urllib3 runs
  on it too, and its pool and response objects cost about 0.2 ms of CPU per
  request more: at 64 requests in flight the client then reaches 46% of the latency bound
  instead of 63% (``make bench-client``, docs/performance.md). Like urllib3, it polls a
  connection that sat idle before reusing it, and replaces one the server closed meanwhile.
- **Through a proxy**: urllib3's ``ProxyManager``, which forwards HTTP and tunnels HTTPS with
  ``CONNECT`` (also to an ``https://`` proxy, which ``http.client`` cannot do).

What both routes do:

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
  is noticed before reuse and replaced.
- **One pool for every thread**, kept for the transport's lifetime: a fan-out's worker threads
  reuse the connections of the previous fan-out, and `close()` closes them all.
- **Errors** as the httpx exceptions the retry layer already understands (``ConnectError``,
  ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``, ``ProxyError``).
  Neither route follows redirects or retries: the client retries, in one place.

**The attempt deadline.** A read timeout bounds each wait for bytes, not the response: a server
that sends one byte every 2 s never trips a 5 s read timeout, and once held one request for
121 s. So reading a response, from its status line to its last byte, must also end within an
attempt timeout, by default ``ATTEMPT_TIMEOUT_FACTOR`` (2) times the read timeout: a response
may take as long to arrive as the read timeout allows and as long again to stream in. Past it
the attempt raises ``httpx.ReadTimeout`` and is retried like any timeout. Opening a connection
(TCP, a proxy tunnel and the TLS handshake) is bounded by the connect timeout on top.
`Urllib3Transport` enforces it under ``http.client`` (on both routes), in the reader of each
response; for httpx's own transport, ``httpx_deadline.add_attempt_deadline`` wraps httpcore's
network streams so every read waits at most until the deadline the client set.
"""

from __future__ import annotations

import base64
import collections
import http.client
import io
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple
from urllib.parse import unquote, urlsplit

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


class _Answer(NamedTuple):
    """A whole response, as either route reads it."""

    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes


class _Proxied:
    """Requests through a proxy, on urllib3's pool for it (CONNECT tunnels for HTTPS)."""

    def __init__(self, pool: HTTPConnectionPool, absolute: bool) -> None:
        self._pool = pool
        self._absolute = absolute  # plain HTTP through a forwarding proxy: absolute URLs

    @property
    def closed(self) -> bool:
        return self._pool.pool is None

    def exchange(self, request: httpx.Request) -> _Answer:
        url = request.url
        response = self._pool.urlopen(
            request.method,
            str(url) if self._absolute else url.raw_path.decode("ascii"),
            body=request.read() or None,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
            retries=_NO_RETRIES,
            redirect=False,
            assert_same_host=False,
            preload_content=True,
            decode_content=False,
        )
        return _Answer(
            response.status,
            response.reason or "",
            response.version_string,
            list(response.headers.iteritems()),
            response.data,
        )


class _DirectConnection(http.client.HTTPConnection):
    """``http.client``'s connection, reading with the attempt deadline."""

    response_class = _DeadlineResponse
    last_used = 0.0


class _DirectHTTPSConnection(_DirectConnection, http.client.HTTPSConnection):
    """The HTTPS flavour of `_DirectConnection`."""


class _ConnectFailed(Exception):
    """Opening a direct connection failed (TCP or TLS); the cause is the error."""


# A connection given back less than this long ago is reused without polling it: in a fan-out
# connections come back and go out again within milliseconds, and the poll (a system call, so a
# GIL hand-off) cost more than the rest of taking one. A server that closes a connection that
# soon without saying so fails that request, which the client retries.
_POLL_AFTER_S = 0.1


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection's socket is readable: the server closed it (or
    sent something unasked, which leaves it unusable too). One ``poll`` that does not wait,
    as urllib3 checks before each reuse."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Direct:
    """Keep-alive ``http.client`` connections to one origin, shared by every thread.

    Connections wait in a deque (``append``/``pop`` are atomic, so taking and returning one
    needs no lock): a thread takes the most recently used one, or opens a new one, and returns
    it after the response is read. Up to ``maxsize`` idle connections are kept.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        timeouts: tuple[float, float],
        maxsize: int,
        context: Callable[[], ssl.SSLContext],
    ) -> None:
        self._scheme, self._host, self._port = scheme, host, port
        self._connect_timeout, self._read_timeout = timeouts
        self._maxsize = maxsize
        self._context = context
        self._idle: collections.deque[_DirectConnection] = collections.deque()
        self.closed = False

    def _open(self) -> _DirectConnection:
        connection: _DirectConnection
        if self._scheme == "https":
            connection = _DirectHTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._context()
            )
        else:
            connection = _DirectConnection(self._host, self._port, timeout=self._connect_timeout)
        try:
            connection.connect()  # TCP (and the TLS handshake) within the connect timeout
        except Exception as exc:
            connection.close()
            raise _ConnectFailed(exc) from exc
        connection.sock.settimeout(self._read_timeout)
        return connection

    def _take(self) -> _DirectConnection | None:
        """An idle connection still open, used within the keep-alive expiry; None when there is
        none. An expired one is closed (a firewall may have dropped it silently), and so is one
        the server closed while it sat idle."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return None
            idle = time.monotonic() - connection.last_used
            if idle <= KEEPALIVE_EXPIRY_S and (
                idle < _POLL_AFTER_S or not _dropped(connection.sock)
            ):
                return connection
            connection.close()

    def _give_back(self, connection: _DirectConnection) -> None:
        if self.closed or len(self._idle) >= self._maxsize:
            connection.close()
            return
        connection.last_used = time.monotonic()
        self._idle.append(connection)

    def exchange(self, request: httpx.Request) -> _Answer:
        """Send `request` on a kept-alive connection (or a new one) and read the response."""
        target = request.url.raw_path.decode("ascii")
        body = request.read() or None
        connection = self._take() or self._open()
        try:
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:  # Host and Accept-Encoding included
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        version = "HTTP/1.0" if response.version == 10 else "HTTP/1.1"
        return _Answer(response.status, response.reason, version, response.getheaders(), data)

    def close(self) -> None:
        """Close the idle connections; those in use close when they are given back."""
        self.closed = True
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                return


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
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
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
        # (scheme, host, port) -> its route: direct, or through a proxy.
        self._routes: dict[tuple[str, str, int], _Direct | _Proxied] = {}
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

    def _route(self, scheme: str, host: str, port: int) -> _Direct | _Proxied:
        """Where requests to an origin go: straight to it, or through the proxy for it."""
        key = (scheme, host, port)
        route = self._routes.get(key)
        if route is not None and not route.closed:
            return route
        with self._lock:
            proxy = self._proxies.get(scheme)
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if proxy is not None and self._no_proxy and _bypass_proxy(where, self._no_proxy):
                proxy = None
            if proxy is None:
                route = _Direct(
                    scheme,
                    host,
                    port,
                    (self._connect_timeout, self._read_timeout),
                    self._max_connections,
                    self._context,
                )
            else:
                pool = self._manager(proxy).connection_from_host(host, port, scheme)
                route = _Proxied(pool, absolute=scheme == "http")
            self._routes[key] = route
        return route

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and read its whole response."""
        url = request.url
        scheme = url.scheme
        if scheme not in _SCHEMES:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        host = url.host
        route = self._route(scheme, host, url.port or (443 if scheme == "https" else 80))
        _exchange.timeout = self._attempt_timeout
        _exchange.expired = False
        try:
            answer = route.exchange(request)
        except Exception as exc:
            raise self._error(exc, host, request) from _cause(exc)
        finally:
            _exchange.timeout = None
        return httpx.Response(
            answer.status,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers],
            stream=httpx.ByteStream(answer.body),
            request=request,
            extensions={
                "http_version": answer.version.encode("ascii"),
                "reason_phrase": answer.reason.encode("latin-1"),
            },
        )

    def _error(self, exc: Exception, host: str, request: httpx.Request) -> Exception:
        """The httpx exception for a failed exchange, with no proxy password in its text.

        `exc` comes from ``http.client`` or the socket on a direct route (`_ConnectFailed`
        around a failure to connect), or from urllib3 on a proxy's.
        """
        cause = exc.__cause__ if isinstance(exc, _ConnectFailed) else None
        shown = cause or exc
        detail = f"{type(shown).__name__}: {shown}"
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
            shown_proxy = proxy.shown if proxy is not None else "the proxy"
            return httpx.ProxyError(
                f"proxy {shown_proxy} failed for {host}: {detail}", request=request
            )
        kind: type[httpx.TransportError]
        if cause is not None:  # a direct connection did not open
            if isinstance(cause, TimeoutError):  # TCP or the TLS handshake
                kind, what = httpx.ConnectTimeout, f"timed out connecting to {host}"
            elif isinstance(cause, ssl.SSLError):
                kind, what = httpx.ConnectError, f"TLS handshake with {host} failed"
            else:
                kind, what = httpx.ConnectError, f"cannot connect to {host}"
        elif isinstance(exc, u3.NewConnectionError):  # before its base, ConnectTimeoutError
            kind, what = httpx.ConnectError, f"cannot connect to {host}"
        elif isinstance(exc, u3.ConnectTimeoutError):
            kind, what = httpx.ConnectTimeout, f"timed out connecting to {host}"
        elif isinstance(exc, (u3.ReadTimeoutError, TimeoutError)):
            kind, what = httpx.ReadTimeout, f"timed out reading from {host}"
        elif isinstance(exc, u3.SSLError):  # a TLS failure other than the certificate
            kind, what = httpx.ConnectError, f"TLS handshake with {host} failed"
        elif isinstance(exc, (http.client.HTTPException, ConnectionError)):
            kind, what = httpx.RemoteProtocolError, f"connection to {host} broke"
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
            direct = [route for route in self._routes.values() if isinstance(route, _Direct)]
            self._managers.clear()
            self._routes.clear()
        for manager in managers:
            manager.clear()
        for route in direct:
            route.close()

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
