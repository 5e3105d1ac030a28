"""The stream registry is the one declaration of a stream: these tests keep it coherent with the
layers it refers to (the endpoint registry, the raw tables) and with what is derived from it."""

from __future__ import annotations

import dagster as dg
import pytest

from robofy_etl.api import ENDPOINTS
from robofy_etl.defs.assembly import build_definitions
from robofy_etl.settings import Settings
from robofy_etl.sync.registry import REFERENCES, STREAMS, Stream, sync_function, sync_groups
from robofy_etl.warehouse.tables import RAW_TABLES


def test_every_raw_table_is_one_stream_and_every_stream_a_raw_table() -> None:
    assert list(STREAMS) == list(RAW_TABLES)
    for name, stream in STREAMS.items():
        assert stream.table is RAW_TABLES[name]  # referred to, not copied
        assert stream.endpoint is ENDPOINTS[stream.endpoint.name]


@pytest.mark.parametrize("stream", list(STREAMS.values()), ids=list(STREAMS))
def test_a_stream_is_coherent_with_its_endpoint_table_and_parent(stream: Stream) -> None:
    names = list(STREAMS)
    if stream.parent is not None:
        assert names.index(stream.parent) < names.index(stream.name), "parent comes first"
        parent_columns = STREAMS[stream.parent].table.column_names
        for column in stream.references:
            assert column in stream.table.column_names
            assert column in parent_columns
    if stream.order_field:  # a newest-first list scan
        assert stream.windowed
        assert stream.slice_field
        assert {stream.order_field, stream.slice_field} <= set(stream.endpoint.fields)
        assert stream.record_key in stream.endpoint.fields
        assert set(stream.endpoint.path_params) <= {"chatbot_id", "project_id"}
    assert stream.optional_fields <= set(stream.endpoint.fields)
    assert (stream.partition_expr is not None) == stream.windowed
    assert callable(sync_function(stream))


def test_streams_synced_together_are_all_snapshots_or_all_windowed() -> None:
    groups = sync_groups()
    assert sorted(s.name for group in groups for s in group) == sorted(STREAMS)
    for group in groups:
        assert len({s.windowed for s in group}) == 1, group


def test_raw_assets_and_checks_follow_the_registry() -> None:
    defs = build_definitions(Settings.from_env({}))
    graph = defs.resolve_asset_graph()
    raw = {k for k in graph.get_all_asset_keys() if k.path[0] == "raw"}
    assert raw == {dg.AssetKey(["raw", name]) for name in STREAMS}
    for name, stream in STREAMS.items():
        node = graph.get(dg.AssetKey(["raw", name]))
        assert node.description == stream.description
        assert node.kinds == {"duckdb", "python"}
        assert node.metadata.get("partition_expr") == stream.partition_expr
        assert (node.partitions_def is not None) == stream.windowed
        if stream.parent is not None:
            assert dg.AssetKey(["raw", stream.parent]) in node.parent_keys
    checks = {key.name for key in graph.asset_check_keys}
    assert {ref.name for ref in REFERENCES} <= checks
    fresh = {f"{name}__loaded_recently" for name, s in STREAMS.items() if s.fresh}
    assert fresh == {c for c in checks if c.endswith("__loaded_recently")}
