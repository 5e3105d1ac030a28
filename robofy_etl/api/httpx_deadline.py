"""The attempt deadline for httpx's own transport (``ROBOFY_HTTP_TRANSPORT=httpx``).

httpx has no total timeout: a read timeout bounds each wait for bytes, not the response (see
`transport`, which enforces the same deadline itself). `add_attempt_deadline` wraps the network
backend of the client's httpcore pools, so that every read inside `attempt_deadline` waits at
most until that deadline.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

__all__ = ["add_attempt_deadline", "attempt_deadline"]

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
