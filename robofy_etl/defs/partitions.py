"""Partitions, named once: daily UTC windows for the event-like streams."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

from robofy_etl.sync import Window


def daily_partitions(start_date: date) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day from ``start_date`` up to and including today."""
    return dg.DailyPartitionsDefinition(
        start_date=start_date.isoformat(), end_offset=1, timezone="UTC"
    )


def window_of(context: dg.AssetExecutionContext) -> Window:
    """The run's days as a half-open window: one partition or a whole single-run backfill."""
    time_window = context.partition_time_window
    return Window(time_window.start.date(), time_window.end.date())


def recent_window(today: date, lookback_days: int) -> Window:
    """Today and the ``lookback_days`` days before it."""
    return Window(today - timedelta(days=lookback_days), today + timedelta(days=1))
