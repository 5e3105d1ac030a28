"""Partitions, named once: daily UTC windows for the event-like streams.

A run on a persistent instance covers a range of these partitions (a single-run backfill). A
run nobody keeps (``robofy-etl sync`` without ``DAGSTER_HOME``) uses unpartitioned definitions
instead and names its days in the ``WINDOW_TAG`` run tag: the same sync, without the events
Dagster records per partition for a run history that is thrown away (about 0.5 s for 31 days).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import dagster as dg

from robofy_etl.sync import Window


def daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from ``start_date`` up to and including today."""
    return dg.DailyPartitionsDefinition(
        start_date=start_date.isoformat(), end_offset=1, timezone="UTC"
    )


# Run tags of a single-run backfill: the first and last partition (day) the run covers.
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
# Run tag naming the days of a run of the unpartitioned definitions: 'first..last' (inclusive).
WINDOW_TAG = "robofy/days"


def window_of(context: dg.AssetExecutionContext) -> Window:
    """The run's days as a half-open window: one partition, a whole single-run backfill, or
    (unpartitioned definitions) the days the ``WINDOW_TAG`` run tag names."""
    if context.assets_def.partitions_def is not None:
        time_window = context.partition_time_window
        return Window(time_window.start.date(), time_window.end.date())
    window = days_of_run(context.run.tags)
    if window is None:
        label = context.run.tags.get(WINDOW_TAG, "")
        raise dg.Failure(
            f"this run has no days to sync: run tag {WINDOW_TAG} is {label!r}, expected "
            "'first..last' (ISO dates). Start it with `robofy-etl sync --start ... --end ...`."
        )
    return window


def range_tags(first: date, last: date) -> dict[str, str]:
    """Run tags that make one run cover the partitions ``first..last`` (single-run backfill)."""
    return {RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}


def window_tags(window: Window) -> dict[str, str]:
    """Run tags naming the days a run of the unpartitioned definitions syncs."""
    return {WINDOW_TAG: str(window)}


def days_of_run(tags: Mapping[str, str]) -> Window | None:
    """The days a run's tags ask for (a partition range, or ``WINDOW_TAG``); None if neither
    names valid days (a run of one partition, or of unpartitioned assets only)."""
    try:
        if RANGE_START in tags and RANGE_END in tags:
            return Window.from_label(f"{tags[RANGE_START]}..{tags[RANGE_END]}")
        if WINDOW_TAG in tags:
            return Window.from_label(tags[WINDOW_TAG])
    except ValueError:
        pass
    return None


def recent_window(today: date, lookback_days: int) -> Window:
    """Today and the ``lookback_days`` days before it."""
    return Window(today - timedelta(days=lookback_days), today + timedelta(days=1))
