"""Time PostgreSQL model builds: full, nothing changed, and one conversation changed.

Run: ``.venv/bin/python benchmarks/bench_pg_models.py [--scale medium]``. Starts a throwaway
PostgreSQL cluster (tests/pg.py: durability off, as in the tests) and the simulator, syncs 30
days into PostgreSQL (``run_sync``, which builds the models once), then times
``PgWarehouse.build_models``: three full rebuilds (``full_refresh``), one build after nothing
changed, and three builds each after one session's messages were reloaded with a change (the
incremental case: only that session's keys are rebuilt).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robofy_etl.cli import run_sync  # noqa: E402
from robofy_etl.settings import Settings  # noqa: E402
from robofy_etl.simulator.server import SimulatorConfig, serve  # noqa: E402
from robofy_etl.warehouse.load import Slice  # noqa: E402
from robofy_etl.warehouse.pg.warehouse import PgWarehouse  # noqa: E402
from robofy_etl.warehouse.tables import RAW_TABLES  # noqa: E402
from tests.pg import pg_cluster  # noqa: E402

END = datetime(2026, 10, 15, 6, 0)
MESSAGES = "robofy__chat_messages"


def _timed(wh: PgWarehouse, label: str, **options: Any) -> None:
    started = time.perf_counter()
    results = wh.build_models(**options)
    elapsed = time.perf_counter() - started
    modes: dict[str, int] = {}
    for result in results:
        modes[result.mode] = modes.get(result.mode, 0) + 1
    print(f"{label:<26} {elapsed:6.2f} s  {modes}")


def _edit_one_session(wh: PgWarehouse, run: int) -> None:
    columns = [*RAW_TABLES[MESSAGES].column_names, "_payload", "_slice"]
    with wh.transaction(run_id=f"edit-{run}") as tx:
        chatbot, session = tx.conn.exec_driver_sql(
            "select chatbot_id, session_id from raw.robofy__inbox_sessions"
            " order by chatbot_id, session_id limit 1"
        ).one()
        rows = [
            dict(zip(columns, row, strict=True))
            for row in tx.conn.exec_driver_sql(
                f"select {', '.join(columns)} from raw.{MESSAGES}"
                " where chatbot_id = %(c)s and session_id = %(s)s",
                {"c": chatbot, "s": session},
            ).all()
        ]
        for row in rows:
            row["_payload"] = {**row["_payload"], "bench_edit": run}
        tx.replace(MESSAGES, rows, Slice(within={"chatbot_id": [chatbot], "session_id": [session]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", help="simulator scale (tiny/small/medium)")
    args = parser.parse_args()
    with (
        pg_cluster() as cluster,
        serve(SimulatorConfig(scale=args.scale, seed=7, end=END)) as sim,
        tempfile.TemporaryDirectory() as home,
    ):
        url = cluster.create_database("bench")
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ.update(
            {
                "ROBOFY_API_KEY": sim.api_key,
                "ROBOFY_BASE_URL": sim.base_url,
                "DAGSTER_HOME": home,
                "ROBOFY_START_DATE": "2026-09-01",
                "ROBOFY_WAREHOUSE_URL": url.render_as_string(hide_password=False),
            }
        )
        started = time.perf_counter()
        outcome = run_sync(Settings.from_env(), date(2026, 9, 15), date(2026, 10, 15))
        print(f"sync (exit {outcome.exit_code}) {time.perf_counter() - started:.1f} s")
        wh = PgWarehouse(url)
        try:
            with wh.connect() as conn:
                for table in (f"raw.{MESSAGES}", "marts.sessions", "marts.messages"):
                    count = conn.exec_driver_sql(f"select count(*) from {table}").scalar_one()
                    print(f"{table}: {count:,} rows")
            for _ in range(3):
                _timed(wh, "full_refresh", full_refresh=True)
            _timed(wh, "nothing changed")
            for run in range(3):
                _edit_one_session(wh, run)
                _timed(wh, "one session changed")
        finally:
            wh.dispose()


if __name__ == "__main__":
    main()
