"""PostgreSQL loads behave exactly as DuckDB's: same rows, same counts, same lineage.

Every scenario runs the same sequence of loads on a DuckDB file (``warehouse.load``) and on a
fresh PostgreSQL database (``warehouse.pg.load``, COPY), with the same ``loaded_at`` and
``run_id``, and compares every stored row (payload text byte for byte, lineage included) and
every ``LoadCounts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import LoadCounts, Slice, Warehouse, WarehouseError
from robofy_etl.warehouse import load as duck_load
from robofy_etl.warehouse.pg import load as pg_load
from robofy_etl.warehouse.tables import RAW_TABLES
from tests.warehouse.conftest import chatbot_row, message_row, session_row

T0 = datetime(2026, 3, 10, 12, 0, 0)


class Twins:
    """The same loads on DuckDB and PostgreSQL; each call returns both results."""

    def __init__(self, wh: Warehouse, engine: sa.Engine) -> None:
        self.wh, self.engine, self.step = wh, engine, 0

    def _run(self, name: str, *args: Any) -> tuple[Any, Any]:
        self.step += 1
        lineage = {"loaded_at": T0 + timedelta(minutes=self.step), "run_id": f"run-{self.step}"}
        with self.wh.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                duck = getattr(duck_load, name)(conn, *args, **lineage)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        with self.engine.begin() as conn:
            pg = getattr(pg_load, name)(conn, *args, **lineage)
        return duck, pg

    def on_duckdb(self, name: str, *args: Any) -> None:
        """Run one load on DuckDB only, and roll it back."""
        with self.wh.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                getattr(duck_load, name)(conn, *args, loaded_at=T0, run_id="bad")
            finally:
                conn.execute("ROLLBACK")

    def on_pg(self, name: str, *args: Any) -> None:
        """Run one load on PostgreSQL only (committed if it succeeds)."""
        with self.engine.begin() as conn:
            getattr(pg_load, name)(conn, *args, loaded_at=T0, run_id="bad")

    def replace(self, table: str, rows: Any, slc: Slice) -> LoadCounts:
        duck, pg = self._run("replace_slice", table, rows, slc)
        assert pg == duck
        return duck  # type: ignore[no-any-return]

    def merge(self, table: str, rows: Any, within: Any = None) -> LoadCounts:
        duck, pg = self._run("merge_snapshot", table, rows, within)
        assert pg == duck
        return duck  # type: ignore[no-any-return]

    def count(self, table: str, slc: Slice) -> int:
        with self.wh.connect() as conn:
            duck = duck_load.count_slice(conn, table, slc)
        with self.engine.connect() as conn:
            pg = pg_load.count_slice(conn, table, slc)
        assert pg == duck
        return duck

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of ``raw.<table>``, equal on both back ends (payload as text)."""
        columns = [name for name, _ in RAW_TABLES[table].all_columns]
        select = ", ".join(f"{c}::varchar" if c == "_payload" else c for c in columns)
        sql = f"select {select} from raw.{table} order by {', '.join(columns)}"
        with self.wh.connect() as conn:
            duck = [tuple(r) for r in conn.execute(sql).fetchall()]
        with self.engine.connect() as conn:
            pg = [tuple(r) for r in conn.exec_driver_sql(sql).all()]
        assert pg == duck
        return duck

    def removed(self) -> list[tuple[Any, ...]]:
        """``meta.removed_rows``, equal on both (``row_data`` parsed: PostgreSQL writes
        timestamps in JSON as ISO 8601 with a ``T``, DuckDB with a space)."""
        sql = (
            "select stream, key, slice, reason, row_data::varchar, run_id, removed_at"
            " from meta.removed_rows order by stream, key, removed_at"
        )

        def norm(rows: list[Any]) -> list[tuple[Any, ...]]:
            out = []
            for *head, data, run_id, at in rows:
                parsed = {
                    k: v.replace("T", " ")
                    if k
                    in (
                        "_loaded_at",
                        "started_at",
                        "sent_at",
                        "last_message_at",
                        "created_at",
                        "updated_at",
                        "_deleted_at",
                    )
                    and v
                    else v
                    for k, v in json.loads(data).items()
                }
                out.append((*head, parsed, run_id, at))
            return out

        with self.wh.connect() as conn:
            duck = norm(conn.execute(sql).fetchall())
        with self.engine.connect() as conn:
            pg = norm(list(conn.exec_driver_sql(sql).all()))
        assert pg == duck
        return duck


@pytest.fixture
def twins(tmp_path: Path, pg_engine: sa.Engine) -> Twins:
    wh = Warehouse(tmp_path / "wh.duckdb", lock_timeout_s=10.0)
    wh.initialize()
    return Twins(wh, pg_engine)


WINDOW = Slice(day_from="2026-03-01", day_to="2026-03-03")


def test_replace_counts_lineage_and_archive_match_duckdb(twins: Twins) -> None:
    first = [
        session_row("c1", "a", "2026-03-01"),
        session_row("c1", "b", "2026-03-01", note='quote " comma , newline \n é ✓'),
        session_row("c2", "c", "2026-03-02", empty=""),
    ]
    assert twins.replace("robofy__inbox_sessions", first, WINDOW) == LoadCounts(inserted=3)
    again = twins.replace("robofy__inbox_sessions", first, WINDOW)
    assert again == LoadCounts(unchanged=3)
    before = twins.rows("robofy__inbox_sessions")
    second = [
        first[0],
        session_row("c1", "b", "2026-03-01", note="changed"),
        session_row("c2", "d", "2026-03-02"),
    ]
    counts = twins.replace("robofy__inbox_sessions", second, WINDOW)
    assert counts == LoadCounts(inserted=1, updated=1, deleted=1, unchanged=1)
    after = twins.rows("robofy__inbox_sessions")
    kept = [r for r in after if r[1] == "a"]
    assert kept == [r for r in before if r[1] == "a"]  # unchanged row: lineage kept
    assert {r[1]: r[-2] for r in after} == {"a": "run-1", "b": "run-3", "d": "run-3"}
    removed = twins.removed()
    assert [(r[1], r[3]) for r in removed] == [("c2/c", "not in the rows that replaced its slice")]


def test_slices_by_within_keys_and_days_leave_the_rest_untouched(twins: Twins) -> None:
    rows = [
        message_row(bot, s, n, day)
        for bot, s, day in [
            ("c1", "s1", "2026-03-01"),
            ("c2", "s2", "2026-03-01"),
            ("c1", "s3", "2026-03-02"),
            ("c1", "s4", "2026-03-05"),
        ]
        for n in range(3)
    ]
    twins.replace("robofy__chat_messages", rows, Slice())
    only_c1 = Slice(day_from="2026-03-01", day_to="2026-03-03", within={"chatbot_id": ["c1"]})
    new = [message_row("c1", "s1", n, "2026-03-01", text="edited") for n in range(2)]
    assert twins.replace("robofy__chat_messages", new, only_c1) == LoadCounts(updated=2, deleted=4)
    transcript = Slice(keys=(("chatbot_id", "session_id"), [("c2", "s2"), ("c9", "none")]))
    assert twins.replace(
        "robofy__chat_messages", [message_row("c2", "s2", 7, "2026-03-01")], transcript
    ) == LoadCounts(inserted=1, deleted=3)
    nothing = Slice(within={"chatbot_id": []})
    assert twins.count("robofy__chat_messages", nothing) == 0
    assert twins.replace("robofy__chat_messages", [], nothing) == LoadCounts()
    assert twins.count("robofy__chat_messages", Slice(day_from="2026-03-05")) == 3
    assert twins.count("robofy__chat_messages", transcript) == 1
    assert len(twins.rows("robofy__chat_messages")) == 2 + 1 + 3
    assert len(twins.removed()) == 4 + 3


def test_duplicates_nulls_empty_strings_and_arrow_input(twins: Twins) -> None:
    leads = [
        {
            "lead_id": "l1",
            "project_id": 1,
            "chatbot_id": "c1",
            "session_id": None,
            "created_at": None,
            "_payload": {"v": 1},
            "_slice": "2026-03-01",
        },
        {
            "lead_id": "l2",
            "project_id": 1,
            "chatbot_id": "c1",
            "session_id": "",
            "created_at": datetime(2026, 3, 1, 1, 2, 3, 456789),
            "_payload": {"v": 2},
            "_slice": "2026-03-01",
        },
        {
            "lead_id": "l1",
            "project_id": 2,
            "chatbot_id": "c1",
            "session_id": "x",
            "created_at": None,
            "_payload": {"v": 3},
            "_slice": "2026-03-01",
        },
    ]
    day = Slice(day_from="2026-03-01", day_to="2026-03-02")
    assert twins.replace("robofy__leads", leads, day) == LoadCounts(inserted=2)
    rows = twins.rows("robofy__leads")
    assert [(r[0], r[3]) for r in rows] == [("l1", "x"), ("l2", "")]  # last l1 won; '' kept
    table = pa.Table.from_pylist(
        [{**r, "_payload": json.dumps(r["_payload"], separators=(",", ":"))} for r in leads[1:]]
    )
    assert twins.replace("robofy__leads", table, day) == LoadCounts(unchanged=2)


def test_merge_snapshot_soft_deletes_and_revives_as_on_duckdb(twins: Twins) -> None:
    bots = [chatbot_row("a"), chatbot_row("b"), chatbot_row("c", project_id=2)]
    assert twins.merge("robofy__chatbots", bots) == LoadCounts(inserted=3)
    assert twins.merge("robofy__chatbots", bots[:1], {"project_id": [1]}) == LoadCounts(
        deleted=1, unchanged=1
    )
    assert twins.merge("robofy__chatbots", bots[:2], {"project_id": [1]}) == LoadCounts(
        inserted=1, unchanged=1
    )
    assert twins.merge("robofy__chatbots", [chatbot_row("a", name="x")]) == LoadCounts(
        updated=1, deleted=2
    )
    assert twins.count("robofy__chatbots", Slice()) == 1
    twins.rows("robofy__chatbots")


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "replace_slice",
            ("robofy__inbox_sessions", [session_row("c1", "z", "2026-04-01")], WINDOW),
            "1 incoming row",
        ),
        (
            "replace_slice",
            ("robofy__inbox_sessions", [], Slice(within={"nope": [1]})),
            "cannot slice on unknown column 'nope'",
        ),
        ("merge_snapshot", ("robofy__leads", []), "is not a snapshot table"),
        (
            "replace_slice",
            ("robofy__leads", [{"lead_id": "l"}], Slice()),
            "rows must have exactly the columns",
        ),
    ],
)
def test_bad_loads_fail_alike_and_change_nothing(
    twins: Twins, name: str, args: tuple[Any, ...], message: str
) -> None:
    twins.replace("robofy__inbox_sessions", [session_row("c1", "a", "2026-03-01")], WINDOW)
    before = twins.rows("robofy__inbox_sessions")
    errors = [
        _error(lambda: twins.on_duckdb(name, *args)),
        _error(lambda: twins.on_pg(name, *args)),
    ]
    assert errors[0] == errors[1]
    assert message in errors[0]
    assert twins.rows("robofy__inbox_sessions") == before


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(WarehouseError) as caught:
        call()
    return str(caught.value)
