"""The ordered write-behind: numbered chunks written in order, each once all its items arrived.

DuckDB has one writer, and a sync writes a run of days as one transaction. Fetches finish in
any order; the writer holds each chunk's items until the chunk is complete and every earlier
chunk has been written, then writes it on its own single thread while fetching goes on. The
last chunk is written on the caller's thread, after everything else: by then every record has
been seen, so what it writes about the whole sync (drift, quarantine, scan state) is final.
At most the chunk being written and those still being fetched are in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class OrderedWriter(Generic[T]):
    """Writes chunks ``0..n-1`` in order with ``write(n, items)``, each once it is complete.

    Use as a context manager: leaving it waits for the write in progress (and raises its
    error). Call ``finish()`` once every item was added.

    Args:
        expected: how many items each chunk waits for (a chunk expecting none is written as
            soon as the chunks before it are).
        write: writes one chunk; called for every chunk exactly once, in order.
    """

    def __init__(self, expected: Sequence[int], write: Callable[[int, list[T]], None]) -> None:
        self._waiting = list(expected)
        self._items: list[list[T]] = [[] for _ in expected]
        self._write = write
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self.written = 0  # chunks handed to the writer so far

    def __enter__(self) -> OrderedWriter[T]:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robofy-writer")
        self._flush()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._pending is not None:
                self._pending.result()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    def add(self, n: int, item: T) -> None:
        """One item of chunk ``n`` arrived; writes every chunk that is now complete."""
        if self._waiting[n] <= 0:
            raise ValueError(f"chunk {n} received more items than it expected")
        self._waiting[n] -= 1
        self._items[n].append(item)
        if n == self.written:
            self._flush()

    def finish(self) -> None:
        """Writes what is left; raises if a chunk still waits for items."""
        self._flush()
        if self.written < len(self._waiting):
            raise RuntimeError(
                f"chunk {self.written} still waits for {self._waiting[self.written]} item(s)"
            )
        if self._pending is not None:
            self._pending.result()

    def _flush(self) -> None:
        assert self._executor is not None, "use OrderedWriter as a context manager"
        n_chunks = len(self._waiting)
        while self.written < n_chunks and self._waiting[self.written] == 0:
            if self._pending is not None:
                self._pending.result()  # one transaction at a time, in order
            n = self.written
            items, self._items[n] = self._items[n], []
            if n == n_chunks - 1:
                self._pending = None
                self._write(n, items)  # in the caller's thread: what it reports is final
            else:
                self._pending = self._executor.submit(self._write, n, items)
            self.written += 1
