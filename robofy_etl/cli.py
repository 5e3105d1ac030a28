"""The ``robofy-etl`` command: demo, sync, rebuild, simulator, probe, status, dev."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from robofy_etl import __version__
from robofy_etl.settings import API_KEY_ENV, Settings, SettingsError, check_api_key

# Exit statuses (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed: a step stopped, nothing downstream of it ran
EXIT_USAGE = 2  # a bad argument or setting: nothing ran
EXIT_INCOMPLETE = 3  # the run finished, but something did not load (listed in the summary)
EARLIEST_DAY = date(2015, 1, 1)  # no Robofy data is older

log = logging.getLogger("robofy_etl.cli")

DEMO_DAYS = 14
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


# True when the command runs as its own process (`run`), not called from Python (tests).
_STANDALONE = False


def _tune_gc() -> None:
    """See `run`: after the imports and Dagster's set-up, before the bulk work."""
    if _STANDALONE:
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def _today() -> date:
    return datetime.now(UTC).date()


# --------------------------------------------------------------------------- output


class _ProgressFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._start = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        elapsed = time.monotonic() - self._start
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"[{elapsed:6.1f}s] {level}{record.getMessage()}"


@contextmanager
def _progress(stream: TextIO) -> Iterator[None]:
    """Shows the pipeline's own INFO log lines as progress while a sync runs."""
    logger = logging.getLogger("robofy_etl")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_ProgressFormatter())
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- sync


@dataclass
class SyncOutcome:
    success: bool
    seconds: float
    run_id: str
    errors: list[str] = field(default_factory=list)
    api: dict[str, int] = field(default_factory=dict)
    raw_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name -> (passed, severity)
    published: str = ""
    # What did not load, and why (the raw assets' `problems` metadata): kept as stored,
    # retried by the next run.
    problems: list[str] = field(default_factory=list)
    quarantined: int = 0
    interrupted: bool = False

    @property
    def failed_checks(self) -> list[str]:
        return sorted(name for name, (passed, _) in self.checks.items() if not passed)

    @property
    def failed_error_checks(self) -> list[str]:
        """Failed checks of ERROR severity (a WARN check's failure does not fail a sync)."""
        return sorted(
            name
            for name, (passed, severity) in self.checks.items()
            if not passed and severity == "ERROR"
        )

    @property
    def exit_code(self) -> int:
        if not self.success:
            return EXIT_FAILED
        return EXIT_INCOMPLETE if self.problems or self.failed_error_checks else EXIT_OK


def run_sync(
    settings: Settings,
    first: date,
    last: date,
    *,
    api_key: str | None = None,
    refetch: bool = False,
) -> SyncOutcome:
    """Materializes every asset for the days ``first..last`` (inclusive) as one Dagster run.

    ``api_key``: the key (default: ``ROBOFY_API_KEY``). ``refetch``: fetch every transcript
    of those days again, changed or not.
    """
    import dagster as dg  # imported here: `robofy-etl --help` should not pay for Dagster

    # Single-run backfill policies are "beta" in Dagster 1.13; the user can't act on that.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from robofy_etl.defs.assembly import build_definitions
    from robofy_etl.defs.ingest import REFETCH_TAG
    from robofy_etl.defs.schedules import SYNC_JOB, range_tags
    from robofy_etl.sync.registry import reports_run_totals

    if first < EARLIEST_DAY:
        raise CliError(f"--start {first} is before {EARLIEST_DAY}: no Robofy data is that old")
    if last < first:
        raise CliError(f"--end {last} is before --start {first}")
    if last > _today():
        raise CliError(f"--end {last} is in the future (today is {_today()} UTC)")
    if first < settings.start_date:
        settings = replace(settings, start_date=first)
    key = _api_key() if api_key is None else api_key

    _check_warehouse(settings)
    defs = build_definitions(settings, api_key=key)
    job = defs.resolve_job_def(SYNC_JOB)
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    _tune_gc()
    started = time.monotonic()
    with instance:
        result = job.execute_in_process(
            instance=instance,
            tags={**range_tags(first, last), **({REFETCH_TAG: "true"} if refetch else {})},
            raise_on_error=False,
            # Failures are summarized by us, without Dagster's stack traces on the console.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        outcome = SyncOutcome(
            success=result.success, seconds=time.monotonic() - started, run_id=result.run_id
        )
        seen: set[tuple[str, ...]] = set()
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            if materialization is None or tuple(materialization.asset_key.path) in seen:
                continue  # a range run reports the same metadata once per partition
            seen.add(tuple(materialization.asset_key.path))
            meta = {k: v.value for k, v in materialization.metadata.items()}
            problems = meta.get("problems")
            if isinstance(problems, str) and problems != "none":
                outcome.problems += [p for p in problems.splitlines() if p not in outcome.problems]
            if materialization.asset_key.path[0] == "raw":
                name = materialization.asset_key.path[1]
                outcome.raw_rows[name] = {
                    k: _as_int(meta.get(f"rows_{k}"))
                    for k in ("inserted", "updated", "deleted", "in_slice")
                }
                if reports_run_totals(name):  # a sync of several tables reports once for all
                    for k in ("requests", "retries", "rate_limited", "pages"):
                        outcome.api[k] = outcome.api.get(k, 0) + _as_int(meta.get(f"api_{k}"))
                    outcome.quarantined += _as_int(meta.get("quarantined"))
            elif "published_copy" in meta:
                outcome.published = str(meta["published_copy"])
        for event in result.all_events:
            evaluation = event.event_specific_data
            if isinstance(evaluation, dg.AssetCheckEvaluation):
                outcome.checks[evaluation.check_name] = (
                    evaluation.passed,
                    evaluation.severity.value,
                )
        if not result.success:
            outcome.errors = _failure_messages(result)
            outcome.interrupted = any(
                "DagsterExecutionInterruptedError" in message or "KeyboardInterrupt" in message
                for message in _failure_classes(result)
            )
    return outcome


def _failure_classes(result: Any) -> list[str]:
    """The class names of every failed step's error chain."""
    names: list[str] = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                names.append(error.cls_name or "")
                error = error.cause
    return names


def _warehouse_file(settings: Settings) -> str:
    """The DuckDB file the settings name (``ROBOFY_WAREHOUSE_URL`` or ``ROBOFY_DUCKDB_PATH``);
    a clear error for a warehouse URL this version cannot use yet."""
    from robofy_etl.warehouse import Warehouse, WarehouseError

    try:
        return str(Warehouse.from_settings(settings).path)
    except WarehouseError as exc:
        raise CliError(str(exc)) from None


def _check_warehouse(settings: Settings) -> None:
    """Opens the warehouse file once before the run: a damaged or unusable file is a clear
    error (exit status 2) before any request is made, not a failed step."""
    from robofy_etl.warehouse import Warehouse, WarehouseError, WarehouseLockedError

    try:
        # No waiting here: a file another process holds is checked by the run, which waits
        # for the lock (ROBOFY_LOCK_TIMEOUT_S) and says who holds it.
        Warehouse.from_settings(settings, lock_timeout_s=0.0).initialize()
    except WarehouseLockedError:
        return
    except WarehouseError as exc:  # an unusable file, or a warehouse URL this cannot use
        raise CliError(str(exc)) from None


def _as_int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


# Errors of ours whose message says what to do next; Dagster wraps them in its own.
_OWN_ERRORS = ("Robofy", "Warehouse", "Settings", "PaginationLoopError", "ModelBuildError")


def _failure_messages(result: Any) -> list[str]:
    """One line per failed step: our own error's message where there is one, else the root."""
    messages: list[str] = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        chosen = None
        while error is not None:
            if error.cls_name and error.cls_name.startswith(_OWN_ERRORS):
                chosen = error  # the outermost of ours: it carries the advice
                break
            chosen = error
            error = error.cause
        if chosen is not None:
            text = chosen.message.strip()
            head, sep, rest = text.partition(": ")
            if sep and head.endswith(chosen.cls_name):  # "package.module.Class: message"
                text = rest
            messages.append(f"{event.step_key}: {text}")
    return messages or ["the run failed; see the Dagster run log"]


def _mart_counts(db_path: str) -> list[tuple[str, int]]:
    import duckdb

    with duckdb.connect(db_path, read_only=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "select table_name from duckdb_tables() where schema_name = 'marts' order by 1"
            ).fetchall()
        ]
        counts = []
        for name in names:
            row = conn.execute(f'select count(*) from marts."{name}"').fetchone()
            counts.append((name, int(row[0]) if row else 0))
        return counts


def print_sync_summary(outcome: SyncOutcome, settings: Settings, out: TextIO) -> None:
    if not outcome.success:
        print("\nSync failed:", file=out)
        for message in outcome.errors:
            print(f"  {message}", file=out)
        print(
            "Everything loaded before the failure is kept (each load is one transaction); "
            "the next sync resumes from there.",
            file=out,
        )
        return
    reader = outcome.published or settings.resolved_publish_path
    print(
        f"\nSync finished in {outcome.seconds:.1f}s (Dagster run {outcome.run_id[:8]}).", file=out
    )
    raw = [
        (name, c["in_slice"], c["inserted"], c["updated"], c["deleted"])
        for name, c in sorted(outcome.raw_rows.items())
    ]
    print(_table(raw, ["raw table", "rows in range", "new", "updated", "deleted"]), file=out)
    api = outcome.api
    print(
        f"\nAPI: {api.get('requests', 0)} requests, {api.get('pages', 0)} pages, "
        f"{api.get('retries', 0)} retries ({api.get('rate_limited', 0)} rate limited).",
        file=out,
    )
    if outcome.quarantined:
        print(
            f"Quarantined: {outcome.quarantined} malformed record(s), kept aside with the reason "
            "in meta.quarantine (robofy-etl status).",
            file=out,
        )
    failed = outcome.failed_checks
    print(
        f"Checks: {len(outcome.checks) - len(failed)} of {len(outcome.checks)} passed"
        + (f"; failed: {', '.join(failed)} (see the Dagster UI for details)" if failed else "."),
        file=out,
    )
    if Path(reader).exists():
        print(f"\nRows per mart ({reader}):", file=out)
        print(_table(_mart_counts(reader), ["mart", "rows"]), file=out)
    if outcome.problems:
        print(
            f"\nIncomplete: {len(outcome.problems)} thing(s) did not load (the rest did; what "
            "was stored before is kept, and the next sync retries them):",
            file=out,
        )
        for problem in outcome.problems:
            print(f"  - {problem}", file=out)


def _settings_with(args: argparse.Namespace, **defaults: str) -> Settings:
    """The settings from the environment, then ``defaults`` (by variable), then the options."""
    overrides = dict(defaults)
    if getattr(args, "base_url", None):
        overrides["ROBOFY_BASE_URL"] = args.base_url
    if getattr(args, "duckdb", None):
        overrides["ROBOFY_DUCKDB_PATH"] = args.duckdb
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def _api_key() -> str:
    """``ROBOFY_API_KEY``, checked (the message never shows the key)."""
    try:
        return check_api_key(os.environ.get(API_KEY_ENV, ""))
    except SettingsError as exc:
        raise CliError(f"{exc} (export it before running this command)") from None


def cmd_sync(args: argparse.Namespace) -> int:
    settings = _settings_with(args)
    end = args.end or _today()
    start = args.start or end - timedelta(days=DEMO_DAYS - 1)
    print(f"robofy-etl {__version__}: syncing {start}..{end} from {settings.base_url}")
    print(f"warehouse: {settings.warehouse.redacted}")
    if args.refetch:
        print("refetching every transcript of these days")
    with _progress(sys.stderr):
        outcome = run_sync(settings, start, end, refetch=args.refetch)
    if outcome.interrupted:
        raise KeyboardInterrupt
    print_sync_summary(outcome, settings, sys.stdout)
    return outcome.exit_code


# --------------------------------------------------------------------------- demo


@contextmanager
def _demo_simulator(scale: str, latency_ms: float) -> Iterator[Any]:
    from robofy_etl.simulator import SimulatorConfig, serve

    end = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    with serve(SimulatorConfig(scale=scale, seed=1, end=end, latency_ms=latency_ms)) as sim:
        yield sim


def cmd_demo(args: argparse.Namespace) -> int:
    import duckdb

    with _demo_simulator(args.scale, args.latency_ms) as sim:
        settings = _settings_with(args, ROBOFY_BASE_URL=sim.base_url)
        today = _today()
        first = today - timedelta(days=DEMO_DAYS - 1)
        print(
            f"robofy-etl demo: built-in Robofy simulator ({args.scale} dataset) at {sim.base_url};"
            f" syncing the last {DEMO_DAYS} days ({first}..{today}) into {settings.duckdb_path}\n"
        )
        with _progress(sys.stderr):
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
            print(f"\n{title}:\n{_table(cursor.fetchall(), headers)}")
    print(
        f"""
Next:
  duckdb -readonly {reader}   # query the marts (a read-only copy; loads never block it)
  make dev                   # the Dagster UI on this data, http://127.0.0.1:3000
  robofy-etl sync --start {first} --end {today}   # with ROBOFY_API_KEY set, for your account
See docs/queries.md for ten more analyst questions and docs/tables.md for every column."""
    )
    return 0


# --------------------------------------------------------------------------- dev, probe, status


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

    settings = _settings_with(args)
    if args.simulator:
        with _demo_simulator("tiny", 0.0) as sim:
            return run(replace(settings, base_url=sim.base_url), sim.api_key)
    return run(settings, _api_key())


def cmd_status(args: argparse.Namespace) -> int:
    import duckdb

    settings = _settings_with(args)
    path = (
        settings.resolved_publish_path
        if Path(settings.resolved_publish_path).exists()
        else _warehouse_file(settings)
    )
    if not Path(path).exists():
        raise CliError(
            f"no warehouse at {settings.warehouse.redacted}: run `robofy-etl sync` first"
        )
    with duckdb.connect(path, read_only=True) as conn:
        loads = conn.execute(
            """select stream, max(finished_at) as last_load, arg_max(slice, finished_at) as slice,
                      sum(rows_inserted) as inserted, sum(rows_updated) as updated,
                      sum(rows_deleted) as deleted
               from meta.load_audit group by stream order by stream"""
        ).fetchall()
        drift = conn.execute(
            "select stream, field_name, change, occurrences, last_seen_at from meta.schema_drift"
            " order by stream, field_name"
        ).fetchall()
        quarantined = conn.execute(
            "select stream, reason, count(*) from meta.quarantine group by all order by 1, 2"
        ).fetchall()
        outstanding = _rows_if_table(
            conn,
            "meta.outstanding",
            """select stream, chatbot_id, item, slice, attempts, last_seen_at, reason
               from meta.outstanding order by first_seen_at, stream, chatbot_id, item""",
        )
        missing = _rows_if_table(
            conn,
            "meta.missing",
            """select stream, chatbot_id, count(*), max(misses), max(last_missed_at)
               from meta.missing group by all order by all""",
        )
    removed: list[tuple[Any, ...]] = []
    if Path(settings.duckdb_path).exists():
        try:  # operators' table: kept in the warehouse file only, not in the published copy
            with duckdb.connect(settings.duckdb_path, read_only=True) as conn:
                removed = _rows_if_table(
                    conn,
                    "meta.removed_rows",
                    """select stream, reason, count(*), max(removed_at)
                       from meta.removed_rows group by all order by all""",
                )
        except duckdb.Error:
            log.info("status: %s is busy; removed rows not shown", settings.duckdb_path)
    print(f"warehouse: {path}\n")
    print(
        _table(loads, ["stream", "last load (UTC)", "last slice", "inserted", "updated", "deleted"])
    )
    print("\nschema drift:" if drift else "\nschema drift: none")
    if drift:
        print(_table(drift, ["stream", "field", "change", "seen", "last seen"]))
    print("\nquarantined records:" if quarantined else "\nquarantined records: none")
    if quarantined:
        print(_table(quarantined, ["stream", "reason", "records"]))
    print(
        "\noutstanding (did not arrive complete; every sync retries them):"
        if outstanding
        else "\noutstanding: none"
    )
    if outstanding:
        shown = [(*row[:6], _short(str(row[6]))) for row in outstanding[:50]]
        print(
            _table(
                shown, ["stream", "chatbot", "item", "day(s)", "attempts", "last tried", "reason"]
            )
        )
        if len(outstanding) > 50:
            print(f"... and {len(outstanding) - 50} more (select * from meta.outstanding)")
    if missing:
        print("\nstored rows the latest scans did not list (kept until the evidence is in):")
        print(_table(missing, ["stream", "chatbot", "rows", "misses in a row", "last missed"]))
    if removed:
        print("\nremoved rows (recoverable from meta.removed_rows):")
        print(_table(removed, ["stream", "reason", "rows", "last removed"]))
    return 0


def _rows_if_table(conn: Any, table: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, or none when ``table`` does not exist yet (an older warehouse)."""
    schema, name = table.split(".")
    exists = conn.execute(
        "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
        [schema, name],
    ).fetchone()
    return conn.execute(sql).fetchall() if exists and exists[0] else []


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuilds every SQL model from ``raw`` (after an upgrade, a change to sql/, or a repair)."""
    from robofy_etl.warehouse import Warehouse, WarehouseError
    from robofy_etl.warehouse.models import ModelError, build

    settings = _settings_with(args)
    if not Path(_warehouse_file(settings)).exists():
        raise CliError(
            f"no warehouse at {settings.warehouse.redacted}: run `robofy-etl sync` first"
        )
    started = time.monotonic()
    try:
        wh = Warehouse.from_settings(settings)
        with wh.transaction(run_id=f"rebuild-{datetime.now(UTC):%Y%m%dT%H%M%S}") as tx:
            results = build(tx.conn, full_refresh=True)
        published = wh.publish(settings.publish_path or None)
    except (WarehouseError, ModelError) as exc:
        print(f"robofy-etl: rebuild failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    rows = [(r.name, r.rows, f"{r.seconds:.2f}") for r in results]
    print(_table(rows, ["model", "rows", "seconds"]))
    print(
        f"\nRebuilt {len(results)} models from raw in {time.monotonic() - started:.1f}s; "
        f"published {published}."
    )
    return EXIT_OK


# --------------------------------------------------------------------------- entry point


def _date(value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-10-01: {value!r}") from None
    if day < EARLIEST_DAY:
        raise argparse.ArgumentTypeError(
            f"{value} is before {EARLIEST_DAY}: no Robofy data is that old"
        )
    return day


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robofy-etl",
        description="Keep your Robofy data in DuckDB: projects, chatbots, conversations, "
        "leads and message stats, incrementally, with Dagster.",
    )
    parser.add_argument("--version", action="version", version=f"robofy-etl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--base-url", help="Robofy API base URL (default: $ROBOFY_BASE_URL)")
        p.add_argument("--duckdb", help="warehouse file (default: $ROBOFY_DUCKDB_PATH)")

    p = sub.add_parser("sync", help="sync a range of days (API key from $ROBOFY_API_KEY)")
    p.add_argument("--start", type=_date, help="first day, UTC (default: 13 days before --end)")
    p.add_argument("--end", type=_date, help="last day, inclusive (default: today)")
    p.add_argument(
        "--refetch",
        action="store_true",
        help="fetch every transcript of these days again, changed or not (a repair)",
    )
    common(p)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("demo", help="the whole pipeline on the built-in simulator")
    p.add_argument("--scale", default="small", choices=["tiny", "small", "medium", "large"])
    p.add_argument("--latency-ms", type=float, default=0.0, help="simulated API latency")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dev", help="open the Dagster UI (dagster dev) on this repository")
    p.add_argument("--simulator", action="store_true", help="point it at the built-in simulator")
    p.add_argument("--scale", default="small", choices=["tiny", "small", "medium", "large"])
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_dev)

    sub.add_parser("simulator", help="serve the built-in Robofy API (--help for its options)")

    p = sub.add_parser("probe", help="call each read endpoint once and compare with the contract")
    p.add_argument("--days", type=int, default=7, help="days of message stats to ask for")
    p.add_argument("--simulator", action="store_true", help="probe the built-in simulator")
    common(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "rebuild",
        help="rebuild every SQL model from raw (after an upgrade, a change to sql/, a repair)",
    )
    common(p)
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser(
        "status", help="last loads, schema drift, quarantined records and what is outstanding"
    )
    common(p)
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:  # its options belong to the simulator's own parser
        from robofy_etl.simulator.server import main as simulator_main

        return simulator_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"robofy-etl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return _interrupted()


# The signal that stopped the command, as `run` learns it (None: unknown, taken as SIGINT).
_last_signal: Callable[[], int | None] = lambda: None  # noqa: E731


def _interrupted() -> int:
    """Says that the command was interrupted and what that means; returns 128 + the signal."""
    signum = _last_signal() or signal.SIGINT
    name = signal.Signals(signum).name
    print(
        f"\nrobofy-etl: interrupted ({name}). Everything committed before it is kept (each load "
        "is one transaction); the next sync resumes from there.",
        file=sys.stderr,
    )
    return 128 + signum


def _watch_signals() -> Callable[[], int | None]:
    """Makes SIGTERM stop the command like Ctrl-C, and remembers which of them arrived.

    Dagster maps SIGTERM onto its SIGINT handler while a run executes, so the handler cannot
    tell them apart; the interpreter's wakeup file descriptor can: it receives the number of
    every signal, whoever handles it.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def last() -> int | None:
        try:
            data = os.read(read_end, 4096)
        except BlockingIOError:
            return None
        stops = [b for b in data if b in (signal.SIGINT, signal.SIGTERM)]
        return stops[-1] if stops else None

    return last


def run() -> None:  # pragma: no cover - exercised by the subprocess tests and benchmarks
    """The ``robofy-etl`` executable: `main` in a process of its own.

    Two things only a process of its own can do, together about 2 s of a 20 s sync:

    - Garbage collection tuned for bulk work: a sync allocates millions of short-lived objects
      (pages, records, rows) beside Dagster's large, long-lived object graph. Objects alive
      after start-up are moved out of the collector's sight (`gc.freeze`), and the youngest
      generation is collected every 10,000 allocations instead of every 700.
    - No interpreter teardown: freeing every module and object at exit takes 0.5-0.8 s after
      Dagster is imported. Every file is closed and every stream flushed by then, so the
      process ends with `os._exit`.
    """
    global _STANDALONE, _last_signal  # set once, before anything runs
    _STANDALONE = True
    _last_signal = _watch_signals()
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and usage errors
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KeyboardInterrupt:
        code = _interrupted()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
