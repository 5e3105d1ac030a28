"""Shared fixtures for warehouse tests: a real DuckDB file under tmp_path and row builders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from robofy_etl.warehouse import Warehouse

Row = dict[str, Any]


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "data" / "robofy.duckdb", lock_timeout_s=10.0)
    warehouse.initialize()
    return warehouse


def session_row(chatbot_id: str, session_id: str, day: str, **payload: Any) -> Row:
    started = datetime.fromisoformat(day) + timedelta(hours=9)
    return {
        "chatbot_id": chatbot_id,
        "session_id": session_id,
        "project_id": 1,
        "started_at": started,
        "last_message_at": started + timedelta(minutes=5),
        "_payload": {"session_id": session_id, "last_message_time": f"{day}T09:05:00Z", **payload},
        "_slice": day,
    }


def message_row(chatbot_id: str, session_id: str, n: int, day: str, **payload: Any) -> Row:
    return {
        "chatbot_id": chatbot_id,
        "session_id": session_id,
        "message_id": f"{session_id}-m{n}",
        "project_id": 1,
        "ordinal": n,
        "sent_at": datetime.fromisoformat(day) + timedelta(minutes=n),
        "_payload": {"id": f"{session_id}-m{n}", "text": f"hello {n}", **payload},
        "_slice": day,
    }


def chatbot_row(chatbot_id: str, project_id: int = 1, **payload: Any) -> Row:
    return {
        "chatbot_id": chatbot_id,
        "project_id": project_id,
        "created_at": datetime(2026, 1, 1),
        "updated_at": None,
        "_payload": {"id": chatbot_id, **payload},
        "_slice": "snapshot",
    }


def table_rows(wh: Warehouse, relation: str) -> list[tuple[Any, ...]]:
    """Every row of ``relation``, fully ordered, so two snapshots compare byte for byte."""
    with wh.connect() as conn:
        return conn.execute(f"select * from {relation} order by all").fetchall()


@pytest.fixture
def hold_lock() -> Iterator[Callable[[Path, float], subprocess.Popen[str]]]:
    """Start a process that opens a DuckDB file read-write and holds it for some seconds."""
    started: list[subprocess.Popen[str]] = []

    def start(path: Path, seconds: float) -> subprocess.Popen[str]:
        script = textwrap.dedent(
            f"""
            import time, duckdb
            conn = duckdb.connect({str(path)!r})
            print("ready", flush=True)
            time.sleep({seconds})
            conn.close()
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
