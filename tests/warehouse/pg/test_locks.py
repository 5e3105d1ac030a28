"""Writers of the same slice take turns; writers of different slices run side by side.

Without the lock, two loads of the same day in concurrent transactions would each see the
slice empty (MVCC snapshots) and both insert: duplicate rows. Waiting is observed through
``pg_locks`` (a backend waiting for an advisory lock), not through timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import LoadCounts, Slice
from robofy_etl.warehouse.pg.load import replace_slice
from robofy_etl.warehouse.pg.locks import MAX_DAY_LOCKS, lock_key, lock_slice, lock_tables
from tests.warehouse.conftest import session_row

T0 = datetime(2026, 3, 10, 12, 0, 0)
DAY1 = Slice(day_from="2026-03-01", day_to="2026-03-02")
DAY2 = Slice(day_from="2026-03-02", day_to="2026-03-03")
SAFETY_S = 60.0  # only ever reached when a test is failing


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def _load(engine: sa.Engine, slc: Slice, rows: list[dict[str, object]], run: str) -> LoadCounts:
    with engine.begin() as conn:
        return replace_slice(conn, "robofy__inbox_sessions", rows, slc, loaded_at=T0, run_id=run)


def _hold(
    engine: sa.Engine,
    slc: Slice,
    held: threading.Event,
    release: threading.Event,
    rows: list[dict[str, object]],
) -> LoadCounts:
    """Load ``rows`` into ``slc`` and keep the transaction (and its locks) open until told."""
    with engine.begin() as conn:
        counts = replace_slice(
            conn, "robofy__inbox_sessions", rows, slc, loaded_at=T0, run_id="holder"
        )
        held.set()
        assert release.wait(SAFETY_S)
        return counts


def _wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SAFETY_S
    while not check():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def _waiting_for_advisory_lock(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            ).scalar_one()
        )


def test_writers_of_the_same_slice_take_turns(
    pg_engine: sa.Engine, pool: ThreadPoolExecutor
) -> None:
    rows = [session_row("c1", s, "2026-03-01") for s in ("a", "b", "c")]
    held, release = threading.Event(), threading.Event()
    first = pool.submit(_hold, pg_engine, DAY1, held, release, rows)
    assert held.wait(SAFETY_S)
    second: Future[LoadCounts] = pool.submit(_load, pg_engine, DAY1, rows, "second")
    _wait_until(lambda: _waiting_for_advisory_lock(pg_engine) == 1)
    assert not second.done()
    release.set()
    assert first.result(SAFETY_S) == LoadCounts(inserted=3)
    # The second saw the first's committed rows: same rows, nothing duplicated.
    assert second.result(SAFETY_S) == LoadCounts(unchanged=3)
    with pg_engine.connect() as conn:
        stored = conn.exec_driver_sql("select count(*) from raw.robofy__inbox_sessions")
        assert stored.scalar_one() == 3


def test_writers_of_different_days_run_side_by_side(
    pg_engine: sa.Engine, pool: ThreadPoolExecutor
) -> None:
    held, release = threading.Event(), threading.Event()
    first = pool.submit(
        _hold, pg_engine, DAY1, held, release, [session_row("c1", "a", "2026-03-01")]
    )
    try:
        assert held.wait(SAFETY_S)
        # While the first transaction is still open, another day loads and commits.
        other = _load(pg_engine, DAY2, [session_row("c1", "b", "2026-03-02")], "other")
        assert other == LoadCounts(inserted=1)
        assert not first.done()
    finally:
        release.set()
    assert first.result(SAFETY_S) == LoadCounts(inserted=1)


def test_a_whole_table_load_waits_for_day_loads(
    pg_engine: sa.Engine, pool: ThreadPoolExecutor
) -> None:
    held, release = threading.Event(), threading.Event()
    first = pool.submit(
        _hold, pg_engine, DAY1, held, release, [session_row("c1", "a", "2026-03-01")]
    )
    assert held.wait(SAFETY_S)
    whole: Future[LoadCounts] = pool.submit(_load, pg_engine, Slice(), [], "whole")
    _wait_until(lambda: _waiting_for_advisory_lock(pg_engine) == 1)
    assert not whole.done()
    release.set()
    first.result(SAFETY_S)
    assert whole.result(SAFETY_S) == LoadCounts(deleted=1)  # it saw the committed day


def test_lock_keys_are_stable_and_long_windows_lock_the_table(pg_engine: sa.Engine) -> None:
    assert lock_key("robofy", "t", "2026-03-01") == lock_key("robofy", "t", "2026-03-01")
    assert lock_key("robofy", "t", "2026-03-01") != lock_key("robofy", "t", "2026-03-02")
    with pg_engine.begin() as conn:
        week = lock_slice(conn, "t", Slice(day_from="2026-03-01", day_to="2026-03-08"))
        assert len(week) == 1 + 7
        long = Slice(day_from="2026-01-01", day_to="2026-12-31")
        assert lock_slice(conn, "u", long) == [lock_key("robofy", "u")]
        assert MAX_DAY_LOCKS < 364


def _build(engine: sa.Engine) -> int:
    """A stand-in model build: lock the raw table, then count what it would read."""
    with engine.begin() as conn:
        lock_tables(conn, ["robofy__inbox_sessions", "robofy__leads"])
        return int(
            conn.exec_driver_sql("select count(*) from raw.robofy__inbox_sessions").scalar_one()
        )


def test_a_model_build_waits_for_loads_in_flight(
    pg_engine: sa.Engine, pool: ThreadPoolExecutor
) -> None:
    held, release = threading.Event(), threading.Event()
    load = pool.submit(
        _hold, pg_engine, DAY1, held, release, [session_row("c1", "a", "2026-03-01")]
    )
    assert held.wait(SAFETY_S)
    build = pool.submit(_build, pg_engine)
    _wait_until(lambda: _waiting_for_advisory_lock(pg_engine) == 1)
    assert not build.done()
    release.set()
    load.result(SAFETY_S)
    assert build.result(SAFETY_S) == 1  # it saw the load that was in flight when it started
