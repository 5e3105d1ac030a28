"""Raw assets: one per API stream, landing ``raw.robofy__*`` through ``robofy_etl.streams``."""

# No `from __future__ import annotations`: Dagster reads the context annotation at runtime.

import logging
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from robofy_etl import streams
from robofy_etl.defs.partitions import window_of
from robofy_etl.defs.resources import RobofyResource, WarehouseResource

log = logging.getLogger(__name__)

GROUP = "raw"
POOL = "robofy_warehouse"  # one writer of the DuckDB file at a time (dagster.yaml: pools)
KIND_TAGS = {"dagster/kind/duckdb": "", "dagster/kind/python": ""}
# Run tag: fetch every transcript of the run's days again, changed or not (`sync --refetch`).
REFETCH_TAG = "robofy/refetch"
COMPLETE = "loaded_completely"


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def complete_check(table: str) -> dg.AssetCheckSpec:
    """The check each raw asset reports itself: everything it asked the API for arrived."""
    return dg.AssetCheckSpec(
        f"{table}__{COMPLETE}",
        asset=raw_key(table),
        description=f"Everything this run asked the API for raw.{table} arrived complete; "
        "what did not is listed (kept as stored, retried by the next run).",
    )


def _result(table: str, report: streams.SyncReport) -> dg.MaterializeResult[Any]:
    metadata = report.metadata(table)
    counts = report.counts.get(table)
    rows = 0 if counts is None else counts.inserted + counts.updated + counts.unchanged
    log.info(
        "%s %s: %d rows (+%d new, %d updated, -%d deleted), %d requests, %d retries in %.1fs",
        table,
        report.window,
        rows,
        metadata["rows_inserted"],
        metadata["rows_updated"],
        metadata["rows_deleted"],
        report.api.get("requests", 0),
        report.api.get("retries", 0),
        report.duration_s,
    )
    problems = report.problems_of(table)
    check = dg.AssetCheckResult(
        asset_key=raw_key(table),
        check_name=f"{table}__{COMPLETE}",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="\n".join(problems)[:4000] if problems else "everything asked for arrived",
        metadata={"problems": len(problems)},
    )
    return dg.MaterializeResult(
        asset_key=raw_key(table),
        metadata={**metadata, "dagster/row_count": rows},
        check_results=[check],
    )


def _snapshot_asset(
    table: str,
    sync: Callable[..., streams.SyncReport],
    description: str,
    deps: list[dg.AssetKey],
) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(table),
        group_name=GROUP,
        description=description,
        deps=deps,
        pool=POOL,
        tags=KIND_TAGS,
        metadata={"slice": "whole table (snapshot merge, soft deletes)"},
        check_specs=[complete_check(table)],
    )
    def _asset(
        context: AssetExecutionContext, robofy: RobofyResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]  # bare: Dagster maps check outputs by it
        wh = warehouse.get_warehouse()
        with robofy.get_client() as api:
            report = sync(api, wh, context.run.run_id, naive_tz=robofy.naive_timezone)
        return _result(table, report)

    return _asset


def _windowed_asset(
    table: str,
    sync: Callable[..., streams.SyncReport],
    description: str,
    partitions_def: dg.PartitionsDefinition,
    partition_expr: str,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(table),
        group_name=GROUP,
        description=description,
        deps=[raw_key("robofy__chatbots")],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
        tags=KIND_TAGS,
        metadata={"partition_expr": partition_expr},
        check_specs=[complete_check(table)],
    )
    def _asset(
        context: AssetExecutionContext, robofy: RobofyResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]  # bare: Dagster maps check outputs by it
        wh = warehouse.get_warehouse()
        with robofy.get_client() as api:
            report = sync(
                api, wh, context.run.run_id, window_of(context), naive_tz=robofy.naive_timezone
            )
        return _result(table, report)

    return _asset


def raw_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """Every raw asset, wired in dependency order (projects -> chatbots -> the rest)."""
    projects = _snapshot_asset(
        "robofy__projects",
        streams.sync_projects,
        "One row per Robofy project, as returned by List Projects (full snapshot; vanished "
        "projects are kept and marked deleted).",
        deps=[],
    )
    chatbots = _snapshot_asset(
        "robofy__chatbots",
        streams.sync_chatbots,
        "One row per chatbot (agent) of every live project, as returned by List Agents "
        "(full snapshot; vanished chatbots are marked deleted).",
        deps=[raw_key("robofy__projects")],
    )
    leads = _windowed_asset(
        "robofy__leads",
        streams.sync_leads,
        "One row per captured lead, by the UTC day it was created, as returned by List Leads.",
        partitions_def,
        "_slice (created_at day)",
    )
    stats = _windowed_asset(
        "robofy__message_stats",
        streams.sync_message_stats,
        "One row per chatbot and day of the message statistics endpoint.",
        partitions_def,
        "_slice (stat_date)",
    )
    return [projects, chatbots, _conversations_asset(partitions_def), leads, stats]


def _conversations_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    sessions, messages = raw_key("robofy__inbox_sessions"), raw_key("robofy__chat_messages")

    @dg.multi_asset(
        name="robofy__conversations",
        specs=[
            dg.AssetSpec(
                sessions,
                group_name=GROUP,
                description="One row per inbox session (chatbot_id, session_id), by the UTC day "
                "it started, as returned by List Sessions.",
                deps=[raw_key("robofy__chatbots")],
                metadata={"partition_expr": "_slice (session start day)"},
                tags=KIND_TAGS,
            ),
            dg.AssetSpec(
                messages,
                group_name=GROUP,
                description="One row per transcript message, in the partition of its session's "
                "start day. Fetched only for new or changed sessions.",
                deps=[sessions],
                metadata={"partition_expr": "_slice (session start day)"},
                tags=KIND_TAGS,
            ),
        ],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
        check_specs=[complete_check(sessions.path[1]), complete_check(messages.path[1])],
    )
    def _asset(
        context: AssetExecutionContext, robofy: RobofyResource, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult[Any]]:
        wh = warehouse.get_warehouse()
        with robofy.get_client() as api:
            report = streams.sync_conversations(
                api,
                wh,
                context.run.run_id,
                window_of(context),
                naive_tz=robofy.naive_timezone,
                refetch=context.run.tags.get(REFETCH_TAG) == "true",
            )
        yield _result("robofy__inbox_sessions", report)
        yield _result("robofy__chat_messages", report)

    return _asset
