"""The ``robofy-etl`` command's entry points: the argument parser, `main` and `run`, and what
an interrupt (Ctrl-C, SIGTERM) means for it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date

from robofy_etl import __version__
from robofy_etl.cli.common import EARLIEST_DAY, EXIT_USAGE, CliError
from robofy_etl.cli.maintenance import cmd_demo, cmd_dev, cmd_probe, cmd_rebuild
from robofy_etl.cli.status import cmd_status
from robofy_etl.cli.sync import cmd_sync, mark_standalone


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
        where = p.add_mutually_exclusive_group()
        where.add_argument("--duckdb", help="warehouse file (default: $ROBOFY_DUCKDB_PATH)")
        where.add_argument(
            "--warehouse",
            metavar="URL",
            help="warehouse URL, duckdb:///path/file.duckdb or postgresql+psycopg://... (sync"
            " only: raw and meta; default: $ROBOFY_WAREHOUSE_URL);"
            " a password on the command line is visible to other users: prefer the variable",
        )

    p = sub.add_parser(
        "sync",
        help="sync a range of days (API key from $ROBOFY_API_KEY)",
        description="Sync a range of days as one Dagster run. With $DAGSTER_HOME set the run is"
        " recorded there, each day as a partition of the daily streams; without it the run is"
        " not kept (its days are named in the robofy/days run tag).",
    )
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
    global _last_signal  # set once, before anything runs
    mark_standalone()
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
