"""Benchmark: the hourly run on a warehouse holding N days of a large account's history.

Design rule (design.md section 6): an incremental run costs what changed, not what is stored.
For each N this builds a warehouse holding N days of history of one account, then times the
hourly run on it:

1. History is the simulator's own seeded account (the one it serves), written straight through
   the warehouse layer (``Warehouse.transaction()`` and ``tx.replace``), each raw table shaped as
   ``robofy_etl/sync`` shapes it: the typed columns, ``_payload`` as the record the API
   client yields (the simulator's rendering, normalized by ``api.records.normalize_record``),
   ``_slice``. No HTTP, so a year loads in minutes. The days the simulator serves are stored
   exactly as a sync at the clock stores them (checked against a real sync: identical raw rows,
   payloads included). Older days are generated a week at a time and stored as they are at the
   clock; the simulator's visitors return to conversations of the 5 days before, within what
   it generated, so a conversation near the end of a week lacks the returns of the next one.
2. The models are built once (a full build: the state a previous run leaves), in a subprocess.
3. Two hourly runs: the simulator (its own process, serving the same account) moves its clock
   one hour, and a real ``robofy-etl sync`` of today and the 3 days before runs in a fresh
   process, Dagster start-up, requests, loads, model build, checks and publishing included; then
   again an hour later. The second is the one compared across N: it starts from what an hourly
   run leaves (the first starts from a full build). Wall time and peak RSS are those of the
   sync process.

For the largest N, a full model rebuild (``robofy-etl rebuild --duckdb PATH``) is timed too, when
that command exists. The default account is sized like the one issue 9 measured (~5.4M
messages and ~540k sessions in five months): 120 chatbots, ~3,600 sessions and ~35,000
messages a day.

``--warehouse postgresql`` writes each history into a database of a throwaway PostgreSQL 15
cluster (tests/pg.py: loopback, durability off as in the tests), runs ``ANALYZE`` after the load
(as autovacuum would), builds the models with ``build_models(full_refresh=True)`` and points
the hourly runs at it with ``ROBOFY_WAREHOUSE_URL``.

    .venv/bin/python benchmarks/bench_history.py [--days 14 90 365] [--quick]
        [--chatbots 120] [--sessions-per-day 3600] [--latency-ms 20] [--in-flight 16] [--keep DIR]
        [--warehouse duckdb|postgresql]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from bench_sync import _ask, _run_sync

from robofy_etl.api.endpoints import ENDPOINTS
from robofy_etl.api.records import normalize_record, parse_timestamp
from robofy_etl.simulator import SCALES, Dataset, Faults, Scale, SimulatorConfig, Variants, serve
from robofy_etl.simulator.app import State, _renderer
from robofy_etl.simulator.dataset import Lead, Session, new_world
from robofy_etl.warehouse import Slice, Warehouse, WarehouseLike

SCALE = "history"  # registered in the simulator's scales by register_account()
SEED = 1
SIM_DAYS = 7  # the window the simulator serves: the hourly run's 4 days, and room before them
RUN_DAYS_BEFORE = 3  # the hourly run syncs today and the 3 days before (ROBOFY_LOOKBACK_DAYS)
CHUNK_DAYS = 7  # history is generated a week at a time (memory stays flat)
QUICK_DAYS = (3, 14)

log = logging.getLogger("bench_history")


def register_account(chatbots: int, sessions_per_day: int) -> Scale:
    """Add the benchmark's account to the simulator's scales (in each process that uses it)."""
    scale = Scale(
        SCALE,
        projects=max(1, chatbots // 24),
        chatbots=chatbots,
        days=1,  # sessions per `days`: the rate; the window length is set per use
        sessions=sessions_per_day,
        idle_chatbots=chatbots // 12,
    )
    cast("dict[str, Scale]", SCALES)[SCALE] = scale
    return scale


# --------------------------------------------------------------------------- the account's history


def recent_dataset(end: datetime, days: int) -> Dataset:
    """What the simulator serves at clock ``end`` with a window of ``days`` days."""
    return Dataset(new_world(SCALE, SEED, end, days), end)


def older_dataset(first: datetime, last: datetime, clock: datetime) -> Dataset:
    """The sessions that start in ``[first, last)``, viewed at ``clock``, every message included.

    The simulator plans a session in full on the day it starts (from a seed per chatbot and
    day, whatever the window), so generating only the days of ``[first, last)`` and viewing them
    at the clock gives them exactly as a simulator covering them would serve them then.
    """
    world = new_world(SCALE, SEED, first + timedelta(days=1), 1)  # its window starts at `first`
    world.ensure(last - timedelta(microseconds=1))
    world._next_day = clock.toordinal() + 1  # nothing later: a view at the clock adds no day
    return Dataset(world, clock)


class Shaper:
    """Raw-table rows from a simulated dataset, as ``robofy_etl.sync`` writes what the API sends."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._state = State(dataset, Variants(), Faults(), "bench")

    def records(self, endpoint: str, items: Iterable[Any]) -> Iterator[dict[str, Any]]:
        """What the client yields for ``items``: the simulator's rendering, normalized."""
        renderer = _renderer(self._state, endpoint)
        spec = ENDPOINTS[endpoint]
        for index, item in enumerate(items):
            yield normalize_record(spec, renderer.item(item, index))

    def projects(self) -> list[dict[str, Any]]:
        return [
            {
                "project_id": int(record["id"]),
                "created_at": parse_timestamp(record.get("created_on")),
                "updated_at": parse_timestamp(record.get("updated_on")),
                "_payload": record,
                "_slice": "snapshot",
            }
            for record in self.records("projects", self.dataset.projects)
        ]

    def chatbots(self) -> list[dict[str, Any]]:
        return [
            {
                "chatbot_id": record["chatbot_id"],
                "project_id": int(record["project_id"]),
                "created_at": parse_timestamp(record.get("created_on")),
                "updated_at": parse_timestamp(record.get("updated_on")),
                "_payload": record,
                "_slice": "snapshot",
            }
            for record in self.records("chatbots", self.dataset.chatbots)
        ]

    def sessions(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        rows = []
        for session, record in zip(sessions, self.records("sessions", sessions), strict=True):
            started = parse_timestamp(record["created_on"])
            assert started is not None
            rows.append(
                {
                    "chatbot_id": session.chatbot_id,
                    "session_id": record["session_id"],
                    "project_id": session.project_id,
                    "started_at": started,
                    "last_message_at": parse_timestamp(record.get("last_message_time")),
                    "_payload": record,
                    "_slice": started.date().isoformat(),
                }
            )
        return rows

    def messages(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        rows = []
        for session in sessions:
            day = session.created_on.date().isoformat()
            transcript = self.dataset.transcript_tuple(session.chatbot_id, session.session_id)
            for ordinal, record in enumerate(self.records("transcript", transcript or ())):
                rows.append(
                    {
                        "chatbot_id": session.chatbot_id,
                        "session_id": session.session_id,
                        "message_id": record["id"],
                        "project_id": session.project_id,
                        "ordinal": ordinal,
                        # sync.rows.message_time: the first part's time
                        "sent_at": parse_timestamp(record["parts"][0]["data"]["time"]),
                        "_payload": record,
                        "_slice": day,
                    }
                )
        return rows

    def leads(self, leads: Sequence[Lead]) -> list[dict[str, Any]]:
        rows = []
        for lead, record in zip(leads, self.records("leads", leads), strict=True):
            created = parse_timestamp(record["created_at"])
            assert created is not None
            rows.append(
                {
                    "lead_id": record["id"],
                    "project_id": lead.project_id,
                    "chatbot_id": lead.chatbot_id,
                    "session_id": record.get("session_id") or None,
                    "created_at": created,
                    "_payload": record,
                    "_slice": created.date().isoformat(),
                }
            )
        return rows

    def stats(self, first: date, last: date) -> list[dict[str, Any]]:
        """Every chatbot's daily stats for ``[first, last]``."""
        rows = []
        for chatbot in self.dataset.chatbots:
            points = self.dataset.stats_for(chatbot.chatbot_id, first, last)
            for record in self.records("message_stats", points):
                stat_date = date.fromisoformat(str(record["date"])[:10])
                rows.append(
                    {
                        "project_id": chatbot.project_id,
                        "chatbot_id": chatbot.chatbot_id,
                        "stat_date": stat_date,
                        "_payload": record,
                        "_slice": stat_date.isoformat(),
                    }
                )
        return rows


def _days(rows: Sequence[dict[str, Any]]) -> Slice:
    """The day window of ``rows``' slices."""
    days = [row["_slice"] for row in rows]
    return Slice(day_from=min(days), day_to=(date.fromisoformat(max(days)) + timedelta(1)))


def write_part(
    wh: WarehouseLike,
    shaper: Shaper,
    sessions: Sequence[Session],
    leads: Sequence[Lead],
    stat_days: tuple[date, date] | None,
) -> tuple[int, int]:
    """Write the sessions (with their transcripts) a day per transaction, then leads and stats.

    Each load replaces exactly its rows' keys inside their days (one day can be written in two
    parts: the simulator's window starts at an hour, not at midnight).
    """
    by_day: dict[date, list[Session]] = {}
    for session in sessions:
        by_day.setdefault(session.created_on.date(), []).append(session)
    messages = 0
    for day, day_sessions in sorted(by_day.items()):
        session_rows = shaper.sessions(day_sessions)
        message_rows = shaper.messages(day_sessions)
        keys = [(row["chatbot_id"], row["session_id"]) for row in session_rows]
        window = Slice(day_from=day, day_to=day + timedelta(days=1))
        with wh.transaction(run_id=f"history-{day}") as tx:
            by_session = Slice(
                window.day_from, window.day_to, keys=(("chatbot_id", "session_id"), keys)
            )
            tx.replace("robofy__inbox_sessions", session_rows, by_session)
            tx.replace("robofy__chat_messages", message_rows, by_session)
        messages += len(message_rows)
    with wh.transaction(run_id="history-leads-stats") as tx:
        lead_rows = shaper.leads(leads)
        if lead_rows:
            days = _days(lead_rows)
            lead_ids = [(row["lead_id"],) for row in lead_rows]
            tx.replace(
                "robofy__leads",
                lead_rows,
                Slice(days.day_from, days.day_to, keys=(("lead_id",), lead_ids)),
            )
        if stat_days is not None:
            stat_rows = shaper.stats(*stat_days)
            keys = [(row["chatbot_id"], row["stat_date"]) for row in stat_rows]
            days = _days(stat_rows)
            tx.replace(
                "robofy__message_stats",
                stat_rows,
                Slice(days.day_from, days.day_to, keys=(("chatbot_id", "stat_date"), keys)),
            )
    return len(sessions), messages


def build_history(wh: WarehouseLike, clock: datetime, days: int) -> dict[str, int]:
    """Fill ``wh`` with the ``days`` days of history before ``clock``; returns what was written.

    The last ``SIM_DAYS`` (at most) are exactly what the simulator serves at ``clock``; the older
    days, generated a week at a time, are what it would serve with a window reaching that far.
    """
    sim_days = min(days, SIM_DAYS)
    recent = recent_dataset(clock, sim_days)
    sim_start = recent.start
    shaper = Shaper(recent)
    with wh.transaction(run_id="history-snapshots") as tx:
        tx.merge_snapshot("robofy__projects", shaper.projects())
        tx.merge_snapshot("robofy__chatbots", shaper.chatbots())
    total_sessions = total_messages = 0
    first = clock - timedelta(days=days)
    while first < sim_start:
        started = time.monotonic()
        last = min(
            datetime.combine(first.date() + timedelta(days=CHUNK_DAYS), datetime.min.time()),
            sim_start,
        )
        older = older_dataset(first, last, clock)
        sessions = [s for s in older.sessions if first <= s.created_on < last]
        ids = {(s.chatbot_id, s.session_id) for s in sessions}
        # Leads the simulator's window does not serve are left out, as it would leave them out.
        leads = [
            lead
            for lead in older.leads
            if lead.created_at < sim_start
            and (
                (lead.chatbot_id, lead.session_id) in ids
                if lead.session_id is not None
                else first <= lead.created_at < last
            )
        ]
        stat_last = (last - timedelta(microseconds=1)).date()
        if last == sim_start:
            stat_last = sim_start.date() - timedelta(days=1)  # that day's stats: the recent part
        stat_days = (first.date(), stat_last) if stat_last >= first.date() else None
        n_sessions, n_messages = write_part(wh, Shaper(older), sessions, leads, stat_days)
        total_sessions += n_sessions
        total_messages += n_messages
        log.info(
            "history %s..%s: %d sessions, %d messages in %.1f s",
            first.date(),
            last.date(),
            n_sessions,
            n_messages,
            time.monotonic() - started,
        )
        first = last
    n_sessions, n_messages = write_part(
        wh, shaper, recent.sessions, recent.leads, (sim_start.date(), clock.date())
    )
    if isinstance(wh, Warehouse):
        with wh.connect() as conn:
            conn.execute("CHECKPOINT")
    else:  # PostgreSQL: the statistics autovacuum would have gathered after a load this size
        with wh.connect() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return {
        "sessions": total_sessions + n_sessions,
        "messages": total_messages + n_messages,
    }


# --------------------------------------------------------------------------- processes


def open_warehouse(target: Path | str) -> WarehouseLike:
    """The DuckDB file at ``target``, or the PostgreSQL database a URL string names."""
    if isinstance(target, Path):
        return Warehouse(target)
    from robofy_etl.warehouse.pg.warehouse import PgWarehouse  # the postgres extra

    wh = PgWarehouse(target)
    wh.initialize()
    return wh


def _load(
    conn: Connection, path: Path | str, clock: datetime, days: int, account: tuple[int, int]
) -> None:
    """``build_history`` in a process of its own (see ``load``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("robofy_etl").setLevel(logging.WARNING)
    register_account(*account)
    conn.send(build_history(open_warehouse(path), clock, days))


def load(path: Path | str, clock: datetime, days: int, account: tuple[int, int]) -> dict[str, int]:
    """Build the history in a fresh process, so that this one stays small.

    On Linux a child's peak RSS (``ru_maxrss``) starts at its parent's RSS when it was forked;
    generating the history here would inflate every measured process's figure.
    """
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_load, args=(child, path, clock, days, account))
    process.start()
    try:
        written: dict[str, int] = parent.recv()
    except EOFError:
        raise SystemExit(f"building {days} days of history failed") from None
    finally:
        process.join()
    return written


def _simulator(
    conn: Connection, account: tuple[int, int], end: datetime, days: int, latency_ms: float
) -> None:
    """Serve the account (chatbots, sessions a day) at clock ``end``, in its own process."""
    register_account(*account)
    config = SimulatorConfig(scale=SCALE, seed=SEED, end=end, days=days, latency_ms=latency_ms)
    with serve(config) as sim:
        conn.send((sim.base_url, sim.api_key, sim.dataset.summary()))
        while True:
            command = conn.recv()
            if command == "stop":
                return
            if command == "advance":
                sim.advance(hours=1)
                sim.clear_log()
                conn.send(0)
            elif command == "count":
                conn.send(len(sim.request_log))


@dataclass
class Timed:
    wall_s: float
    peak_rss_mb: float
    status: int
    output: str

    @property
    def failure(self) -> str:
        """Why the command failed: its last line that names an error ("" if it did not fail)."""
        if self.status == 0:
            return ""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        named = [line for line in lines if "rror" in line or "out of memory" in line]
        return (named or lines or [f"exit status {self.status}"])[-1][:400]


def _timed(argv: Sequence[str]) -> Timed:
    """Run a command in a fresh process: its wall time, peak RSS, exit status and output."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    return Timed(wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), output)


BUILD = """
import json, time
from robofy_etl.warehouse import Warehouse, models
wh = Warehouse({path!r}, memory_limit={limit!r})
started = time.monotonic()
with wh.transaction(run_id="bench-build") as tx:
    models.build(tx.conn)
built = time.monotonic()
wh.publish()
print(json.dumps({{"build_s": built - started, "publish_s": time.monotonic() - built}}))
"""


PG_BUILD = """
import json, time
from robofy_etl.warehouse.models import discover
from robofy_etl.warehouse.pg.warehouse import PgWarehouse
wh = PgWarehouse({url!r})
started = time.monotonic()
wh.build_models(discover(), full_refresh=True)
print(json.dumps({{"build_s": time.monotonic() - started, "publish_s": 0.0}}))
"""


def default_memory_limit() -> str:
    """The memory limit the pipeline runs with here (ROBOFY_DUCKDB_MEMORY_LIMIT or its default)."""
    return os.environ.get("ROBOFY_DUCKDB_MEMORY_LIMIT", "160MB")


def initial_build(path: Path | str, setup_limit: str) -> tuple[Timed, dict[str, float], str]:
    """A full model build and a publish (what the run before the timed one leaves), timed.

    Under the pipeline's memory limit; if that runs out of memory (a finding: it is reported),
    once more under ``setup_limit``, so that the hourly run can still be timed.

    Returns:
        The timed build, its build and publish seconds, and a note ("" if nothing to say).
    """
    note = ""
    if isinstance(path, str):  # PostgreSQL: one transaction, nothing to publish
        timed = _timed([sys.executable, "-c", PG_BUILD.format(url=path)])
        if timed.status != 0:
            print(timed.output)
            raise SystemExit("the initial model build on PostgreSQL failed")
        return timed, json.loads(timed.output.strip().splitlines()[-1]), note
    limit = default_memory_limit()
    timed = _timed([sys.executable, "-c", BUILD.format(path=str(path), limit=limit)])
    if timed.status != 0 and "ran out of memory" in timed.output:
        note = (
            f"the full build ran out of memory under ROBOFY_DUCKDB_MEMORY_LIMIT={limit} "
            f"({timed.wall_s:.0f} s, peak RSS {timed.peak_rss_mb:.0f} MB: {timed.failure}); "
            f"the figures in its row are with {setup_limit}"
        )
        log.warning("%s", note)
        timed = _timed([sys.executable, "-c", BUILD.format(path=str(path), limit=setup_limit)])
    if timed.status != 0:
        print(timed.output)
        raise SystemExit(f"the initial model build of {path} failed")
    return timed, json.loads(timed.output.strip().splitlines()[-1]), note


def rebuild_command() -> list[str] | None:
    """``robofy-etl rebuild`` when this version has it (another change adds it), else None."""
    cli = [sys.executable, "-m", "robofy_etl.cli", "rebuild"]
    probe = subprocess.run([*cli, "--help"], capture_output=True, text=True, check=False)
    return cli if probe.returncode == 0 else None


HOURLY_RUNS = 2  # the first after the full build, then the one timed (see hourly_runs)


def hourly_runs(
    path: Path | str, clock: datetime, days: int, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Serve the account at ``clock``, then `HOURLY_RUNS` times move it one hour on and time
    the hourly sync.

    The first run follows the full build; the second is what every later hour costs: it finds
    the state a previous hourly run leaves (the spare published copy, updated in place; the
    recent conversations' rows rewritten by an incremental build).
    """
    parent, child = mp.Pipe()
    account = (args.chatbots, args.sessions_per_day)
    sim = mp.Process(
        target=_simulator, args=(child, account, clock, min(days, SIM_DAYS), args.latency_ms)
    )
    sim.start()
    results = []
    try:
        base_url, api_key, _ = parent.recv()
        env = {
            **os.environ,
            "ROBOFY_API_KEY": api_key,
            "ROBOFY_BASE_URL": base_url,
            "ROBOFY_MAX_IN_FLIGHT": str(args.in_flight),
        }
        env.pop("DAGSTER_HOME", None)
        env.pop("ROBOFY_WAREHOUSE_URL", None)
        if isinstance(path, Path):
            env["ROBOFY_DUCKDB_PATH"] = str(path)
        else:
            env["ROBOFY_WAREHOUSE_URL"] = path
        for hour in range(1, HOURLY_RUNS + 1):
            _ask(parent, "advance")
            today = (clock + timedelta(hours=hour)).date()
            try:
                result = _run_sync(
                    env, (today - timedelta(days=RUN_DAYS_BEFORE)).isoformat(), today.isoformat()
                )
            except SystemExit as exc:  # bench_sync's helper printed the output; go on
                log.warning("hourly run %d on %d days failed: %s", hour, days, exc)
                result = {"wall_s": math.nan, "peak_rss_mb": math.nan, "failed": 1.0}
            result["server_requests"] = _ask(parent, "count")
            results.append(result)
        return results
    finally:
        parent.send("stop")
        sim.join(timeout=30)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[14, 90, 365])
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: --days {QUICK_DAYS}")
    parser.add_argument("--chatbots", type=int, default=120)
    parser.add_argument("--sessions-per-day", type=int, default=3600)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="keep each warehouse in this directory")
    parser.add_argument(
        "--warehouse",
        choices=("duckdb", "postgresql"),
        default="duckdb",
        help="postgresql: each history in a database of a throwaway PostgreSQL 15 cluster "
        "(tests/pg.py: loopback, durability off as in the tests)",
    )
    parser.add_argument(
        "--setup-memory-limit",
        default="4GB",
        help="DuckDB memory for the initial full build if it runs out under the pipeline's",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("robofy_etl").setLevel(logging.WARNING)
    days_list = sorted(set(QUICK_DAYS if args.quick else args.days))
    register_account(args.chatbots, args.sessions_per_day)
    # The clock of the run before the timed one; the timed one runs an hour later.
    clock = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    clock -= timedelta(hours=1)

    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    rebuild = rebuild_command()
    rebuilt: Timed | None = None
    with tempfile.TemporaryDirectory(prefix="bench_history_") as tmp, _cluster(args) as cluster:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for days in days_list:
            path = directory / f"history_{days}d.duckdb"
            for stale in directory.glob(f"{path.name}*"):
                stale.unlink()
            target: Path | str = path
            if cluster is not None:  # a database of its own; the password stays in this process
                url = cluster.create_database(f"history_{days}d")
                target = url.render_as_string(hide_password=False)
            started = time.monotonic()
            written = load(target, clock, days, (args.chatbots, args.sessions_per_day))
            load_s = time.monotonic() - started
            size_mb = (
                path.stat().st_size / 1e6
                if cluster is None
                else float(
                    cluster.execute(  # type: ignore[arg-type]
                        f"select pg_database_size('history_{days}d')", f"history_{days}d"
                    )[0][0]
                )
                / 1e6
            )
            log.info(
                "%d days: %s in %.0f s (%.0f MB); building the models",
                days,
                written,
                load_s,
                size_mb,
            )
            build, parts, note = initial_build(target, args.setup_memory_limit)
            if note:
                notes.append(f"{days} days: {note}")
            first, run = hourly_runs(target, clock, days, args)
            for n, result in enumerate((first, run), start=1):
                if result.get("failed"):
                    notes.append(f"{days} days: hourly run {n} failed (its output is above)")
            rows.append(
                (
                    f"{days}",
                    f"{written['sessions']:,}",
                    f"{written['messages']:,}",
                    f"{size_mb:,.0f}",
                    f"{load_s:.0f}",
                    f"{parts['build_s']:.1f}" + (" (OOM, see note)" if note else ""),
                    f"{parts['publish_s']:.1f}",
                    f"{build.peak_rss_mb:.0f}",
                    _number(first["wall_s"], ".1f"),
                    _number(run["wall_s"], ".1f"),
                    _number(run["peak_rss_mb"], ".0f"),
                    f"{run['server_requests']:.0f}",
                )
            )
            if days == days_list[-1] and rebuild is not None and cluster is None:
                rebuilt = _timed([*rebuild, "--duckdb", str(path)])
            if args.keep is None:
                for stale in directory.glob(f"{path.name}*"):
                    stale.unlink()

    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n(peak RSS of a measured process counts at least this process's {own_mb:.0f} MB: "
        "on Linux a child starts with its parent's figure)"
    )
    print(f"\nwarehouse: {args.warehouse}")
    print(
        f"\naccount: {args.chatbots} chatbots, ~{args.sessions_per_day:,} sessions a day; "
        f"simulator latency {args.latency_ms:g} ms, {args.in_flight} in flight; the hourly run "
        f"syncs today and the {RUN_DAYS_BEFORE} days before, an hour after the previous run\n"
    )
    print(
        "| days of history | sessions | messages | raw data MB | history load s "
        "| initial full build s | its publish s | build+publish peak RSS MB "
        "| first hourly run wall s | next hourly run wall s | its peak RSS MB "
        "| its API requests |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    largest = days_list[-1]
    if args.warehouse == "postgresql":
        print("\n(PostgreSQL: the initial build is `build_models(full_refresh=True)`; no publish)")
    elif rebuilt is None:
        print(  # another change adds the command
            f"\nfull model rebuild at {largest} days: skipped (`robofy-etl rebuild` does not "
            "exist in this version yet)"
        )
    else:
        limit = default_memory_limit()
        outcome = f"failed: {rebuilt.failure}" if rebuilt.status else "done"
        print(
            f"\nfull model rebuild at {largest} days (`robofy-etl rebuild`, "
            f"ROBOFY_DUCKDB_MEMORY_LIMIT={limit}): {rebuilt.wall_s:.1f} s, peak RSS "
            f"{rebuilt.peak_rss_mb:.0f} MB, {outcome}"
        )
    for note in notes:
        print(f"\nnote: {note}")


@contextmanager
def _cluster(args: argparse.Namespace) -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for ``--warehouse postgresql`` (tests/pg.py), else None."""
    if args.warehouse != "postgresql":
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg import pg_cluster

    with pg_cluster() as cluster:
        yield cluster


def _number(value: float, spec: str) -> str:
    return "failed" if math.isnan(value) else format(value, spec)


if __name__ == "__main__":
    main()
