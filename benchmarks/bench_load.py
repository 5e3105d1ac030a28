"""Measure Warehouse.replace() throughput (rows/s) on message-like rows.

Run: ``.venv/bin/python benchmarks/bench_load.py [--rows 100000 1000000]``. Each size is loaded
three ways into a fresh file: a first load (all inserts), the same rows again (all unchanged,
the idempotent re-run), and a re-run with every payload changed (all updates). The time covers
the whole transaction: building the Arrow batch (json.dumps of every payload included),
staging, comparing with the stored slice, deleting and inserting, and the COMMIT. The "batch"
line times the Python part alone, and the "arrow-*" lines the database part alone (the rows
passed as an Arrow table whose _payload is already JSON text).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from robofy_etl.warehouse import Slice, Warehouse
from robofy_etl.warehouse.load import build_batch, get_raw_table

CHATBOTS = 12
MESSAGES_PER_SESSION = 10


def message_rows(n: int, version: int = 0) -> list[dict[str, Any]]:
    """``n`` rows shaped like raw.robofy__chat_messages, spread over 30 days and 12 chatbots."""
    rows: list[dict[str, Any]] = []
    start = datetime(2026, 10, 1)
    for i in range(n):
        session = i // MESSAGES_PER_SESSION
        chatbot = f"cb-{session % CHATBOTS:02d}"
        day = start + timedelta(days=session % 30)
        sent = day + timedelta(seconds=i % 86_000)
        role = "user" if i % 2 == 0 else "assistant"
        rows.append(
            {
                "chatbot_id": chatbot,
                "session_id": f"sess-{session:08d}",
                "message_id": f"msg-{i:010d}",
                "project_id": 1000 + session % 3,
                "ordinal": i % MESSAGES_PER_SESSION,
                "sent_at": sent,
                "_payload": {
                    "id": f"msg-{i:010d}",
                    "session_id": f"sess-{session:08d}",
                    "role": role,
                    "text": f"Hello, I would like to know more about plan {i % 7} (v{version}).",
                    "created_at": sent.isoformat() + "Z",
                    "website_url": "https://example.com/pricing",
                    "tokens": 17 + i % 40,
                    "metadata": {"channel": "web", "lang": "en"},
                },
                "_slice": day.date().isoformat(),
            }
        )
    return rows


def bench(n: int, directory: Path) -> None:
    wh = Warehouse(directory / f"bench_{n}.duckdb")
    wh.initialize()
    window = Slice(day_from=date(2026, 10, 1), day_to=date(2026, 11, 1))
    first = message_rows(n)
    changed = message_rows(n, version=1)
    started = time.perf_counter()
    batch = build_batch(get_raw_table("robofy__chat_messages"), first).drop_columns(["_ord"])
    elapsed = time.perf_counter() - started
    print(
        f"{n:>9,} rows  {'batch':<10}  {elapsed:6.2f} s  {n / elapsed:>11,.0f} rows/s  "
        "(building the Arrow batch, json.dumps included; no database work)"
    )
    # The database side alone: the same rows as an Arrow table with _payload already JSON text.
    arrow_wh = Warehouse(directory / f"bench_{n}_arrow.duckdb")
    arrow_wh.initialize()
    for label in ("arrow-ins", "arrow-same"):
        started = time.perf_counter()
        with arrow_wh.transaction(run_id=f"bench-{label}") as tx:
            counts = tx.replace("robofy__chat_messages", batch, slice=window)
        elapsed = time.perf_counter() - started
        print(
            f"{n:>9,} rows  {label:<10}  {elapsed:6.2f} s  {n / elapsed:>11,.0f} rows/s  {counts}"
        )
    for label, rows in (("insert", first), ("unchanged", first), ("update", changed)):
        started = time.perf_counter()
        with wh.transaction(run_id=f"bench-{label}") as tx:
            counts = tx.replace("robofy__chat_messages", rows, slice=window)
        elapsed = time.perf_counter() - started
        print(
            f"{n:>9,} rows  {label:<10}  {elapsed:6.2f} s  {n / elapsed:>11,.0f} rows/s  {counts}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            bench(n, Path(tmp))


if __name__ == "__main__":
    main()
