"""An httpx transport that speaks HTTP/1.1 over plain sockets: one keep-alive connection per thread.

Why: a sync is tens of thousands of small GETs from a thread pool, so CPU per request sets the
pace (design.md section 6). Measured on the benchmark machine, per request:

- httpx's default transport (httpcore): about 0.8 ms of CPU at 16 threads, mostly in its
  shared connection pool;
- ``http.client`` with one connection per thread: about 0.19 ms, most of it parsing headers
  through ``email.parser``;
- this transport: about 0.04 ms. It writes the request head in one ``sendall`` and reads the
  response with the buffered reader's C ``readline``.

The httpx ``Client`` above it (URLs, headers, decoding, ``Response``, ``MockTransport`` in
tests) stays as it is. Each thread keeps its own connection per origin, so there is no pool
lock to contend on.

What it speaks: HTTP/1.1 and 1.0 responses with ``Content-Length``, chunked transfer encoding,
or a body delimited by closing the connection; interim 1xx responses are skipped; ``Connection:
close`` is honoured; TLS through ``ssl``. Compressed bodies are decoded by httpx above. An idle
connection that the server has closed is noticed before it is reused, and replaced. Proxies are
not supported; set ``ROBOFY_HTTP_TRANSPORT=httpx`` to use httpx's own transport instead.

Errors are raised as the httpx exceptions the retry layer already understands (``ConnectError``,
``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ``ReadError``).

**The attempt deadline.** A read timeout bounds each wait for bytes, not the response: a server
that sends one byte every 2 s never trips a 5 s read timeout, and once held one request for
121 s. So sending a request and reading its whole response must also end within an attempt
timeout, by default ``ATTEMPT_TIMEOUT_FACTOR`` (2) times the read timeout: a response may take
as long to arrive as the read timeout allows and as long again to stream in. Past it the attempt
raises ``httpx.ReadTimeout`` and is retried like any timeout. Opening a connection (TCP and the
TLS handshake) is bounded by the connect timeout on top, so one attempt lasts at most
``connect timeout + attempt timeout``.

This module enforces it for both transports: ``StdlibTransport`` checks the deadline before
every ``recv``; for httpx's own transport, ``add_attempt_deadline`` wraps httpcore's network
streams so every read waits at most until the deadline the client set with ``attempt_deadline``.
"""

from __future__ import annotations

import io
import math
import select
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["StdlibTransport"]

ATTEMPT_TIMEOUT_FACTOR = 2.0

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_LINE = 65536  # bytes in a status or header line
_MAX_HEADERS = 200
_IDLE_CHECK_S = 1.0  # a connection idle this long is checked before it is reused


class _ProtocolError(Exception):
    """The server's bytes are not a well-formed HTTP/1.x response."""


class _DeadlineExceeded(TimeoutError):
    """The response did not arrive in full before the attempt deadline."""


class _SocketReader(io.RawIOBase):
    """The read side of a socket: the per-read timeout, capped by the attempt's deadline.

    Replaces ``socket.makefile("rb")``'s ``SocketIO`` under the same ``BufferedReader``. The
    socket timeout is only changed when the deadline is nearer than the read timeout, so a fast
    response pays one clock read per ``recv`` and no extra system call.
    """

    def __init__(self, sock: socket.socket, read_timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._read_timeout = read_timeout
        self._shortened = False
        self.deadline = math.inf

    def start(self, deadline: float) -> None:
        """Begin an exchange that must be read in full by `deadline` (a monotonic time)."""
        self.deadline = deadline
        if self._shortened:
            self._sock.settimeout(self._read_timeout)
            self._shortened = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining < self._read_timeout:
            if remaining <= 0:
                raise _DeadlineExceeded
            self._sock.settimeout(remaining)
            self._shortened = True
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            if self._shortened:  # the deadline, not the read timeout, ran out
                raise _DeadlineExceeded from None
            raise


class _Connection:
    __slots__ = ("last_used", "raw", "reader", "sock")

    def __init__(self, sock: socket.socket, read_timeout: float) -> None:
        self.sock = sock
        self.raw = _SocketReader(sock, read_timeout)
        self.reader: BinaryIO = io.BufferedReader(self.raw)
        self.last_used = time.monotonic()

    def closed_by_peer(self) -> bool:
        """True when the server has closed (or written to) this idle keep-alive connection.

        Only checked after a pause (a server closes idle connections after seconds, not
        milliseconds), so back-to-back requests pay no system call for it.
        """
        if time.monotonic() - self.last_used < _IDLE_CHECK_S:
            return False
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _ProtocolError("header line too long")
    return line


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise _ProtocolError(f"body ended after {len(data)} of {size} bytes")
    return data


def _read_chunked(reader: BinaryIO) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = _read_line(reader)
        if not line:
            raise _ProtocolError("connection closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            break
        chunks.append(_read_exactly(reader, size))
        if _read_line(reader).strip():
            raise _ProtocolError("chunk not followed by CRLF")
    while _read_line(reader).strip():  # trailer fields, if any, are dropped
        pass
    return b"".join(chunks)


def _read_response(
    reader: BinaryIO, method: str
) -> tuple[bytes, int, list[tuple[bytes, bytes]], bytes, bool]:
    """Read one response: ``(http_version, status, headers, body, keep_alive)``."""
    while True:
        line = _read_line(reader)
        if not line:
            raise ConnectionResetError("the server closed the connection without a response")
        version, _, rest = line.rstrip(b"\r\n").partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise _ProtocolError(f"bad status line {line[:40]!r}")
        status = int(code)
        headers: list[tuple[bytes, bytes]] = []
        while True:
            field = _read_line(reader)
            if field in (b"\r\n", b"\n"):
                break
            name, sep, value = field.partition(b":")
            if not field or not sep or len(headers) >= _MAX_HEADERS:
                raise _ProtocolError("incomplete or malformed response headers")
            headers.append((name.strip(), value.strip()))
        if 100 <= status < 200 and status != 101:
            continue  # an interim response; the real one follows
        break
    fields = {name.lower(): value for name, value in headers}
    connection = fields.get(b"connection", b"").lower()
    keep_alive = (
        b"close" not in connection
        if version == b"HTTP/1.1"
        else b"keep-alive" in connection  # HTTP/1.0 closes unless told otherwise
    )
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = _read_chunked(reader)
    elif b"content-length" in fields:
        try:
            length = int(fields[b"content-length"])
        except ValueError:
            raise _ProtocolError("bad Content-Length") from None
        body = _read_exactly(reader, length)
    else:
        body = reader.read()  # delimited by the server closing the connection
        keep_alive = False
    return version, status, headers, body, keep_alive


def _head(request: httpx.Request) -> bytes:
    """The request line and header block (httpx has already set Host and Content-Length)."""
    target = request.url.raw_path
    lines = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 keep-alive transport on ``socket`` and ``ssl``; safe to share between threads."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        attempt_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Create the transport; connections are opened on first use, one per thread.

        Args:
            connect_timeout: Seconds to open a connection (TCP and TLS handshake).
            read_timeout: Seconds to wait for each chunk of the response.
            attempt_timeout: Seconds to send a request and read its whole response (default
                ``ATTEMPT_TIMEOUT_FACTOR * read_timeout``).
            ssl_context: TLS settings (default: ``ssl.create_default_context()``, which honours
                SSL_CERT_FILE and SSL_CERT_DIR).
        """
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._attempt_timeout = (
            ATTEMPT_TIMEOUT_FACTOR * read_timeout if attempt_timeout is None else attempt_timeout
        )
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()

    def _pool(self) -> dict[tuple[str, str, int], _Connection]:
        pool: dict[tuple[str, str, int], _Connection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _connect(self, scheme: str, host: str, port: int, request: httpx.Request) -> _Connection:
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}: {exc}", request=request) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                context = self._ssl_context
                if context is None:
                    context = self._ssl_context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self._read_timeout)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"timed out connecting to {host}", request=request) from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise httpx.ConnectError(f"cannot connect to {host}: {exc}", request=request) from exc
        conn = _Connection(sock, self._read_timeout)
        with self._lock:
            self._open.add(conn)
        return conn

    def _drop(self, key: tuple[str, str, int], conn: _Connection) -> None:
        pool = self._pool()
        if pool.get(key) is conn:
            del pool[key]
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme, host = url.scheme, url.host
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        key = (scheme, host, url.port or _DEFAULT_PORTS[scheme])
        message = _head(request) + (request.read() or b"")
        pool = self._pool()
        conn = pool.get(key)
        if conn is not None and conn.closed_by_peer():
            self._drop(key, conn)
            conn = None
        if conn is None:
            conn = pool[key] = self._connect(scheme, host, key[2], request)
        try:
            conn.raw.start(time.monotonic() + self._attempt_timeout)
            conn.sock.sendall(message)
            version, status, headers, body, keep_alive = _read_response(conn.reader, request.method)
        except _DeadlineExceeded as exc:
            self._drop(key, conn)
            raise httpx.ReadTimeout(
                f"no complete response from {host} within {self._attempt_timeout:g}s "
                "(the attempt timeout; the server is sending too slowly)",
                request=request,
            ) from exc
        except TimeoutError as exc:
            self._drop(key, conn)
            raise httpx.ReadTimeout(f"timed out reading from {host}", request=request) from exc
        except (ConnectionError, _ProtocolError) as exc:
            self._drop(key, conn)
            raise httpx.RemoteProtocolError(
                f"connection to {host} broke: {type(exc).__name__}: {exc}", request=request
            ) from exc
        except OSError as exc:
            self._drop(key, conn)
            raise httpx.ReadError(f"network error with {host}: {exc}", request=request) from exc
        if keep_alive:
            conn.last_used = time.monotonic()
        else:
            self._drop(key, conn)
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"http_version": version},
        )

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for conn in connections:
            conn.close()

    def __enter__(self) -> StdlibTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()
