"""Builds the Definitions object from settings; robofy_etl.definitions holds the instance."""

from __future__ import annotations

import dagster as dg

from robofy_etl.defs.checks import all_checks
from robofy_etl.defs.ingest import POOL, raw_assets
from robofy_etl.defs.models import model_assets
from robofy_etl.defs.partitions import daily_partitions
from robofy_etl.defs.resources import RobofyResource, WarehouseResource
from robofy_etl.defs.schedules import schedules, sync_job
from robofy_etl.settings import API_KEY_ENV, Settings
from robofy_etl.warehouse.models import discover
from robofy_etl.warehouse.url import URL_ENV


def build_definitions(
    settings: Settings, *, api_key: str | None = None, partitioned: bool = True
) -> dg.Definitions:
    """Everything Dagster needs; local and production differ only by environment variables.

    Args:
        settings: the settings every resource is configured from.
        api_key: the API key, for runs started by this process (``robofy-etl sync``, which
            passes its own settings and key). None (``dagster dev``, the daemon): read from
            ``ROBOFY_API_KEY`` when a run starts, through ``dg.EnvVar``.
        partitioned: False for runs on an instance nobody keeps (``robofy-etl sync`` without
            ``DAGSTER_HOME``): the windowed streams are unpartitioned and a run names its days
            in a run tag (``partitions.window_tags``); there are no schedules.
    """
    partitions = daily_partitions(settings.start_date) if partitioned else None
    models = discover()
    # Settings that may hold a password stay out of resource config (Dagster stores it with
    # every run), like the key: read from the environment, or handed over ready-made.
    env = settings.as_env(secrets=False)
    robofy = RobofyResource(
        api_key=dg.EnvVar(API_KEY_ENV) if api_key is None else api_key, settings=env
    )
    warehouse = WarehouseResource(
        settings=env,
        warehouse_url=dg.EnvVar(URL_ENV)
        if settings.warehouse_url and api_key is None
        else settings.warehouse_url,
    )
    # DuckDB's one writer: its steps share a pool (one run at a time); PostgreSQL runs overlap.
    pool = POOL if settings.warehouse.backend == "duckdb" else None
    return dg.Definitions(
        assets=[*raw_assets(partitions, pool), model_assets(models, pool)],
        asset_checks=all_checks(models, pool),
        jobs=[sync_job()],
        schedules=schedules(settings.lookback_days) if partitioned else [],
        resources={
            # A key given as a value would be stored as config with the run's snapshot in
            # DAGSTER_HOME; handed over as a ready resource it has no config to store.
            "robofy": robofy
            if api_key is None
            else dg.ResourceDefinition.hardcoded_resource(robofy, "The Robofy API"),
            "warehouse": warehouse
            if api_key is None or not settings.warehouse_url
            else dg.ResourceDefinition.hardcoded_resource(warehouse, "The warehouse"),
        },
        # One process, steps in order: DuckDB has one writer, and a step subprocess costs ~2 s.
        executor=dg.in_process_executor,
    )
