"""Full builds in chunks: the same marts as one statement, and memory bounded by the chunk.

A full build (the first one, a changed model, `robofy-etl rebuild`) over years of history would
need memory in proportion to the history; it reads its inputs in chunks of the model's key space
instead. Here the chunks are made tiny, so the hand-written account is built in many of them,
and a synthetic history several times larger than a small memory limit builds under that limit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from robofy_etl.warehouse import Warehouse, incremental, models


def _marts(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every staging and mart table's rows, in a stable order."""
    names = conn.execute(
        "select schema_name || '.' || table_name from duckdb_tables()"
        " where schema_name in ('marts', 'staging') order by 1"
    ).fetchall()
    return {n: conn.execute(f"select * from {n} order by all").fetchall() for (n,) in names}


def _build(path: Path, chunk_rows: int | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    if chunk_rows is not None:
        monkeypatch.setattr(incremental, "CHUNK_ROWS", chunk_rows)
    with duckdb.connect(str(path)) as conn:
        conn.execute("begin")
        results = models.build(conn, full_refresh=True)
        conn.execute("commit")
        return {"results": results, "rows": _marts(conn)}


def test_a_full_build_in_chunks_equals_one_statement(
    hand_seeded_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, chunked = tmp_path / "whole.duckdb", tmp_path / "chunked.duckdb"
    shutil.copyfile(hand_seeded_warehouse, whole)
    shutil.copyfile(hand_seeded_warehouse, chunked)
    expected = _build(whole, None, monkeypatch)
    assert not any(r.chunks for r in expected["results"])
    built = _build(chunked, 3, monkeypatch)
    chunks = {r.name: r.chunks for r in built["results"]}
    assert chunks["staging.stg_robofy__chat_messages"] > 3
    assert chunks["marts.messages"] > 3
    expected, got = expected["rows"], built["rows"]
    assert got.keys() == expected.keys()
    for name, rows in expected.items():
        assert got[name] == rows, name


MESSAGES = 200_000
LEADS = 100_000


def _seed_history(wh: Warehouse) -> None:
    """Twenty thousand conversations of ten messages (about 50 MB of raw rows), and a hundred
    thousand leads of five form fields, one of them a repeated name."""
    with wh.connect() as conn:
        conn.execute(
            f"""insert into raw.robofy__leads
            select 'lead' || i, 1, 'bot' || (i % 20), null,
                timestamp '2026-01-01' + to_seconds(i::bigint),
                json_object('id', 'lead' || i, 'source', 'chatbot', 'lead_data', json_array(
                    json_object('field_name', 'email', 'field_type', 'email',
                        'field_value', 'visitor' || i || '@example.com'),
                    json_object('field_name', 'name', 'field_type', 'text',
                        'field_value', 'Visitor ' || i),
                    json_object('field_name', 'phone', 'field_type', 'tel',
                        'field_value', '+1555' || i),
                    json_object('field_name', 'message', 'field_type', 'textarea',
                        'field_value', repeat('hello there ', 8)),
                    json_object('field_name', ' email', 'field_type', 'email',
                        'field_value', 'second' || i))),
                now()::timestamp, 'r', strftime(date '2026-01-01' + (i // 1000)::int, '%Y-%m-%d')
            from range({LEADS}) t(i)"""
        )
        conn.execute(
            f"""insert into raw.robofy__inbox_sessions
            select 'bot' || (s % 20), 'sess' || s, 1,
                timestamp '2026-01-01' + to_minutes(s::bigint),
                timestamp '2026-01-01' + to_minutes(s::bigint + 5),
                json_object('session_id', 'sess' || s, 'status', 'closed', 'platform', 'web'),
                now()::timestamp, 'r', strftime(date '2026-01-01' + (s // 2000)::int, '%Y-%m-%d')
            from range({MESSAGES // 10}) t(s)"""
        )
        conn.execute(
            f"""insert into raw.robofy__chat_messages
            select 'bot' || ((i // 10) % 20), 'sess' || (i // 10), 'm' || i, 1, (i % 10)::int,
                timestamp '2026-01-01' + to_seconds(i::bigint),
                json_object('id', 'm' || i, 'role', 'user', 'parts', json_array(json_object(
                    'type', 'text', 'text', repeat('hello world ', 30) || i))),
                now()::timestamp, 'r',
                strftime(date '2026-01-01' + ((i // 10) // 2000)::int, '%Y-%m-%d')
            from range({MESSAGES}) t(i)"""
        )


@pytest.mark.slow
def test_a_history_larger_than_the_memory_limit_builds_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 MB of raw messages and 100k leads (~110 MB) under a 48MB limit (one statement runs out of
    memory there, and so did lead_fields' lateral unnest of every lead's form fields)."""
    path = tmp_path / "big.duckdb"
    roomy = Warehouse(path, memory_limit="1GB")
    roomy.initialize()
    _seed_history(roomy)
    monkeypatch.setattr(incremental, "CHUNK_ROWS", 50_000)
    with Warehouse(path, memory_limit="48MB").transaction(run_id="rebuild") as tx:
        results = {r.name: r for r in models.build(tx.conn, full_refresh=True)}
    assert results["staging.stg_robofy__chat_messages"].chunks >= 4
    assert results["marts.messages"].rows == MESSAGES
    assert results["marts.sessions"].rows == MESSAGES // 10
    assert results["marts.leads"].rows == LEADS
    # five fields a lead, the second 'email' dropped (its name repeats after trimming)
    assert results["marts.lead_fields"].rows == 4 * LEADS
