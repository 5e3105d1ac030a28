"""An httpx transport over the standard library's http.client: one keep-alive connection per thread.

Why: a sync is tens of thousands of small GETs from a thread pool, so CPU per request sets the
pace (design.md section 6). httpx's default transport (httpcore) costs about 0.8 ms of CPU per
request at 16 threads on our benchmark machine, mostly in its shared connection pool; this
transport costs about 0.15 ms, and the httpx ``Client`` above it (URLs, headers, ``Response``,
``MockTransport`` in tests) stays as it is. Each thread keeps its own connection per origin, so
there is no pool lock to contend on.

Errors are raised as the httpx exceptions the retry layer already understands (``ConnectError``,
``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``). Proxies are not
supported; set ``ROBOFY_HTTP_TRANSPORT=httpx`` to use httpx's own transport instead.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from typing import Any

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 keep-alive transport built on ``http.client``; safe to share between threads."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    def _connection(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str, int], http.client.HTTPConnection] | None = getattr(
            self._local, "pool", None
        )
        if pool is None:
            pool = self._local.pool = {}
        key = (scheme, host, port)
        conn = pool.get(key)
        if conn is None:
            if scheme == "https":
                context = self._ssl_context or ssl.create_default_context()
                conn = http.client.HTTPSConnection(
                    host, port, timeout=self._connect_timeout, context=context
                )
            elif scheme == "http":
                conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout)
            else:
                raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
            pool[key] = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        conn = self._connection(url.scheme, url.host, port)
        target = url.raw_path.decode("ascii")
        body = request.read() or None
        try:
            if conn.sock is None:
                self._connect(conn, request)
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name.decode("latin-1"), value.decode("latin-1"))
            conn.endheaders(body)
            response = conn.getresponse()
            content = response.read()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ReadTimeout(f"timed out reading from {url.host}", request=request) from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            # RemoteDisconnected, IncompleteRead, BadStatusLine, resets, broken pipes.
            conn.close()
            raise httpx.RemoteProtocolError(
                f"connection to {url.host} broke: {type(exc).__name__}", request=request
            ) from exc
        except OSError as exc:
            conn.close()
            raise httpx.ReadError(f"network error with {url.host}: {exc}", request=request) from exc
        if response.will_close:
            conn.close()
        headers: list[tuple[str, str]] = response.getheaders()
        return httpx.Response(
            response.status,
            headers=headers,
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _connect(self, conn: http.client.HTTPConnection, request: httpx.Request) -> None:
        host = request.url.host
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"timed out connecting to {host}", request=request) from exc
        except OSError as exc:
            conn.close()
            raise httpx.ConnectError(f"cannot connect to {host}: {exc}", request=request) from exc
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> StdlibTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()
