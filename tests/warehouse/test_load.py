"""Slice replacement and snapshot merges: the idempotency every re-run and backfill relies on.

A load must leave exactly its slice equal to the incoming rows, touch nothing else, and be a
no-op when repeated (lineage included), so materializing a partition twice gives identical tables.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from robofy_etl.warehouse import LoadCounts, Slice, Warehouse, WarehouseError
from robofy_etl.warehouse.load import build_batch, encode_payload, get_raw_table

from .conftest import chatbot_row, message_row, session_row, table_rows

SESSIONS = "robofy__inbox_sessions"
MESSAGES = "robofy__chat_messages"
CHATBOTS = "robofy__chatbots"
OCT_1_15 = Slice(day_from=date(2026, 10, 1), day_to=date(2026, 10, 15))


def load(wh: Warehouse, table: str, rows: Any, slc: Slice, run_id: str = "run") -> LoadCounts:
    with wh.transaction(run_id=run_id) as tx:
        return tx.replace(table, rows, slice=slc)


def stored_keys(wh: Warehouse, relation: str, *columns: str) -> list[tuple[Any, ...]]:
    with wh.connect() as conn:
        return conn.execute(f"select {', '.join(columns)} from {relation} order by all").fetchall()


def test_replace_slice_is_idempotent(wh: Warehouse) -> None:
    rows = [session_row("a", f"s{i}", f"2026-10-0{i}") for i in range(1, 6)]
    assert load(wh, SESSIONS, rows, OCT_1_15, "run-1") == LoadCounts(inserted=5)
    before = table_rows(wh, "raw.robofy__inbox_sessions")

    assert load(wh, SESSIONS, rows, OCT_1_15, "run-2") == LoadCounts(unchanged=5)

    after = table_rows(wh, "raw.robofy__inbox_sessions")
    assert after == before  # lineage (_loaded_at, _run_id) of unchanged rows is kept
    assert {row[-2] for row in after} == {"run-1"}


def test_replace_leaves_other_slices_untouched(wh: Warehouse) -> None:
    load(wh, SESSIONS, [session_row("a", "s1", "2026-10-01")], Slice("2026-10-01", "2026-10-02"))
    load(wh, SESSIONS, [session_row("a", "s2", "2026-10-02")], Slice("2026-10-02", "2026-10-03"))
    day_2 = [r for r in table_rows(wh, "raw.robofy__inbox_sessions") if r[-1] == "2026-10-02"]

    counts = load(
        wh, SESSIONS, [session_row("a", "s9", "2026-10-01")], Slice("2026-10-01", "2026-10-02")
    )

    assert counts == LoadCounts(inserted=1, deleted=1)
    rows = table_rows(wh, "raw.robofy__inbox_sessions")
    assert [r for r in rows if r[-1] == "2026-10-02"] == day_2
    assert stored_keys(wh, "raw.robofy__inbox_sessions", "session_id") == [("s2",), ("s9",)]


@pytest.mark.parametrize(
    ("new_rows", "expected"),
    [
        pytest.param(["s1", "s2", "s3"], LoadCounts(unchanged=3), id="same"),
        pytest.param(["s1", "s2", "s3", "s4"], LoadCounts(inserted=1, unchanged=3), id="insert"),
        pytest.param(["s1"], LoadCounts(deleted=2, unchanged=1), id="delete"),
        pytest.param(["s1", "s2*", "s3"], LoadCounts(updated=1, unchanged=2), id="update"),
        pytest.param(
            ["s2*", "s3", "s5", "s6"],
            LoadCounts(inserted=2, updated=1, deleted=1, unchanged=1),
            id="mix",
        ),
        pytest.param([], LoadCounts(deleted=3), id="empty-deletes-slice"),
    ],
)
def test_replace_counts_by_key(wh: Warehouse, new_rows: list[str], expected: LoadCounts) -> None:
    load(wh, SESSIONS, [session_row("a", s, "2026-10-02") for s in ("s1", "s2", "s3")], OCT_1_15)
    rows = [
        session_row("a", s.rstrip("*"), "2026-10-02", **({"status": "closed"} if "*" in s else {}))
        for s in new_rows
    ]

    assert load(wh, SESSIONS, rows, OCT_1_15, "run-2") == expected

    assert stored_keys(wh, "raw.robofy__inbox_sessions", "session_id") == [
        (s.rstrip("*"),) for s in sorted(new_rows)
    ]


def test_changed_typed_column_counts_as_update(wh: Warehouse) -> None:
    row = session_row("a", "s1", "2026-10-02")
    load(wh, SESSIONS, [row], OCT_1_15)
    moved = {**row, "last_message_at": datetime(2026, 10, 3, 12)}

    assert load(wh, SESSIONS, [moved], OCT_1_15, "run-2") == LoadCounts(updated=1)

    [(last_message_at, run_id)] = stored_keys(
        wh, "raw.robofy__inbox_sessions", "last_message_at", "_run_id"
    )
    assert (last_message_at, run_id) == (datetime(2026, 10, 3, 12), "run-2")


def test_keys_slice_replaces_only_the_named_transcripts(wh: Warehouse) -> None:
    s1 = [message_row("a", "s1", n, "2026-10-01") for n in range(3)]
    s2 = [message_row("b", "s2", n, "2026-10-01") for n in range(2)]
    load(wh, MESSAGES, s1 + s2, Slice())
    only_s1 = Slice(keys=(("chatbot_id", "session_id"), [("a", "s1")]))

    counts = load(wh, MESSAGES, [message_row("a", "s1", 0, "2026-10-01")], only_s1, "run-2")

    assert counts == LoadCounts(deleted=2, unchanged=1)
    assert stored_keys(wh, "raw.robofy__chat_messages", "message_id") == [
        ("s1-m0",),
        ("s2-m0",),
        ("s2-m1",),
    ]


def test_keys_slice_handles_many_tuples(wh: Warehouse) -> None:
    rows = [message_row("a", f"s{i}", 0, "2026-10-01") for i in range(10_000)]
    keys = Slice(keys=(("chatbot_id", "session_id"), [("a", f"s{i}") for i in range(10_000)]))

    assert load(wh, MESSAGES, rows, keys) == LoadCounts(inserted=10_000)
    assert load(wh, MESSAGES, rows[:5_000], keys) == LoadCounts(deleted=5_000, unchanged=5_000)


def test_window_with_within_leaves_other_chatbots_untouched(wh: Warehouse) -> None:
    load(
        wh,
        SESSIONS,
        [session_row("a", "s1", "2026-10-01"), session_row("b", "s2", "2026-10-01")],
        OCT_1_15,
    )
    only_a = Slice(
        day_from=date(2026, 10, 1), day_to=date(2026, 10, 15), within={"chatbot_id": ["a"]}
    )

    assert load(wh, SESSIONS, [], only_a, "run-2") == LoadCounts(deleted=1)

    assert stored_keys(wh, "raw.robofy__inbox_sessions", "chatbot_id", "session_id") == [
        ("b", "s2")
    ]


def test_empty_within_matches_nothing(wh: Warehouse) -> None:
    load(wh, SESSIONS, [session_row("a", "s1", "2026-10-01")], OCT_1_15)

    assert load(wh, SESSIONS, [], Slice(within={"chatbot_id": []})) == LoadCounts()

    assert stored_keys(wh, "raw.robofy__inbox_sessions", "session_id") == [("s1",)]


@pytest.mark.parametrize(
    ("row", "slc"),
    [
        pytest.param(session_row("a", "s1", "2026-10-15"), OCT_1_15, id="after-window"),
        pytest.param(session_row("a", "s1", "2026-09-30"), OCT_1_15, id="before-window"),
        pytest.param(
            session_row("b", "s1", "2026-10-01"), Slice(within={"chatbot_id": ["a"]}), id="within"
        ),
        pytest.param(
            session_row("a", "s2", "2026-10-01"),
            Slice(keys=(("chatbot_id", "session_id"), [("a", "s1")])),
            id="keys",
        ),
    ],
)
def test_row_outside_the_slice_raises_and_changes_nothing(
    wh: Warehouse, row: dict[str, Any], slc: Slice
) -> None:
    load(wh, SESSIONS, [session_row("a", "s0", "2026-10-01")], Slice())
    before = table_rows(wh, "raw.robofy__inbox_sessions")

    with pytest.raises(WarehouseError, match="outside the slice"):
        load(wh, SESSIONS, [row], slc, "run-2")

    assert table_rows(wh, "raw.robofy__inbox_sessions") == before


def test_duplicate_keys_keep_the_last_occurrence(
    wh: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [
        session_row("a", "s1", "2026-10-01", version=1),
        session_row("a", "s2", "2026-10-01"),
        session_row("a", "s1", "2026-10-01", version=2),
        session_row("a", "s1", "2026-10-01", version=3),
    ]

    with caplog.at_level(logging.WARNING, logger="robofy_etl.warehouse.load"):
        counts = load(wh, SESSIONS, rows, OCT_1_15)

    assert counts == LoadCounts(inserted=2)
    assert "2 incoming row(s) repeat a key" in caplog.text
    payloads = stored_keys(wh, "raw.robofy__inbox_sessions", "session_id", "_payload->>'version'")
    assert payloads == [("s1", "3"), ("s2", None)]


def test_all_none_columns_keep_their_declared_types(wh: Warehouse) -> None:
    rows = [{**message_row("a", "s1", n, "2026-10-01"), "sent_at": None} for n in range(3)]
    table = get_raw_table(MESSAGES)

    batch = build_batch(table, rows)

    assert batch.schema.field("sent_at").type == pa.timestamp("us")
    assert batch.schema.field("ordinal").type == pa.int32()
    assert load(wh, MESSAGES, rows, Slice()) == LoadCounts(inserted=3)
    assert build_batch(table, []).num_rows == 0


def test_dataframe_and_arrow_input_match_dicts(wh: Warehouse, tmp_path: Any) -> None:
    rows = [message_row("a", "s1", n, "2026-10-01") for n in range(3)]
    load(wh, MESSAGES, rows, Slice(), "run-1")

    frame = pd.DataFrame(rows)
    assert load(wh, MESSAGES, frame, Slice(), "run-2") == LoadCounts(unchanged=3)
    arrow = pa.Table.from_pylist(
        [
            {**r, "_payload": json.dumps(r["_payload"], sort_keys=True, separators=(",", ":"))}
            for r in rows
        ]
    )
    assert load(wh, MESSAGES, arrow, Slice(), "run-3") == LoadCounts(unchanged=3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"project_id": None}, "NOT NULL column 'project_id'", id="null-not-null"),
        pytest.param({"_slice": None}, "NOT NULL column '_slice'", id="null-slice"),
        pytest.param({"ordinal": "first"}, "ordinal", id="wrong-type"),
        pytest.param({"extra": 1}, "unexpected \\['extra'\\]", id="extra-column"),
    ],
)
def test_bad_rows_raise_a_clear_error(wh: Warehouse, change: dict[str, Any], message: str) -> None:
    with pytest.raises(WarehouseError, match=message):
        load(wh, MESSAGES, [{**message_row("a", "s1", 0, "2026-10-01"), **change}], Slice())


def test_unknown_table_or_column_raises(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="unknown raw table"):
        load(wh, "robofy__nope", [], Slice())
    with pytest.raises(WarehouseError, match="unknown column 'nope'"):
        load(wh, SESSIONS, [], Slice(within={"nope": [1]}))


@pytest.mark.parametrize(
    "payload",
    [
        {"b": 1, "a": [1, 2.5, None, True, False]},
        {"text": 'héllo \n "quoted" \u2603 \U0001f600', "nested": {"z": 1, "y": {}}},
        {"when": datetime(2026, 10, 1, 9, 30), "day": date(2026, 10, 1), "big": 10**20},
        {"float": 1e16, "neg": -0.0, "small": 1e-7},
        [],
        "plain",
    ],
)
def test_payload_encoding_matches_json_dumps(payload: Any) -> None:
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    assert encode_payload(payload) == expected


def test_merge_snapshot_soft_deletes_and_revives(wh: Warehouse) -> None:
    def merge(rows: list[dict[str, Any]], run_id: str) -> LoadCounts:
        with wh.transaction(run_id=run_id) as tx:
            return tx.merge_snapshot(CHATBOTS, rows)

    def state() -> list[tuple[Any, ...]]:
        return stored_keys(
            wh, "raw.robofy__chatbots", "chatbot_id", "_is_deleted", "_deleted_at", "_run_id"
        )

    assert merge([chatbot_row("a"), chatbot_row("b")], "r1") == LoadCounts(inserted=2)
    assert merge([chatbot_row("a")], "r2") == LoadCounts(deleted=1, unchanged=1)
    deleted = state()
    assert deleted[1][:2] == ("b", True)
    assert deleted[1][2] is not None

    assert merge([chatbot_row("a")], "r3") == LoadCounts(unchanged=1)
    assert state() == deleted  # the deletion time stays the original one

    assert merge([chatbot_row("a"), chatbot_row("b")], "r4") == LoadCounts(inserted=1, unchanged=1)
    assert state() == [("a", False, None, "r1"), ("b", False, None, "r4")]


def test_merge_snapshot_twice_changes_nothing(wh: Warehouse) -> None:
    rows = [chatbot_row("a"), chatbot_row("b", name="Bot B")]
    with wh.transaction(run_id="r1") as tx:
        tx.merge_snapshot(CHATBOTS, rows)
    before = table_rows(wh, "raw.robofy__chatbots")

    with wh.transaction(run_id="r2") as tx:
        assert tx.merge_snapshot(CHATBOTS, rows) == LoadCounts(unchanged=2)
        assert tx.merge_snapshot(CHATBOTS, [rows[0], chatbot_row("b", name="B2")]) == LoadCounts(
            updated=1, unchanged=1
        )
        assert tx.merge_snapshot(CHATBOTS, rows) == LoadCounts(updated=1, unchanged=1)

    after = table_rows(wh, "raw.robofy__chatbots")
    assert [r[:4] for r in after] == [r[:4] for r in before]


def test_merge_snapshot_only_deletes_within_its_scope(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.merge_snapshot(CHATBOTS, [chatbot_row("a", 1), chatbot_row("b", 2)])
        counts = tx.merge_snapshot(CHATBOTS, [], within={"project_id": [1]})
        with pytest.raises(WarehouseError, match="outside the slice"):
            tx.merge_snapshot(CHATBOTS, [chatbot_row("c", 2)], within={"project_id": [1]})

    assert counts == LoadCounts(deleted=1)
    assert stored_keys(wh, "raw.robofy__chatbots", "chatbot_id", "_is_deleted") == [
        ("a", True),
        ("b", False),
    ]


def test_merge_snapshot_updates_a_key_that_moved_scope(wh: Warehouse) -> None:
    with wh.transaction(run_id="r1") as tx:
        tx.merge_snapshot(CHATBOTS, [chatbot_row("a", 2)], within={"project_id": [2]})
        counts = tx.merge_snapshot(CHATBOTS, [chatbot_row("a", 1)], within={"project_id": [1]})

    assert counts == LoadCounts(updated=1)
    assert stored_keys(wh, "raw.robofy__chatbots", "chatbot_id", "project_id") == [("a", 1)]


def test_merge_snapshot_rejects_partitioned_tables(wh: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="not a snapshot table"), wh.transaction("r") as tx:
        tx.merge_snapshot(SESSIONS, [])


def test_a_load_of_200k_rows_is_correct(wh: Warehouse) -> None:
    rows = [message_row(f"c{i % 7}", f"s{i // 10}", i % 10, "2026-10-01") for i in range(200_000)]
    window = Slice(day_from="2026-10-01", day_to="2026-10-02")

    assert load(wh, MESSAGES, rows, window, "r1") == LoadCounts(inserted=200_000)
    changed = [
        {**r, "_payload": {**r["_payload"], "v": 2}} if i % 4 == 0 else r
        for i, r in enumerate(rows[:150_000])
    ]
    assert load(wh, MESSAGES, changed, window, "r2") == LoadCounts(
        updated=37_500, deleted=50_000, unchanged=112_500
    )

    with wh.connect() as conn:
        summary = conn.execute(
            "select count(*), count(distinct (chatbot_id, session_id, message_id)),"
            " count(*) filter (where _run_id = 'r2'), count(*) filter (where _payload->>'v' = '2')"
            " from raw.robofy__chat_messages"
        ).fetchall()
    assert summary == [(150_000, 150_000, 37_500, 37_500)]
