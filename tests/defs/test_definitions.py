"""The Dagster layer: the graph loads, keys are stable, schedules ask for the right days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster_shared.serdes import serialize_value

from robofy_etl.api import ClientConfig
from robofy_etl.defs.assembly import build_definitions
from robofy_etl.defs.partitions import RANGE_END, RANGE_START
from robofy_etl.defs.resources import RobofyResource, WarehouseResource
from robofy_etl.defs.schedules import SYNC_JOB
from robofy_etl.settings import Settings, SettingsError

RAW = {
    "raw/robofy__projects",
    "raw/robofy__chatbots",
    "raw/robofy__inbox_sessions",
    "raw/robofy__chat_messages",
    "raw/robofy__leads",
    "raw/robofy__message_stats",
}
STAGING = {f"staging/stg_{key.split('/')[1]}" for key in RAW}
MARTS = {
    "marts/projects",
    "marts/chatbots",
    "marts/sessions",
    "marts/messages",
    "marts/leads",
    "marts/lead_fields",
    "marts/message_stats_daily",
    "marts/chatbot_daily_activity",
}


@pytest.fixture
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env({}))


def _keys(defs: dg.Definitions) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string() for key in graph.get_all_asset_keys()}


def test_asset_graph_is_exactly_the_raw_staging_and_mart_relations(defs: dg.Definitions) -> None:
    assert _keys(defs) == RAW | STAGING | MARTS


def test_marts_have_lineage_back_to_raw(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()

    def ancestors(key: dg.AssetKey) -> set[str]:
        found: set[str] = set()
        for parent in graph.get(key).parent_keys:
            found |= {parent.to_user_string(), *ancestors(parent)}
        return found

    conversations = {"chatbots", "inbox_sessions", "chat_messages", "leads"}
    assert ancestors(dg.AssetKey(["marts", "sessions"])) == {
        "raw/robofy__projects",  # raw/robofy__chatbots depends on it
        *(f"raw/robofy__{name}" for name in conversations),
        *(f"staging/stg_robofy__{name}" for name in conversations),
    }
    assert "raw/robofy__message_stats" in ancestors(
        dg.AssetKey(["marts", "chatbot_daily_activity"])
    )


def test_partitioned_streams_are_daily_with_single_run_backfills(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for key in RAW - {"raw/robofy__projects", "raw/robofy__chatbots"}:
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), key
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
    for key in ("raw/robofy__projects", "raw/robofy__chatbots"):
        assert graph.get(dg.AssetKey.from_user_string(key)).partitions_def is None


def test_unpartitioned_definitions_have_the_same_graph_checks_and_no_schedules(
    defs: dg.Definitions,
) -> None:
    """``robofy-etl sync`` without DAGSTER_HOME: the same assets and checks, no partitions."""
    plain = build_definitions(Settings.from_env({}), partitioned=False)
    graph, plain_graph = defs.resolve_asset_graph(), plain.resolve_asset_graph()
    assert _keys(plain) == _keys(defs)
    assert plain_graph.asset_check_keys == graph.asset_check_keys
    for key in plain_graph.get_all_asset_keys():
        assert plain_graph.get(key).partitions_def is None, key
    assert list(plain.schedules or []) == []
    assert plain.resolve_job_def(SYNC_JOB).partitions_def is None


def test_checks_cover_keys_references_freshness_and_grain(defs: dg.Definitions) -> None:
    names = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert "robofy__inbox_sessions__unique_chatbot_id_session_id" in names
    assert "robofy__chat_messages__references_inbox_sessions" in names
    assert "robofy__chatbots__references_projects" in names
    assert "robofy__inbox_sessions__loaded_recently" in names
    assert {f"{m.split('/')[1]}__unique_grain" for m in MARTS} <= names
    assert "chatbot_daily_activity__reconciles_with_stats" in names


def test_a_postgresql_warehouse_gets_the_same_checks(defs: dg.Definitions) -> None:
    """The checks' queries run on either back end: PostgreSQL's definitions leave none out."""
    url = "postgresql+psycopg://robofy:pw@127.0.0.1:5432/robofy"
    on_pg = build_definitions(Settings.from_env({"ROBOFY_WAREHOUSE_URL": url}))
    graph, pg_graph = defs.resolve_asset_graph(), on_pg.resolve_asset_graph()
    assert pg_graph.asset_check_keys == graph.asset_check_keys
    assert len(pg_graph.asset_check_keys) > 20


@pytest.mark.parametrize(
    ("schedule", "at", "first", "last"),
    [
        ("robofy_daily", datetime(2026, 10, 20, 0, 15, tzinfo=UTC), "2026-10-17", "2026-10-20"),
        (
            "robofy_recent_refresh",
            datetime(2026, 10, 20, 9, 5, tzinfo=UTC),
            "2026-10-19",
            "2026-10-20",
        ),
    ],
)
def test_schedules_request_one_run_for_the_recent_days(
    defs: dg.Definitions, schedule: str, at: datetime, first: str, last: str
) -> None:
    definition = next(s for s in defs.schedules if s.name == schedule)
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        request = definition.evaluate_tick(context).run_requests[0]
    assert request.tags[RANGE_START] == first
    assert request.tags[RANGE_END] == last


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROBOFY_START_DATE": "yesterday"}, "ROBOFY_START_DATE"),
        ({"ROBOFY_MAX_IN_FLIGHT": "0"}, "ROBOFY_MAX_IN_FLIGHT"),
        ({"ROBOFY_BASE_URL": "agents.robofy.ai"}, "ROBOFY_BASE_URL"),
        ({"ROBOFY_AUTH_HEADER": "basic"}, "ROBOFY_AUTH_HEADER"),
        ({"ROBOFY_NAIVE_TIMEZONE": "Mars/Olympus"}, "ROBOFY_NAIVE_TIMEZONE"),
        ({"ROBOFY_STATS_PARAMS": "a,b"}, "ROBOFY_STATS_PARAMS"),
        ({"ROBOFY_TIMEOUT_S": "-1"}, "ROBOFY_TIMEOUT_S"),
        ({"ROBOFY_HTTP_TRANSPORT": "curl"}, "ROBOFY_HTTP_TRANSPORT"),
        ({"ROBOFY_DUCKDB_MEMORY_LIMIT": "lots"}, "ROBOFY_DUCKDB_MEMORY_LIMIT"),
    ],
)
def test_bad_setting_fails_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.base_url == "https://agents.robofy.ai"
    assert settings.resolved_publish_path == "data/robofy.read.duckdb"
    assert settings.max_rps is None


def test_resource_never_shows_the_api_key() -> None:
    resource = RobofyResource(api_key="sekrit-9d2f")
    assert "sekrit-9d2f" not in repr(resource)
    assert "sekrit-9d2f" not in str(resource)
    assert "sekrit-9d2f" not in repr(resource.client_config())


def _stored_snapshot(defs: dg.Definitions) -> str:
    """The sync job as a run stores it in DAGSTER_HOME (resource config included)."""
    return serialize_value(defs.resolve_job_def(SYNC_JOB).get_job_snapshot())


def test_a_key_handed_to_the_definitions_is_not_stored_with_the_run() -> None:
    """`robofy-etl sync` passes its key in; a literal config value would land in run storage."""
    secret = "sekrit-4b1e"
    settings = Settings.from_env({})
    handed = build_definitions(settings, api_key=secret)
    assert secret not in _stored_snapshot(handed)
    assert "ROBOFY_MAX_IN_FLIGHT" in _stored_snapshot(handed)  # the settings are visible

    # The control: the same resource given as config would be stored.
    from_env = build_definitions(settings)
    literal = dg.Definitions(
        assets=list(from_env.assets or []),
        jobs=list(from_env.jobs or []),
        resources={
            **(from_env.resources or {}),
            "robofy": RobofyResource(api_key=secret, settings=settings.as_env()),
        },
    )
    assert secret in _stored_snapshot(literal)


def test_resources_are_configured_from_the_settings() -> None:
    settings = Settings.from_env(
        {"ROBOFY_MAX_IN_FLIGHT": "3", "ROBOFY_DUCKDB_MEMORY_LIMIT": "1GiB"},
        overrides={"ROBOFY_BASE_URL": "http://127.0.0.1:9"},
    )
    resources = build_definitions(settings).resources
    assert resources["robofy"].settings == settings.as_env(secrets=False)
    assert resources["warehouse"].settings == settings.as_env(secrets=False)
    robofy = RobofyResource(api_key="k", settings=settings.as_env())
    assert robofy.client_config() == ClientConfig.from_settings(settings, api_key="k")


def test_a_value_set_in_the_launchpad_is_checked_by_the_settings(tmp_path: Path) -> None:
    robofy = RobofyResource(api_key="k", settings={"ROBOFY_MAX_IN_FLIGHT": "0"})
    with pytest.raises(SettingsError, match=r"^ROBOFY_MAX_IN_FLIGHT must"):
        robofy.client_config()
    warehouse = WarehouseResource(
        settings={
            "ROBOFY_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "ROBOFY_DUCKDB_MEMORY_LIMIT": "0",
        }
    )
    with pytest.raises(SettingsError, match=r"^ROBOFY_DUCKDB_MEMORY_LIMIT must"):
        warehouse.get_warehouse()


def _report(instance: dg.DagsterInstance, graph: object, keys: list[dg.AssetKey], day: str) -> None:
    """Record materializations as a run would: unpartitioned assets whole, the others for a day."""
    for key in keys:
        partitions = graph.get(key).partitions_def  # type: ignore[attr-defined]
        partition = None if partitions is None else day
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def test_models_rebuild_when_any_upstream_day_is_updated() -> None:
    """The SQL models' automation condition, evaluated as the automation daemon would.

    The warehouse may hold only recent days (older partitions never synced): the models must
    still be rebuilt when raw data lands, and only the models downstream of what changed.
    """
    today = datetime.now(UTC).date().isoformat()
    defs = build_definitions(Settings.from_env({"ROBOFY_START_DATE": "2026-01-01"}))
    graph = defs.resolve_asset_graph()
    raw = sorted(k for k in graph.get_all_asset_keys() if k.path[0] == "raw")
    models = {k for k in graph.get_all_asset_keys() if k.path[0] in ("staging", "marts")}

    def upstream(key: dg.AssetKey) -> set[dg.AssetKey]:
        parents = set(graph.get(key).parent_keys)
        return parents.union(*(upstream(p) for p in parents))

    with dg.DagsterInstance.ephemeral() as instance:
        cursor = None

        def requested() -> set[dg.AssetKey]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            return {k for k in graph.get_all_asset_keys() if result.get_num_requested(k)}

        assert requested() == set()  # nothing synced yet: nothing to build

        _report(instance, graph, raw, today)  # only today, of a year of daily partitions
        assert requested() == models

        _report(instance, graph, sorted(models), today)  # the requested run built them
        assert requested() == set()

        messages = dg.AssetKey(["raw", "robofy__chat_messages"])
        _report(instance, graph, [messages], today)
        downstream = {k for k in models if messages in upstream(k)}
        assert dg.AssetKey(["marts", "messages"]) in downstream
        assert dg.AssetKey(["marts", "leads"]) not in downstream
        assert requested() == downstream

        # A sync run writes raw data and then the models itself: no second build follows.
        _report(instance, graph, sorted(downstream), today)
        _report(instance, graph, [*raw, *sorted(models)], today)
        assert requested() == set()


def test_a_password_in_the_warehouse_url_is_not_stored_with_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ROBOFY_WAREHOUSE_URL may hold a password: it stays out of resource config, whether the
    CLI hands its settings in or Dagster reads the environment."""
    secret = "pw-7c1d"
    url = f"postgresql+psycopg://robofy:{secret}@127.0.0.1:5432/robofy"
    monkeypatch.setenv("ROBOFY_WAREHOUSE_URL", url)
    settings = Settings.from_env({"ROBOFY_WAREHOUSE_URL": url})
    assert secret not in repr(settings)
    for defs in (build_definitions(settings, api_key="k"), build_definitions(settings)):
        assert secret not in _stored_snapshot(defs)
    warehouse = build_definitions(settings).resources["warehouse"]
    assert isinstance(warehouse, WarehouseResource)
    ready = warehouse.process_config_and_initialize()  # as a run does: the variable is read
    assert ready._settings().warehouse_url == url


@pytest.mark.parametrize(
    ("environ", "pool"),
    [
        ({}, "robofy_warehouse"),
        ({"ROBOFY_WAREHOUSE_URL": "postgresql+psycopg://u:secret@127.0.0.1:5432/db"}, None),
    ],
)
def test_only_duckdb_runs_share_a_pool(environ: dict[str, str], pool: str | None) -> None:
    """DuckDB has one writer: every step that opens the file is in the pool dagster.yaml limits
    to one run at a time. PostgreSQL serialises writers of one slice itself (advisory locks), so
    its runs may overlap: no step is in a pool."""
    defs = build_definitions(Settings.from_env(environ))
    ops = [a.op for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    ops += [c.op for c in defs.asset_checks or [] if isinstance(c, dg.AssetChecksDefinition)]
    assert len(ops) >= 4
    assert {op.pool for op in ops} == {pool}


def test_a_run_names_its_days_by_a_partition_range_or_by_the_window_tag() -> None:
    from robofy_etl.defs.partitions import WINDOW_TAG, days_of_run, range_tags, window_tags
    from robofy_etl.sync import Window

    october = Window(date(2026, 10, 1), date(2026, 11, 1))
    assert days_of_run(range_tags(october.start, october.last)) == october
    assert days_of_run(window_tags(october)) == october
    assert window_tags(october) == {WINDOW_TAG: "2026-10-01..2026-10-31"}
    for tags in ({}, {WINDOW_TAG: "2026-10-31..2026-10-01"}, {WINDOW_TAG: "last week"}):
        assert days_of_run(tags) is None, tags


def test_an_unpartitioned_run_without_its_days_fails_naming_the_tag(tmp_path: Path) -> None:
    from robofy_etl.defs.partitions import WINDOW_TAG

    settings = Settings.from_env({"ROBOFY_DUCKDB_PATH": str(tmp_path / "robofy.duckdb")})
    plain = build_definitions(settings, api_key="key", partitioned=False)
    with dg.DagsterInstance.ephemeral() as instance:
        result = plain.resolve_job_def(SYNC_JOB).execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["raw", "robofy__leads"])],
            raise_on_error=False,
        )
    assert not result.success
    failures = [event for event in result.all_events if event.is_step_failure]
    assert len(failures) == 1
    assert WINDOW_TAG in failures[0].step_failure_data.error.message
