"""Materializing some raw assets: the windowed streams share one step, but a run that selects
only some of them syncs only those (as the Dagster UI does when one asset is materialized)."""

from __future__ import annotations

import dagster as dg

from robofy_etl.defs.assembly import build_definitions
from robofy_etl.settings import Settings
from tests.e2e.conftest import LAST_DAY, Pipeline


def test_selecting_leads_syncs_leads_and_not_the_conversations(pipeline: Pipeline) -> None:
    defs = build_definitions(Settings.from_env())
    selection = [
        dg.AssetKey(["raw", name])
        for name in ("robofy__projects", "robofy__chatbots", "robofy__leads")
    ]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=LAST_DAY.isoformat(), raise_on_error=False
        )
    assert result.success
    materialized = {
        tuple(e.step_materialization_data.materialization.asset_key.path)
        for e in result.get_asset_materialization_events()
    }
    assert materialized == {tuple(key.path) for key in selection}
    endpoints = {e.endpoint for e in pipeline.sim.request_log}
    assert "leads" in endpoints
    assert not endpoints & {"sessions", "transcript", "message_stats"}
    assert pipeline.query("select count(*) from raw.robofy__inbox_sessions") == [(0,)]
