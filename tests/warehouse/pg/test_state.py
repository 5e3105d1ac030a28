"""The meta records on PostgreSQL are DuckDB's: the same calls leave the same rows.

Each test makes the same calls to ``warehouse.state`` / ``warehouse.ledger`` on DuckDB and to
``warehouse.pg.state`` on PostgreSQL and compares the results and every row of the meta tables
they write (JSON as text, byte for byte).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from robofy_etl.warehouse import LoadCounts, Slice, Warehouse, ledger, state
from robofy_etl.warehouse import load as duck_load
from robofy_etl.warehouse.pg import load as pg_load
from robofy_etl.warehouse.pg import state as pg_state
from tests.warehouse.conftest import session_row

T0 = datetime(2026, 3, 10, 12, 0, 0)
_DUCK = {**vars(state), **vars(ledger)}


class Twins:
    def __init__(self, wh: Warehouse, engine: sa.Engine) -> None:
        self.wh, self.engine = wh, engine

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``name`` on both back ends, in a transaction each; their (equal) result."""
        with self.wh.connect() as conn:
            conn.execute("BEGIN TRANSACTION")
            duck = _DUCK[name](conn, *args, **kwargs)
            conn.execute("COMMIT")
        with self.engine.begin() as conn:
            pg = getattr(pg_state, name)(conn, *args, **kwargs)
        assert pg == duck, name
        return duck

    def table(self, relation: str, json_columns: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        with self.wh.connect() as conn:
            columns = [r[0] for r in conn.execute(f"describe {relation}").fetchall()]
            select = ", ".join(f"{c}::varchar" if c in json_columns else c for c in columns)
            sql = f"select {select} from {relation} order by {', '.join(columns)}"
            duck = [tuple(r) for r in conn.execute(sql).fetchall()]
        with self.engine.connect() as conn:
            pg = [tuple(r) for r in conn.exec_driver_sql(sql).all()]
        assert pg == duck, relation
        return duck


@pytest.fixture
def twins(tmp_path: Path, pg_engine: sa.Engine) -> Twins:
    wh = Warehouse(tmp_path / "wh.duckdb")
    wh.initialize()
    return Twins(wh, pg_engine)


def test_state_drift_quarantine_and_audit_match_duckdb(twins: Twins) -> None:
    value = {"window": "2026-03-01..2026-03-02", "pages": 2, "é": None}
    twins.call("set_state", "sessions", "bot-1", value, run_id="r1", now=T0)
    twins.call("set_state", "sessions", "bot-1", {**value, "pages": 3}, run_id="r2", now=T0)
    for run in ("r1", "r2"):
        assert (
            twins.call(
                "record_drift",
                "robofy__leads",
                added={"new_field": {"a": 1}, "other": "x" * 500},
                missing=["gone"],
                run_id=run,
                now=T0 + timedelta(hours=int(run[1])),
            )
            == 3
        )
    items = [("no key", {"id": None}), ("bad time", {"t": "yesterday", "n": 1.5})]
    assert (
        twins.call(
            "quarantine", "robofy__leads", items, slice_label="2026-03-01", run_id="r1", now=T0
        )
        == 2
    )
    twins.call(
        "audit",
        "robofy__leads",
        slice_label="2026-03-01",
        counts=LoadCounts(1, 2, 3, 4),
        api_requests=None,
        started_at=T0,
        run_id="r1",
        finished_at=T0 + timedelta(seconds=3),
    )
    [state] = twins.table("meta.sync_state", ("value",))  # the same in both, upserted
    assert state[:2] == ("sessions", "bot-1")
    assert (json.loads(state[2]), state[3]) == ({**value, "pages": 3}, "r2")
    drift = twins.table("meta.schema_drift")
    assert {(r[1], r[3]) for r in drift} == {("new_field", 2), ("other", 2), ("gone", 2)}
    twins.table("meta.quarantine", ("payload",))
    twins.table("meta.load_audit")


def test_ledger_matches_duckdb(twins: Twins) -> None:
    items = [("bot-1", "s1", "2026-03-01", "cut"), ("bot-1", "s2", None, "404")]
    twins.call("mark_outstanding", "robofy__chat_messages", items, run_id="r1", now=T0)
    twins.call("mark_outstanding", "robofy__chat_messages", items[:1], run_id="r2", now=T0)
    assert [o.attempts for o in twins.call("outstanding")] == [2, 1]
    twins.call("clear_outstanding", "robofy__chat_messages", [("bot-1", "s1"), ("x", "y")])
    assert [o.item for o in twins.call("outstanding", "robofy__chat_messages")] == ["s2"]
    assert twins.call("outstanding", "other") == []
    missed = [("l1", "bot-1", "2026-03-01"), ("l2", None, None)]
    assert twins.call("count_misses", "robofy__leads", missed, run_id="r1", now=T0) == {
        "l1": 1,
        "l2": 1,
    }
    assert twins.call("count_misses", "robofy__leads", missed[:1], run_id="r2", now=T0) == {"l1": 2}
    twins.call("clear_missing", "robofy__leads", ["l2"])
    twins.table("meta.outstanding")
    twins.table("meta.missing")


def test_window_reads_match_duckdb(twins: Twins) -> None:
    rows = [
        session_row("bot-1", "s1", "2026-03-01"),
        session_row("bot-2", "s2", "2026-03-02", status="closed"),
        session_row("bot-1", "s3", "2026-03-04"),
    ]
    with twins.wh.connect() as conn:
        duck_load.replace_slice(
            conn, "robofy__inbox_sessions", rows, Slice(), loaded_at=T0, run_id="r"
        )
    with twins.engine.begin() as conn:
        pg_load.replace_slice(
            conn, "robofy__inbox_sessions", rows, Slice(), loaded_at=T0, run_id="r"
        )
    keys = twins.call(
        "stored_keys", "robofy__inbox_sessions", "session_id", ["bot-1"], "2026-03-01", "2026-03-04"
    )
    assert keys == [("bot-1", "s1", "2026-03-01")]
    for chatbots in (None, ["bot-2"], []):
        duck = twins.wh.session_watermarks(chatbots, "2026-03-01", "2026-03-05")
        with twins.engine.connect() as conn:
            pg = pg_state.session_watermarks(conn, chatbots, "2026-03-01", "2026-03-05")
        assert pg == duck
    assert len(duck) == 0
    assert len(twins.wh.session_watermarks(None, "2026-03-01", "2026-03-05")) == 3
