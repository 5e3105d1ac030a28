"""Raw assets, one per stream of the registry, landing ``raw.robofy__*`` via ``robofy_etl.sync``.

Every raw asset is derived from its ``robofy_etl.sync.registry`` entry: its key, description,
partitions, dependency and checks. Each snapshot is a step of its own (projects, then
chatbots); the windowed streams are one multi-asset, one step, whose syncs run at once.

``partition_expr`` names ``_slice``, the column that holds each row's partition day as
'YYYY-MM-DD' (for transcript messages: their session's start day). Every windowed load replaces
the rows of its days by that column.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at runtime.

import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from robofy_etl.defs.partitions import window_of
from robofy_etl.defs.resources import RobofyResource, WarehouseResource
from robofy_etl.sync import SyncReport
from robofy_etl.sync.registry import Stream, sync_function, sync_groups
from robofy_etl.sync.together import run_together

log = logging.getLogger(__name__)

GROUP = "raw"
# One writer of the DuckDB file at a time (dagster.yaml: pools). PostgreSQL needs no pool: its
# writers of one slice take turns through advisory locks, so its runs may overlap.
POOL = "robofy_warehouse"
KINDS = {"duckdb", "python"}
# Run tag: fetch every transcript of the run's days again, changed or not (`sync --refetch`).
REFETCH_TAG = "robofy/refetch"
COMPLETE = "loaded_completely"
# The step that syncs every windowed stream of the run's days.
WINDOWED_STEP = "robofy__daily_streams"


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


def _result(table: str, report: SyncReport) -> dg.MaterializeResult[Any]:
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


def _spec(stream: Stream) -> dg.AssetSpec:
    return dg.AssetSpec(
        raw_key(stream.name),
        group_name=GROUP,
        description=stream.description,
        deps=[raw_key(stream.parent)] if stream.parent else [],
        metadata=(
            {"partition_expr": stream.partition_expr}
            if stream.partition_expr
            else {"slice": "whole table (snapshot merge, soft deletes)"}
        ),
        kinds=KINDS,
    )


def _snapshot_asset(stream: Stream, pool: str | None) -> dg.AssetsDefinition:
    """One step: a full snapshot of ``stream``."""
    sync = sync_function(stream)

    @dg.multi_asset(
        name=f"raw__{stream.name}",
        specs=[_spec(stream)],
        pool=pool,
        check_specs=[complete_check(stream.name)],
    )
    def _asset(
        context: AssetExecutionContext, robofy: RobofyResource, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult[Any]]:
        wh = warehouse.get_warehouse()
        with robofy.get_client() as api:
            report = sync(api, wh, context.run.run_id, naive_tz=robofy.naive_timezone)
        yield _result(stream.name, report)

    return _asset


def _windowed_asset(
    groups: Sequence[tuple[Stream, ...]],
    partitions_def: dg.PartitionsDefinition | None,
    pool: str | None,
) -> dg.AssetsDefinition:
    """One step syncing every windowed stream for the run's days, all at once.

    Each group is the streams one sync function writes together (sessions and their
    transcripts). The groups run concurrently (``run_together``), the longest first: their
    fetches overlap instead of waiting for each other. A group that fails does not stop the
    others; the step reports what loaded, then fails with the first error. A run that selects
    some of the streams syncs only their groups.
    """
    syncs = [sync_function(group[0]) for group in groups]
    streams = [stream for group in groups for stream in group]

    @dg.multi_asset(
        name=WINDOWED_STEP,
        specs=[_spec(s) for s in streams],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
        pool=pool,
        check_specs=[complete_check(s.name) for s in streams],
        can_subset=True,
    )
    def _asset(
        context: AssetExecutionContext, robofy: RobofyResource, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult[Any]]:
        wh = warehouse.get_warehouse()
        window = window_of(context)
        selected = {key.path[-1] for key in context.selected_asset_keys}
        chosen = [
            (group, sync)
            for group, sync in zip(groups, syncs, strict=True)
            if any(s.name in selected for s in group)
        ]
        with robofy.get_client() as api:
            results = run_together(
                [
                    partial(
                        sync,
                        api,
                        wh,
                        context.run.run_id,
                        window,
                        naive_tz=robofy.naive_timezone,
                        **_options(sync, context),
                    )
                    for _, sync in chosen
                ]
            )
        errors = [result for result in results if isinstance(result, Exception)]
        for (group, _), result in zip(chosen, results, strict=True):
            if not isinstance(result, Exception):
                for stream in group:
                    if stream.name in selected:
                        yield _result(stream.name, result)
        if errors:
            raise errors[0]

    return _asset


def _options(sync: Callable[..., SyncReport], context: AssetExecutionContext) -> dict[str, Any]:
    """Run-tag options a sync function takes (``sync --refetch``: every transcript again)."""
    if "refetch" in inspect.signature(sync).parameters:
        return {"refetch": context.run.tags.get(REFETCH_TAG) == "true"}
    return {}


def raw_assets(
    partitions_def: dg.PartitionsDefinition | None, pool: str | None = POOL
) -> list[dg.AssetsDefinition]:
    """Every raw asset of the registry: a step per snapshot, in dependency order (projects,
    then chatbots), and one step for all the windowed streams, all in ``pool`` (None: none).

    ``partitions_def``: the windowed streams' partitions; None for unpartitioned definitions,
    whose runs name their days in a run tag (``partitions.WINDOW_TAG``).
    """
    groups = sync_groups()
    snapshots = [_snapshot_asset(s, pool) for group in groups for s in group if not s.windowed]
    # In registry order: the conversations (the longest sync) first, on the step's own thread.
    windowed = [group for group in groups if group[0].windowed]
    return [*snapshots, _windowed_asset(windowed, partitions_def, pool)]
