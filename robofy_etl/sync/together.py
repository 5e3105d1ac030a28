"""Several syncs of one window at once, on one client and one warehouse.

The windowed streams do not depend on each other (each needs only the chatbot snapshot), and
each is latency-bound, so a run starts them together: the leads and stats fetches run while the
session listing and the transcripts are fetched. Their requests share the client's in-flight
cap and rate limit; their writes are short transactions the warehouse takes one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")


def run_together(jobs: Sequence[Callable[[], R]]) -> list[R | Exception]:
    """Runs every job at once: the first on this thread, the others on threads of their own.

    Put the longest job first: it stays on the calling thread, so Ctrl-C (or Dagster's
    interrupt) reaches its fan-out at once; the others are short and are waited for. Returns
    each job's result, or the exception it raised, in the order of ``jobs``. Anything that is
    not an ``Exception`` (KeyboardInterrupt) is raised once every job has ended.
    """
    if not jobs:
        return []
    first, *others = jobs
    with ThreadPoolExecutor(
        max_workers=max(1, len(others)), thread_name_prefix="robofy-stream"
    ) as pool:
        futures: list[Future[R]] = [pool.submit(job) for job in others]
        try:
            head: R | Exception = first()
        except Exception as exc:  # reported with the others' results
            head = exc
        # Leaving the pool waits for the other jobs, also when this thread was interrupted.
    results: list[R | Exception] = [head]
    for future in futures:
        error = future.exception()
        if error is None:
            results.append(future.result())
        elif isinstance(error, Exception):
            results.append(error)
        else:
            raise error
    return results
