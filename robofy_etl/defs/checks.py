"""Asset checks: unique keys, referential integrity, freshness, mart grain, reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from robofy_etl.defs.ingest import raw_key
from robofy_etl.defs.models import model_key
from robofy_etl.defs.resources import WarehouseResource
from robofy_etl.warehouse import quality
from robofy_etl.warehouse.models import Model
from robofy_etl.warehouse.tables import RAW_TABLES

FRESHNESS = timedelta(hours=26)


def _result(outcome: quality.CheckOutcome, *, warn: bool = False) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata=dict(outcome.metadata),
        severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR,
    )


def _raw_unique(table: str) -> dg.AssetChecksDefinition:
    key = "_".join(RAW_TABLES[table].key)

    @dg.asset_check(
        asset=raw_key(table),
        name=f"{table}__unique_{key}",
        description=f"raw.{table} has one row per ({', '.join(RAW_TABLES[table].key)}).",
        blocking=True,
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.get_warehouse().connect() as conn:
            return _result(quality.raw_unique_key(conn, table))

    return _check


def _references(ref: quality.Reference) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=raw_key(ref.child),
        name=ref.name,
        description=f"Every raw.{ref.child} row has its raw.{ref.parent} row.",
        additional_deps=[raw_key(ref.parent)],
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.get_warehouse().connect() as conn:
            return _result(quality.orphans(conn, ref))

    return _check


def _fresh(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=raw_key(table),
        name=f"{table}__loaded_recently",
        description=f"raw.{table} was loaded in the last {FRESHNESS}.",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        now = datetime.now(UTC).replace(tzinfo=None)
        with warehouse.get_warehouse().connect() as conn:
            return _result(quality.latest_load(conn, table, FRESHNESS, now), warn=True)

    return _check


def _mart_grain(model: Model) -> dg.AssetChecksDefinition:
    columns = model.key_columns

    @dg.asset_check(
        asset=model_key(model),
        name=f"{model.relation}__unique_grain",
        description=f"{model.name}: {model.grain}",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.get_warehouse().connect() as conn:
            return _result(quality.unique_key(conn, model.name, columns))

    return _check


def _reconciliation() -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["marts", "chatbot_daily_activity"]),
        name="chatbot_daily_activity__reconciles_with_stats",
        description="Daily messages from transcripts agree with the stats API (2% tolerance).",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.get_warehouse().connect() as conn:
            return _result(quality.reconcile_daily_activity(conn), warn=True)

    return _check


def all_checks(models: Sequence[Model]) -> list[dg.AssetChecksDefinition]:
    checks = [_raw_unique(t) for t in RAW_TABLES]
    checks += [_references(r) for r in quality.REFERENCES]
    checks += [_fresh(t) for t in ("robofy__inbox_sessions", "robofy__leads")]
    checks += [_mart_grain(m) for m in models if m.schema == "marts" and m.key_columns]
    if any(m.name == "marts.chatbot_daily_activity" for m in models):
        checks.append(_reconciliation())
    return checks
