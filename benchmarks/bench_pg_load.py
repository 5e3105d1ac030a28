"""Measure PgTransaction.replace() throughput (rows/s) beside DuckDB's, on message-like rows.

Run: ``.venv/bin/python benchmarks/bench_pg_load.py [--rows 100000]``. Starts a throwaway
PostgreSQL cluster (tests/pg.py: durability off, as in the tests), then loads the rows of
``bench_load.message_rows`` (30 days, one slice per run) three ways on each back end: a first
load (all inserts), the same rows again (all unchanged) and every payload changed (all
updates), each a whole transaction with COMMIT. The rows are passed as an Arrow table whose
``_payload`` is already JSON text, so the numbers are the database side (the Python side,
serializing payloads, is the same for both: see bench_load.py). ``copy`` times the COPY alone
(pyarrow CSV into a temp table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import message_rows  # noqa: E402
from robofy_etl.warehouse import Slice, Warehouse  # noqa: E402
from robofy_etl.warehouse.load import build_batch, get_raw_table  # noqa: E402
from robofy_etl.warehouse.pg.load import copy_arrow  # noqa: E402
from robofy_etl.warehouse.pg.warehouse import PgWarehouse  # noqa: E402
from tests.pg import pg_cluster  # noqa: E402

WINDOW = Slice(day_from=date(2026, 10, 1), day_to=date(2026, 11, 1))


def _line(n: int, backend: str, label: str, elapsed: float, what: object) -> None:
    rate = f"{n / elapsed:>10,.0f} rows/s"
    print(f"{n:>9,} rows  {backend:<8} {label:<10} {elapsed:6.2f} s {rate}  {what}")


def bench(n: int, pg_url: sa.URL, directory: Path) -> None:
    table = get_raw_table("robofy__chat_messages")
    first = build_batch(table, message_rows(n)).drop_columns(["_ord"])
    changed = build_batch(table, message_rows(n, version=1)).drop_columns(["_ord"])
    duck = Warehouse(directory / f"bench_{n}.duckdb")
    pg = PgWarehouse(pg_url)
    try:
        for backend, wh in (("duckdb", duck), ("postgres", pg)):
            wh.initialize()
            for label, batch in (("insert", first), ("unchanged", first), ("update", changed)):
                started = time.perf_counter()
                with wh.transaction(run_id=f"bench-{label}") as tx:  # type: ignore[attr-defined]
                    counts = tx.replace("robofy__chat_messages", batch, WINDOW)
                _line(n, backend, label, time.perf_counter() - started, counts)
        with pg.connect() as conn, conn.begin():
            conn.exec_driver_sql(
                "create temp table copy_probe (like raw.robofy__chat_messages) on commit drop"
            )
            data = first.append_column("_loaded_at", first.column("sent_at")).append_column(
                "_run_id", first.column("chatbot_id")
            )
            started = time.perf_counter()
            copy_arrow(conn, "copy_probe", data)
            _line(n, "postgres", "copy", time.perf_counter() - started, "COPY alone")
    finally:
        pg.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    with pg_cluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            bench(n, cluster.create_database(f"bench_{n}"), Path(tmp))


if __name__ == "__main__":
    main()
