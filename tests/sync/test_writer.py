"""The ordered write-behind: chunks are written in order, each once complete, one at a time.

A conversation sync writes a run of days as one transaction while later transcripts are still
being fetched; fetches finish in any order. These tests drive ``OrderedWriter`` directly with
items arriving out of order and check what was written, when, and on which thread.
"""

from __future__ import annotations

import threading

import pytest

from robofy_etl.sync.writer import OrderedWriter


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.written: list[tuple[int, list[str]]] = []
        self.threads: list[str] = []
        self.active = 0
        self.overlapped = False
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, n: int, items: list[str]) -> None:
        with self._lock:
            self.active += 1
            self.overlapped |= self.active > 1
        try:
            if n == self.fail_on:
                raise OSError(f"disk full writing chunk {n}")
            self.written.append((n, sorted(items)))
            self.threads.append(threading.current_thread().name)
        finally:
            with self._lock:
                self.active -= 1


def test_chunks_are_written_in_order_whatever_order_items_arrive_in() -> None:
    rec = Recorder()
    with OrderedWriter[str]([2, 1, 2], rec) as writer:
        writer.add(2, "c1")
        writer.add(1, "b1")  # chunk 1 is complete, but chunk 0 is not: nothing written yet
        assert writer.written == 0
        writer.add(0, "a1")
        writer.add(0, "a2")  # chunk 0 completes: 0 and 1 go to the writer
        assert writer.written == 2
        writer.add(2, "c2")  # the last chunk is written in this thread, at once
        assert writer.written == 3
        writer.finish()
    assert rec.written == [(0, ["a1", "a2"]), (1, ["b1"]), (2, ["c1", "c2"])]
    assert not rec.overlapped


def test_the_last_chunk_is_written_on_the_callers_thread_the_rest_on_the_writer() -> None:
    rec = Recorder()
    with OrderedWriter[str]([1, 1], rec) as writer:
        writer.add(0, "a")
        writer.add(1, "b")
        writer.finish()
    assert rec.threads[0].startswith("robofy-writer")
    assert rec.threads[1] == threading.current_thread().name


def test_chunks_expecting_nothing_are_written_as_soon_as_their_turn_comes() -> None:
    rec = Recorder()
    with OrderedWriter[str]([0, 0, 1, 0], rec) as writer:
        assert writer.written == 2  # empty days still get their transaction (deletions)
        writer.add(2, "x")
        writer.finish()
    assert rec.written == [(0, []), (1, []), (2, ["x"]), (3, [])]


def test_finish_refuses_while_a_chunk_still_waits() -> None:
    rec = Recorder()
    with OrderedWriter[str]([2, 0], rec) as writer:
        writer.add(0, "a")
        with pytest.raises(RuntimeError, match="chunk 0 still waits for 1 item"):
            writer.finish()
    assert rec.written == []


def test_more_items_than_expected_is_an_error() -> None:
    with OrderedWriter[str]([1, 1], Recorder()) as writer:
        writer.add(0, "a")
        with pytest.raises(ValueError, match="chunk 0 received more items"):
            writer.add(0, "again")
        writer.add(1, "b")
        writer.finish()


def test_a_failed_background_write_is_raised_and_stops_later_writes() -> None:
    rec = Recorder(fail_on=0)

    def run() -> None:
        with OrderedWriter[str]([1, 1, 1], rec) as writer:
            writer.add(0, "a")  # handed to the writer thread, which fails
            writer.add(1, "b")  # chunk 1 waits for chunk 0's write: its error surfaces here
            writer.add(2, "c")
            writer.finish()

    with pytest.raises(OSError, match="disk full writing chunk 0"):
        run()
    assert rec.written == []
