"""The client's threading machinery: the request pacer and the fan-out thread pool.

`RobofyClient` uses both: every request waits on its `Pacer`, and `RobofyClient.fan_out`
runs `fan_out` here. A request sent from a fan-out worker asks `fan_out_stopping()` whether
its fan-out has ended, and raises `FanOutStopped` instead of sending when it has.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["FanOutStopped", "Pacer", "fan_out", "fan_out_stopping"]

T = TypeVar("T")
R = TypeVar("R")


class Pacer:
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


def fan_out(tasks: Iterable[T], fn: Callable[[T], R], workers: int) -> Iterator[tuple[T, R]]:
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
        workers: Threads.

    Yields:
        `(task, fn(task))` pairs.

    Raises:
        Exception: The first exception raised by `fn`, after pending tasks are cancelled and
            running ones have finished.
    """
    ahead = 2 * workers
    # Plain threads on C queues rather than a ThreadPoolExecutor: its Future per task (with
    # a Condition and callbacks) was about 5% of a sync's GIL time.
    todo: queue.SimpleQueue[object] = queue.SimpleQueue()
    done: queue.SimpleQueue[tuple[Any, Any, BaseException | None]] = queue.SimpleQueue()
    stopping = threading.Event()

    def work() -> None:
        _worker.stopping = stopping
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


_STOP = object()  # tells a fan-out thread to end

# On a fan_out worker thread: `.stopping`, the Event set when that fan-out ends.
_worker = threading.local()


class FanOutStopped(BaseException):
    """Raised in a fan-out worker that tries to send a request after its fan-out stopped.

    A BaseException, like KeyboardInterrupt, so that `except Exception` in the task function
    cannot swallow it and carry on. Nobody sees it: the consumer has already gone.
    """


def fan_out_stopping() -> threading.Event | None:
    """The Event set when the fan-out this thread works for ends; None off a fan-out worker."""
    stopping: threading.Event | None = getattr(_worker, "stopping", None)
    return stopping
