"""The sync job and its schedules: a daily run and an hourly refresh of the recent days."""

from __future__ import annotations

import dagster as dg

from robofy_etl.defs.partitions import range_tags, recent_window

SYNC_JOB = "robofy_sync"


def sync_job() -> dg.UnresolvedAssetJobDefinition:
    """Every asset: snapshots, the daily streams for a range of days, the SQL models."""
    return dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.all(),
        description="Sync projects, chatbots, conversations, leads and stats, then rebuild marts.",
    )


def schedules(lookback_days: int) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name="robofy_daily",
        job_name=SYNC_JOB,
        cron_schedule="15 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Every day at 00:15 UTC: today and the {lookback_days} days before "
        "(yesterday's final state, restated stats, continued conversations).",
    )
    def robofy_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        window = recent_window(context.scheduled_execution_time.date(), lookback_days)
        return dg.RunRequest(run_key=f"daily-{window}", tags=range_tags(window.start, window.last))

    @dg.schedule(
        name="robofy_recent_refresh",
        job_name=SYNC_JOB,
        cron_schedule="5 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every hour: keeps today's and yesterday's partitions fresh as "
        "conversations continue (only changed transcripts are fetched).",
    )
    def robofy_recent_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        window = recent_window(context.scheduled_execution_time.date(), 1)
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H")
        return dg.RunRequest(run_key=f"refresh-{stamp}", tags=range_tags(window.start, window.last))

    return [robofy_daily, robofy_recent_refresh]
