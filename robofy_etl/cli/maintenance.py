"""The other commands: ``demo``, ``dev``, ``probe`` (against the API or the built-in simulator)
and ``rebuild`` (every SQL model from raw)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robofy_etl.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    env_api_key,
    format_table,
    settings_from_args,
    today_utc,
    warehouse_file,
)
from robofy_etl.cli.sync import DEMO_DAYS, print_sync_summary, progress, run_sync
from robofy_etl.settings import API_KEY_ENV, Settings

if TYPE_CHECKING:
    from robofy_etl.warehouse.models import BuildResult

DEMO_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "Conversations and leads per chatbot, last 7 days",
        """
        select c.name as chatbot, count(*) as sessions,
               count(*) filter (where s.has_lead) as with_lead,
               round(avg(s.message_count), 1) as avg_messages
        from marts.sessions s join marts.chatbots c using (chatbot_id)
        where s.started_at >= current_date - interval 7 day
        group by all order by sessions desc limit 8
        """,
    ),
    (
        "WhatsApp vs web",
        """
        select platform, count(*) as sessions, round(avg(message_count), 1) as avg_messages,
               round(100.0 * avg(has_lead::int), 1) as lead_rate_pct
        from marts.sessions group by all order by sessions desc
        """,
    ),
    (
        "Busiest hours of the day (UTC), by user messages",
        """
        select hour(sent_at) as hour_utc, count(*) as user_messages
        from marts.messages where role = 'user'
        group by all order by user_messages desc limit 5
        """,
    ),
)


@contextmanager
def _demo_simulator(scale: str, latency_ms: float) -> Iterator[Any]:
    from robofy_etl.simulator import SimulatorConfig, serve

    end = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    with serve(SimulatorConfig(scale=scale, seed=1, end=end, latency_ms=latency_ms)) as sim:
        yield sim


def cmd_demo(args: argparse.Namespace) -> int:
    import duckdb

    with _demo_simulator(args.scale, args.latency_ms) as sim:
        settings = settings_from_args(args, ROBOFY_BASE_URL=sim.base_url)
        today = today_utc()
        first = today - timedelta(days=DEMO_DAYS - 1)
        print(
            f"robofy-etl demo: built-in Robofy simulator ({args.scale} dataset) at {sim.base_url};"
            f" syncing the last {DEMO_DAYS} days ({first}..{today}) into {settings.duckdb_path}\n"
        )
        with progress(sys.stderr):
            outcome = run_sync(settings, first, today, api_key=sim.api_key)
    if outcome.interrupted:
        raise KeyboardInterrupt
    print_sync_summary(outcome, settings, sys.stdout)
    if not outcome.success:
        return EXIT_FAILED
    reader = outcome.published or settings.resolved_publish_path
    with duckdb.connect(reader, read_only=True) as conn:
        for title, sql in DEMO_QUERIES:
            cursor = conn.execute(sql)
            headers = [d[0] for d in cursor.description]
            print(f"\n{title}:\n{format_table(cursor.fetchall(), headers)}")
    print(
        f"""
Next:
  duckdb -readonly {reader}   # query the marts (a read-only copy; loads never block it)
  make dev                   # the Dagster UI on this data, http://127.0.0.1:3000
  robofy-etl sync --start {first} --end {today}   # with ROBOFY_API_KEY set, for your account
See docs/queries.md for ten more analyst questions and docs/tables.md for every column."""
    )
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Runs ``dagster dev`` on this repository, optionally against the built-in simulator."""
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(Path("dagster_home").resolve()))
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(args.port)]
    if not args.simulator:
        return subprocess.call(command, env=env)  # noqa: S603 - fixed argv
    with _demo_simulator(args.scale, 0.0) as sim:
        env[API_KEY_ENV] = sim.api_key
        env["ROBOFY_BASE_URL"] = sim.base_url
        print(f"Built-in simulator at {sim.base_url}; Dagster UI at http://127.0.0.1:{args.port}")
        try:
            return subprocess.call(command, env=env)  # noqa: S603 - fixed argv
        except KeyboardInterrupt:
            return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from robofy_etl.api import ClientConfig, RobofyClient, RobofyError, format_probe_report, probe

    def run(settings: Settings, api_key: str) -> int:
        config = ClientConfig.from_settings(settings, api_key=api_key, max_in_flight=2)
        try:
            with RobofyClient(config) as api:
                report = probe(api, days=args.days)
        except RobofyError as exc:
            print(f"probe failed: {exc}", file=sys.stderr)
            return 1
        print(format_probe_report(report))
        return 0

    settings = settings_from_args(args)
    if args.simulator:
        with _demo_simulator("tiny", 0.0) as sim:
            return run(replace(settings, base_url=sim.base_url), sim.api_key)
    return run(settings, env_api_key())


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuilds every SQL model from ``raw`` (after an upgrade, a change to sql/, or a repair)."""
    from robofy_etl.warehouse import Warehouse, WarehouseError
    from robofy_etl.warehouse.models import ModelError, build

    settings = settings_from_args(args)
    if settings.warehouse.backend == "postgresql":
        return _rebuild_postgresql(settings)
    if not Path(warehouse_file(settings, "rebuild")).exists():
        raise CliError(
            f"no warehouse at {settings.warehouse.redacted}: run `robofy-etl sync` first"
        )
    started = time.monotonic()
    try:
        wh = Warehouse.from_settings(settings)
        assert isinstance(wh, Warehouse)  # warehouse_file refused PostgreSQL
        with wh.transaction(run_id=f"rebuild-{datetime.now(UTC):%Y%m%dT%H%M%S}") as tx:
            results = build(tx.conn, full_refresh=True)
        published = wh.publish(settings.publish_path or None)
    except (WarehouseError, ModelError) as exc:
        print(f"robofy-etl: rebuild failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _rebuilt(results, started, f"; published {published}.")


def _rebuild_postgresql(settings: Settings) -> int:
    """``rebuild`` on a PostgreSQL warehouse: every model in full, in one transaction."""
    from robofy_etl.warehouse import Warehouse, WarehouseError
    from robofy_etl.warehouse.models import ModelError
    from robofy_etl.warehouse.pg.warehouse import PgWarehouse

    started = time.monotonic()
    try:
        wh = Warehouse.from_settings(settings)  # names the postgres extra if it is missing
        assert isinstance(wh, PgWarehouse)
        try:
            results = wh.build_models(full_refresh=True)
        finally:
            wh.dispose()
    except WarehouseError as exc:  # unreachable server, refused login: a setting to fix
        raise CliError(str(exc)) from None
    except ModelError as exc:
        print(f"robofy-etl: rebuild failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _rebuilt(
        results,
        started,
        f" in {settings.warehouse.redacted} (readers query its marts directly).",
    )


def _rebuilt(results: Sequence[BuildResult], started: float, where: str) -> int:
    """Print what a rebuild built (a table, then one line ending in ``where``)."""
    rows = [(r.name, r.rows, f"{r.seconds:.2f}") for r in results]
    print(format_table(rows, ["model", "rows", "seconds"]))
    print(f"\nRebuilt {len(results)} models from raw in {time.monotonic() - started:.1f}s{where}")
    return EXIT_OK
