"""``robofy-etl sync``: one in-process Dagster run over a range of days, and its summary."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TextIO

from robofy_etl import __version__
from robofy_etl.cli.common import (
    EARLIEST_DAY,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_OK,
    CliError,
    env_api_key,
    format_table,
    settings_from_args,
    today_utc,
)
from robofy_etl.settings import Settings

DEMO_DAYS = 14  # the days a sync covers by default, and the days the demo syncs

# True when the command runs as its own process (`run`), not called from Python (tests).
_STANDALONE = False


def mark_standalone() -> None:
    """Called by `run` before anything runs: this process is the command's own."""
    global _STANDALONE
    _STANDALONE = True


def _tune_gc() -> None:
    """See `run`: after the imports and Dagster's set-up, before the bulk work."""
    if _STANDALONE:
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)


class _ProgressFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._start = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        elapsed = time.monotonic() - self._start
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"[{elapsed:6.1f}s] {level}{record.getMessage()}"


@contextmanager
def progress(stream: TextIO) -> Iterator[None]:
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
    # (step, seconds) of each step that succeeded, in the order they ended.
    steps: list[tuple[str, float]] = field(default_factory=list)

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
    from robofy_etl.defs.partitions import range_tags, window_tags
    from robofy_etl.defs.schedules import SYNC_JOB
    from robofy_etl.sync import Window
    from robofy_etl.sync.registry import reports_run_totals

    if first < EARLIEST_DAY:
        raise CliError(f"--start {first} is before {EARLIEST_DAY}: no Robofy data is that old")
    if last < first:
        raise CliError(f"--end {last} is before --start {first}")
    if last > today_utc():
        raise CliError(f"--end {last} is in the future (today is {today_utc()} UTC)")
    if first < settings.start_date:
        settings = replace(settings, start_date=first)
    key = env_api_key() if api_key is None else api_key

    _check_warehouse(settings)
    # With DAGSTER_HOME the run is kept, and records which days (partitions) it synced. Without
    # it, the run history is thrown away at exit: the same sync runs unpartitioned, naming its
    # days in a tag, and spares Dagster's events for every day of the range.
    kept = bool(os.environ.get("DAGSTER_HOME"))
    defs = build_definitions(settings, api_key=key, partitioned=kept)
    job = defs.resolve_job_def(SYNC_JOB)
    instance = dg.DagsterInstance.get() if kept else dg.DagsterInstance.ephemeral()
    days = range_tags(first, last) if kept else window_tags(Window(first, last + timedelta(days=1)))
    _tune_gc()
    started = time.monotonic()
    with instance:
        result = job.execute_in_process(
            instance=instance,
            tags={**days, **({REFETCH_TAG: "true"} if refetch else {})},
            raise_on_error=False,
            # Failures are summarized by us, without Dagster's stack traces on the console.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        outcome = SyncOutcome(
            success=result.success,
            seconds=time.monotonic() - started,
            run_id=result.run_id,
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
            if event.is_step_success:
                seconds = event.step_success_data.duration_ms / 1000
                outcome.steps.append((event.step_key or "", seconds))
            evaluation = event.event_specific_data
            if isinstance(evaluation, dg.AssetCheckEvaluation):
                outcome.checks[evaluation.check_name] = (
                    evaluation.passed,
                    evaluation.severity.value,
                )
        if not result.success:
            outcome.errors = _failure_messages(result)
            classes = _failure_classes(result)
            outcome.interrupted = any(
                "DagsterExecutionInterruptedError" in message or "KeyboardInterrupt" in message
                for message in classes
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
    if outcome.steps:
        steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in outcome.steps)
        print(f"Steps: {steps}.", file=out)
    _print_loads(outcome, out)
    if Path(reader).exists():
        print(f"\nRows per mart ({reader}):", file=out)
        print(format_table(_mart_counts(reader), ["mart", "rows"]), file=out)
    _print_problems(outcome, out)


def _print_loads(outcome: SyncOutcome, out: TextIO) -> None:
    """The raw tables' counts, the API's, quarantined records and the checks."""
    raw = [
        (name, c["in_slice"], c["inserted"], c["updated"], c["deleted"])
        for name, c in sorted(outcome.raw_rows.items())
    ]
    print(format_table(raw, ["raw table", "rows in range", "new", "updated", "deleted"]), file=out)
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


def _print_problems(outcome: SyncOutcome, out: TextIO) -> None:
    if outcome.problems:
        print(
            f"\nIncomplete: {len(outcome.problems)} thing(s) did not load (the rest did; what "
            "was stored before is kept, and the next sync retries them):",
            file=out,
        )
        for problem in outcome.problems:
            print(f"  - {problem}", file=out)


def cmd_sync(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    end = args.end or today_utc()
    start = args.start or end - timedelta(days=DEMO_DAYS - 1)
    print(f"robofy-etl {__version__}: syncing {start}..{end} from {settings.base_url}")
    print(f"warehouse: {settings.warehouse.redacted}")
    if args.refetch:
        print("refetching every transcript of these days")
    with progress(sys.stderr):
        outcome = run_sync(settings, start, end, refetch=args.refetch)
    if outcome.interrupted:
        raise KeyboardInterrupt
    print_sync_summary(outcome, settings, sys.stdout)
    return outcome.exit_code
