"""Transcripts fetched while the work is still being found.

A chatbot's changed sessions are known as soon as its listing is done; waiting for every
listing before the first transcript request leaves the connection slots idle. ``Prefetch``
runs one fan-out of the client on a thread of its own, fed with tasks as they are found, and
hands the results back to the caller's thread, which classifies and writes them (so drift,
quarantine and writes stay where they were).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

from robofy_etl.api import RobofyClient

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class Prefetch(Generic[T, R]):
    """``fn(task)`` for every task put, on the client's fan-out, results in completion order.

    Use as a context manager; ``put`` tasks, ``close`` the feed once every task is in, then
    iterate ``results()``. Leaving the block early (an error, Ctrl-C) stops the fan-out: no new
    request starts, and the requests in flight are waited for.
    """

    def __init__(self, api: RobofyClient, fn: Callable[[T], R]) -> None:
        self._api = api
        self._fn = fn
        self._feed: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._out: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="robofy-prefetch", daemon=True)
        self.fed: set[T] = set()
        self._closed = False

    def __enter__(self) -> Prefetch[T, R]:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._feed.put(_END)
        self._thread.join()

    def put(self, tasks: Iterable[T]) -> None:
        """Queues tasks for fetching (each task at most once)."""
        if self._closed:
            raise RuntimeError("the feed is closed")
        for task in tasks:
            if task not in self.fed:
                self.fed.add(task)
                self._feed.put(task)

    def close(self) -> None:
        """No more tasks: ``results()`` ends once the last one has arrived."""
        self._closed = True
        self._feed.put(_END)

    def results(self) -> Iterator[tuple[T, R]]:
        """``(task, fn(task))`` as each ends; raises what ``fn`` raised."""
        while True:
            item = self._out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def _tasks(self) -> Iterator[T]:
        while not self._stop.is_set():
            task = self._feed.get()
            if task is _END:
                return
            yield task  # type: ignore[misc]

    def _run(self) -> None:
        try:
            results = self._api.fan_out(self._tasks(), self._fn)
            try:
                for pair in results:
                    self._out.put(pair)
                    if self._stop.is_set():
                        break  # closes the fan-out: nothing new starts
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the caller's thread
            self._out.put(exc)
        self._out.put(_END)
