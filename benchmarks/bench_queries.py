"""Benchmark: dashboard and analyst queries on the published copy of a synced medium dataset.

Syncs the simulator's dataset (no latency) into a temporary warehouse with the real pipeline,
then times each query of docs/queries.md, plus a typical dashboard tile, on the read-only copy
that dashboards use (median of 7 runs, after one warm-up run).

    .venv/bin/python benchmarks/bench_queries.py [--scale medium]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_TILE = """
select s.started_date as day, c.name as chatbot, count(*) as sessions,
       count(*) filter (where s.has_lead) as sessions_with_lead,
       sum(s.message_count) as messages
from marts.sessions s join marts.chatbots c using (chatbot_id)
where s.started_at >= (select max(started_at) from marts.sessions) - interval 30 day
group by all order by day, chatbot
"""


def _time(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, int]:
    rows = len(conn.execute(sql).fetchall())
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium")
    args = parser.parse_args()

    from robofy_etl.cli import run_sync
    from robofy_etl.settings import Settings
    from robofy_etl.simulator import SimulatorConfig, serve

    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(SimulatorConfig(scale=args.scale, end=now)) as sim,
    ):
        os.environ.update(
            {
                "ROBOFY_API_KEY": sim.api_key,
                "ROBOFY_BASE_URL": sim.base_url,
                "ROBOFY_DUCKDB_PATH": str(Path(tmp) / "robofy.duckdb"),
            }
        )
        os.environ.pop("DAGSTER_HOME", None)
        days = int(sim.dataset.summary().get("days", 30))
        outcome = run_sync(Settings.from_env(), now.date() - timedelta(days=days), now.date())
        assert outcome.success, outcome.errors
        text = (ROOT / "docs" / "queries.md").read_text()
        titles = re.findall(r"^### (.+)$", text, re.MULTILINE)
        blocks = re.findall(r"### (.+?)\n.*?```sql\n(.*?)```", text, re.DOTALL)
        with duckdb.connect(outcome.published, read_only=True) as conn:
            sessions, messages = conn.execute(
                "select (select count(*) from marts.sessions),"
                " (select count(*) from marts.messages)"
            ).fetchone() or (0, 0)
            print(f"{args.scale}: {sessions} sessions, {messages} messages ({len(titles)} queries)")
            print("\n| query | rows | median ms |\n|---|---|---|")
            ms, rows = _time(conn, DASHBOARD_TILE)
            tile = "dashboard tile: daily sessions, leads, messages per chatbot (30 days)"
            print(f"| {tile} | {rows} | {ms:.1f} |")
            for title, sql in blocks:
                ms, rows = _time(conn, sql)
                print(f"| {title} | {rows} | {ms:.1f} |")


if __name__ == "__main__":
    main()
