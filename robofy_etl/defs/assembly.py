"""Builds the Definitions object from settings; robofy_etl.definitions holds the instance."""

from __future__ import annotations

import dagster as dg

from robofy_etl.defs.checks import all_checks
from robofy_etl.defs.ingest import raw_assets
from robofy_etl.defs.models import model_assets
from robofy_etl.defs.partitions import daily_partitions
from robofy_etl.defs.resources import RobofyResource, WarehouseResource
from robofy_etl.defs.schedules import schedules, sync_job
from robofy_etl.settings import API_KEY_ENV, Settings
from robofy_etl.warehouse.models import discover


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything Dagster needs; local and production differ only by environment variables."""
    partitions = daily_partitions(settings.start_date)
    models = discover()
    return dg.Definitions(
        assets=[*raw_assets(partitions), model_assets(models)],
        asset_checks=all_checks(models),
        jobs=[sync_job()],
        schedules=schedules(settings.lookback_days),
        resources={
            "robofy": RobofyResource(
                api_key=dg.EnvVar(API_KEY_ENV),
                base_url=settings.base_url,
                auth_header=settings.auth_header,
                max_in_flight=settings.max_in_flight,
                max_rps=settings.max_rps,
                http_transport=settings.http_transport,
                timeout_s=settings.timeout_s,
                max_attempts=settings.max_attempts,
                retry_delay_s=settings.retry_delay_s,
                naive_timezone=settings.naive_timezone,
                stats_params=list(settings.stats_params),
            ),
            "warehouse": WarehouseResource(
                path=settings.duckdb_path,
                publish_path=settings.resolved_publish_path,
                lock_timeout_s=settings.lock_timeout_s,
                memory_limit=settings.duckdb_memory_limit,
                publish_storage_version=settings.publish_storage_version,
            ),
        },
        # One process, steps in order: DuckDB has one writer, and a step subprocess costs ~2 s.
        executor=dg.in_process_executor,
    )
