"""What every ``robofy-etl`` command shares: exit statuses, the user's errors, settings, tables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from robofy_etl.settings import API_KEY_ENV, Settings, SettingsError, check_api_key

# Exit statuses (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed: a step stopped, nothing downstream of it ran
EXIT_USAGE = 2  # a bad argument or setting: nothing ran
EXIT_INCOMPLETE = 3  # the run finished, but something did not load (listed in the summary)
EARLIEST_DAY = date(2015, 1, 1)  # no Robofy data is older


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def today_utc() -> date:
    return datetime.now(UTC).date()


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def settings_from_args(args: argparse.Namespace, **defaults: str) -> Settings:
    """The settings from the environment, then ``defaults`` (by variable), then the options."""
    overrides = dict(defaults)
    if getattr(args, "base_url", None):
        overrides["ROBOFY_BASE_URL"] = args.base_url
    if getattr(args, "duckdb", None):
        overrides["ROBOFY_DUCKDB_PATH"] = args.duckdb
        overrides["ROBOFY_WAREHOUSE_URL"] = ""  # the file asked for, whatever the environment
    if getattr(args, "warehouse", None):
        overrides["ROBOFY_WAREHOUSE_URL"] = args.warehouse
    try:
        return Settings.from_env(overrides=overrides)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def env_api_key() -> str:
    """``ROBOFY_API_KEY``, checked (the message never shows the key)."""
    try:
        return check_api_key(os.environ.get(API_KEY_ENV, ""))
    except SettingsError as exc:
        raise CliError(f"{exc} (export it before running this command)") from None


def warehouse_file(settings: Settings, command: str) -> str:
    """The DuckDB file the settings name (``ROBOFY_WAREHOUSE_URL`` or ``ROBOFY_DUCKDB_PATH``),
    for a command that works on DuckDB files only; a clear error for a PostgreSQL warehouse."""
    target = settings.warehouse
    if target.backend != "duckdb":
        raise CliError(
            f"`robofy-etl {command}` reads a DuckDB warehouse file, and ROBOFY_WAREHOUSE_URL "
            f"names a PostgreSQL warehouse ({target.redacted}); it does not work on PostgreSQL "
            "yet. Query its meta schema directly (meta.load_audit, meta.outstanding, "
            "meta.schema_drift, meta.quarantine)."
        )
    # The path alone: opening a Warehouse here would create the file's directory as a side
    # effect of a command that only reads.
    if target.path is None:
        raise CliError(f"ROBOFY_WAREHOUSE_URL names no DuckDB file ({target.redacted})")
    return str(target.path.expanduser().resolve())
