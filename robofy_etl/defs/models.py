"""SQL model assets: one asset per ``sql/`` file, built in one transaction, then published."""

# No `from __future__ import annotations`: Dagster reads the context annotation at runtime.

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from robofy_etl.defs.ingest import POOL
from robofy_etl.defs.resources import WarehouseResource
from robofy_etl.warehouse.models import Model, build

log = logging.getLogger(__name__)

# Run tag: rebuild every model from raw instead of incrementally (`robofy-etl rebuild` does the
# same outside Dagster). The run config `{"ops": {"sql_models": {"config": {"full_refresh":
# true}}}}` does too (`dagster asset materialize --config-json ...`).
FULL_REFRESH_TAG = "robofy/full_refresh"


class ModelsConfig(dg.Config):
    """Run config of the SQL models."""

    full_refresh: bool = False  # rebuild every model from raw instead of incrementally


# Like `AutomationCondition.eager()`, without its "no dependency missing" clause: the models
# are unpartitioned and read daily-partitioned raw tables, and for eager() a dependency counts
# as missing while any day since ROBOFY_START_DATE is unsynced, so the marts would never be
# rebuilt for a warehouse that holds only recent days. Models build fine on partial (or empty)
# raw tables.
REBUILD_WHEN_UPSTREAM_UPDATED = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("rebuild when any upstream table or day is updated")


def model_key(model: Model) -> dg.AssetKey:
    return dg.AssetKey([model.schema, model.relation])


def _dep_key(relation: str) -> dg.AssetKey:
    return dg.AssetKey(relation.split("."))


def model_assets(models: Sequence[Model], pool: str | None = POOL) -> dg.AssetsDefinition:
    """Every staging and mart model as one subsettable multi-asset with per-model lineage.

    Building them in one step means one DuckDB transaction: readers of the warehouse never see
    marts from two different loads. Builds are incremental (only the rows of what the loads
    changed are rebuilt); the run tag ``robofy/full_refresh=true`` rebuilds everything. After a
    successful build the warehouse is published as a read-only copy for dashboards.

    On PostgreSQL builds are incremental too (the same planner, warehouse/pg/models.py), in one
    transaction; dashboards read the marts directly, nothing is published.
    """
    specs = [
        dg.AssetSpec(
            model_key(m),
            deps=[_dep_key(d) for d in m.deps],
            group_name=m.schema,
            description=m.description or None,
            kinds={"duckdb", "sql"},
            metadata={
                "grain": m.grain or "",
                "materialization": m.materialization,
                "sql_file": f"sql/{m.schema}/{m.relation}.sql",
            },
            automation_condition=REBUILD_WHEN_UPSTREAM_UPDATED,
        )
        for m in models
    ]
    by_key = {model_key(m): m for m in models}

    @dg.multi_asset(name="sql_models", specs=specs, can_subset=True, pool=pool)
    def _build(
        context: AssetExecutionContext, config: ModelsConfig, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult[Any]]:
        selected = [by_key[key] for key in context.selected_asset_keys]
        published: str | None = None
        full_refresh = config.full_refresh or context.run.tags.get(FULL_REFRESH_TAG) == "true"
        if warehouse.backend == "postgresql":
            # One transaction; readers query the marts directly (nothing to publish). See
            # warehouse/pg/models.py.
            from robofy_etl.warehouse.pg.warehouse import PgWarehouse  # the postgres extra

            pg = warehouse.get_warehouse()
            assert isinstance(pg, PgWarehouse)
            results = pg.build_models(
                models, select=[m.name for m in selected], full_refresh=full_refresh
            )
            modes = {mode: sum(r.mode == mode for r in results) for mode in ("full", "incremental")}
            log.info(
                "built %d SQL models on PostgreSQL (%d in full, %d incrementally, the rest "
                "unchanged)",
                len(results),
                modes["full"],
                modes["incremental"],
            )
        else:
            wh = warehouse.get_duckdb()
            with wh.hold():
                with wh.transaction(run_id=context.run.run_id) as tx:
                    results = build(
                        tx.conn,
                        models,
                        select=[m.name for m in selected],
                        full_refresh=full_refresh,
                    )
                published = str(wh.publish(warehouse.publish_path or None))
            modes = {mode: sum(r.mode == mode for r in results) for mode in ("full", "incremental")}
            log.info(
                "built %d SQL models (%d in full, %d incrementally, the rest unchanged); "
                "published %s",
                len(results),
                modes["full"],
                modes["incremental"],
                published,
            )
        for result in results:
            schema, name = result.name.split(".", 1)
            metadata: dict[str, Any] = {
                "materialization": result.materialization,
                "build": result.mode,
                "keys_rebuilt": result.keys,
                "duration_s": round(result.seconds, 3),
            }
            if published is not None:
                metadata["published_copy"] = published
            if result.reason:
                metadata["full_build_reason"] = result.reason
            if result.rows is not None:
                metadata["dagster/row_count"] = result.rows
            yield dg.MaterializeResult(asset_key=dg.AssetKey([schema, name]), metadata=metadata)

    return _build
