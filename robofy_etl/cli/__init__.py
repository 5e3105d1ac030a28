"""The ``robofy-etl`` command: demo, sync, rebuild, simulator, probe, status, dev.

- `entry`: the argument parser, `main` (called from Python) and `run` (the executable);
- `sync`: ``sync``, one in-process Dagster run (`run_sync`) and its summary;
- `status`: the read-only ``status``;
- `maintenance`: ``demo``, ``dev``, ``probe`` and ``rebuild``;
- `common`: exit statuses, `CliError`, settings from the options, the text tables.
"""

from __future__ import annotations

from robofy_etl.cli.common import (
    EARLIEST_DAY,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)
from robofy_etl.cli.entry import build_parser, main, run
from robofy_etl.cli.maintenance import DEMO_QUERIES, cmd_demo, cmd_dev, cmd_probe, cmd_rebuild
from robofy_etl.cli.status import cmd_status
from robofy_etl.cli.sync import DEMO_DAYS, SyncOutcome, cmd_sync, print_sync_summary, run_sync

__all__ = [
    "DEMO_DAYS",
    "DEMO_QUERIES",
    "EARLIEST_DAY",
    "EXIT_FAILED",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "SyncOutcome",
    "build_parser",
    "cmd_demo",
    "cmd_dev",
    "cmd_probe",
    "cmd_rebuild",
    "cmd_status",
    "cmd_sync",
    "main",
    "print_sync_summary",
    "run",
    "run_sync",
]
