"""Benchmark: the full ``robofy-etl sync`` of a simulated account, then the incremental run.

The simulator runs in its own process (so its CPU is not counted against the pipeline) with a
fixed latency per response; the sync runs as the real command in a fresh process, Dagster
start-up included, into an empty warehouse. For each run it reports wall time, API requests,
CPU time and peak RSS of the sync process. Then the simulator's clock moves one day and the
recent days are synced again (the incremental run).

Each run also prints where its wall time went: the sync's progress lines are stamped as they
arrive, and each phase ends at its line (the snapshots, the windowed streams once their last row
is loaded, the raw checks, the SQL models with publishing, the mart checks) or at the exit.

``--warehouse postgresql`` loads into a throwaway PostgreSQL cluster (tests/pg.py: PostgreSQL
15 on loopback, durability off as in the tests) instead of a DuckDB file; ``--warehouse both``
runs the DuckDB and the PostgreSQL benchmark back to back (each against a fresh simulator) and
prints their ratio.

    .venv/bin/python benchmarks/bench_sync.py [--scale medium] [--latency-ms 20] [--in-flight 16]
        [--warehouse duckdb|postgresql|both]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _simulator(conn: Connection, scale: str, latency_ms: float, end: datetime) -> None:
    from robofy_etl.simulator import SimulatorConfig, serve

    with serve(SimulatorConfig(scale=scale, seed=1, end=end, latency_ms=latency_ms)) as sim:
        summary = sim.dataset.summary()
        # Render the pages now, not while the sync is timed: a real API's rendering is in its
        # latency, not on this machine's cores (and bench_floor's client hits a rendered page).
        sim.warm()
        conn.send((sim.base_url, sim.api_key, summary))
        while True:
            command = conn.recv()
            if command == "stop":
                return
            if command == "advance":
                sim.advance(hours=24)
                sim.warm()
                sim.clear_log()
                conn.send(sim.dataset.summary())
            elif command == "count":
                conn.send(len(sim.request_log))


def _ask(conn: Connection, command: str) -> float:
    conn.send(command)
    answer = conn.recv()
    return float(answer) if isinstance(answer, int | float) else 0.0


# Where a sync's wall time goes: each phase ends at the arrival of the last progress line that
# matches its pattern (its step's own report), the last one at the process's exit.
PHASES = (
    ("start and projects", re.compile(r"\] robofy__projects snapshot")),
    ("chatbots", re.compile(r"\] robofy__chatbots snapshot")),
    ("windowed streams", re.compile(r"\] robofy__\w+ \d{4}-\d\d-\d\d\.\.")),
    ("raw checks", re.compile(r"\] raw_checks: ")),
    ("SQL models and publish", re.compile(r"\] built \d+ SQL models")),
    ("mart checks", re.compile(r"\] mart_checks: ")),
)


def phases(stamped: list[tuple[float, str]], wall: float) -> list[tuple[str, float, float]]:
    """``(phase, ends at s, takes s)`` from the sync's output lines stamped at their arrival.

    A phase without its line (a run whose selection skipped it) takes 0 s. The last phase,
    the summary and the exit, ends at ``wall``.
    """
    rows: list[tuple[str, float, float]] = []
    previous = 0.0
    for name, pattern in PHASES:
        ends = max((at for at, line in stamped if pattern.search(line)), default=previous)
        ends = max(ends, previous)
        rows.append((name, ends, ends - previous))
        previous = ends
    rows.append(("summary and exit", wall, wall - previous))
    return rows


def _run_sync(env: dict[str, str], first: str, last: str) -> dict[str, Any]:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "robofy_etl.cli", "sync", "--start", first, "--end", last],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stamped: list[tuple[float, str]] = []
    assert process.stdout is not None
    for line in process.stdout:
        stamped.append((time.monotonic() - started, line))
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    text = "".join(line for _, line in stamped)
    if status != 0:
        print(text)
        raise SystemExit(f"sync failed with status {status}")
    match = re.search(r"API: (\d+) requests", text)
    return {
        "wall_s": wall,
        "requests": float(match.group(1)) if match else float("nan"),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "phases": phases(stamped, wall),
    }


@contextmanager
def _warehouse_env(backend: str, directory: Path) -> Iterator[dict[str, str]]:
    """The environment selecting ``backend``: a DuckDB file in ``directory``, or a database in a
    throwaway PostgreSQL cluster (its password stays in this environment)."""
    if backend == "duckdb":
        yield {"ROBOFY_DUCKDB_PATH": str(directory / "robofy.duckdb")}
        return
    sys.path.insert(0, str(ROOT))
    from tests.pg import pg_cluster  # the throwaway cluster of the tests

    with pg_cluster() as cluster:
        url = cluster.create_database("robofy_bench")
        yield {
            "ROBOFY_WAREHOUSE_URL": url.render_as_string(hide_password=False),
            "ROBOFY_DUCKDB_PATH": str(directory / "unused.duckdb"),
        }


def bench(args: argparse.Namespace, backend: str) -> dict[str, dict[str, Any]]:
    """The full sync into an empty ``backend`` warehouse, then the incremental run; prints and
    returns both rows."""
    # The clock starts a day ago, so that after it moves one day it is now again.
    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    end = now - timedelta(days=1)
    parent, child = mp.Pipe()
    sim = mp.Process(target=_simulator, args=(child, args.scale, args.latency_ms, end))
    sim.start()
    try:
        base_url, api_key, summary = parent.recv()
        with tempfile.TemporaryDirectory() as tmp, _warehouse_env(backend, Path(tmp)) as selected:
            home = Path(tmp) / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            env = {
                **os.environ,
                "ROBOFY_API_KEY": api_key,
                "ROBOFY_BASE_URL": base_url,
                "ROBOFY_MAX_IN_FLIGHT": str(args.in_flight),
                **selected,
            }
            env.pop("DAGSTER_HOME", None)
            if backend == "duckdb":
                env.pop("ROBOFY_WAREHOUSE_URL", None)
            if args.dagster_home:
                env["DAGSTER_HOME"] = str(home)
            last = end.date()
            first = last - timedelta(days=int(summary.get("days", 30)))
            full = _run_sync(env, first.isoformat(), last.isoformat())
            full["server_requests"] = _ask(parent, "count")

            _ask(parent, "advance")
            # The incremental run syncs the recent days, as the schedules do.
            today = now.date()
            incremental = _run_sync(
                env, (today - timedelta(days=args.lookback_days)).isoformat(), today.isoformat()
            )
            incremental["server_requests"] = _ask(parent, "count")
    finally:
        parent.send("stop")
        sim.join(timeout=30)

    bound = full["server_requests"] * args.latency_ms / 1000 / args.in_flight
    instance = "sqlite DAGSTER_HOME" if args.dagster_home else "ephemeral"
    print(f"\n{args.scale} dataset: {summary}; Dagster instance: {instance}; warehouse: {backend}")
    print(
        f"latency {args.latency_ms:g} ms, {args.in_flight} in flight; "
        f"latency bound of the full sync: {bound:.1f} s\n"
    )
    print("| warehouse | run | wall s | API requests | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    runs = {"full sync (empty warehouse)": full, "incremental (clock +1 day)": incremental}
    for name, r in runs.items():
        print(
            f"| {backend} | {name} | {r['wall_s']:.1f} | {r['server_requests']:.0f} "
            f"| {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    share = incremental["server_requests"] / full["server_requests"]
    print(f"\nincremental requests: {share:.1%} of the full sync")
    for name, r in runs.items():
        print(f"\nWhere the {name} went (each phase ends at its step's progress line):\n")
        print("| phase | ends at s | takes s |")
        print("|---|---|---|")
        for phase, ends, takes in r["phases"]:
            print(f"| {phase} | {ends:.2f} | {takes:.2f} |")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--lookback-days", type=int, default=2)
    parser.add_argument(
        "--warehouse",
        choices=("duckdb", "postgresql", "both"),
        default="duckdb",
        help="the back end to load into; both: DuckDB then PostgreSQL, and their ratio",
    )
    parser.add_argument(
        "--dagster-home",
        action="store_true",
        help="record the runs in a (fresh) sqlite Dagster instance, as with DAGSTER_HOME set; "
        "default: an ephemeral in-memory instance, as a plain `robofy-etl sync` without it",
    )
    args = parser.parse_args()
    backends = ("duckdb", "postgresql") if args.warehouse == "both" else (args.warehouse,)
    results = {backend: bench(args, backend) for backend in backends}
    if len(results) == 2:
        print("\nPostgreSQL / DuckDB, wall time:")
        for name, pg in results["postgresql"].items():
            print(f"  {name}: {pg['wall_s'] / results['duckdb'][name]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
