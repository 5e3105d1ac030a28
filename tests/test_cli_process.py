"""`robofy-etl` as a process of its own (`cli.run`): exit codes and messages survive its fast exit.

`run` ends the process with `os._exit` after flushing, to skip interpreter teardown; these check
that nothing printed is lost and every path keeps its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from robofy_etl import __version__


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ.pop("PYTHONUNBUFFERED", None)  # buffered pipes, as for any user: flushing matters
    return subprocess.run(
        [sys.executable, "-m", "robofy_etl.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def test_version_and_help_exit_zero_with_their_output() -> None:
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"robofy-etl {__version__}"
    helped = _cli("sync", "--help")
    assert helped.returncode == 0
    assert "--start" in helped.stdout


def test_usage_errors_exit_two_with_the_message() -> None:
    bad = _cli("sync", "--start", "yesterday")
    assert bad.returncode == 2
    assert "not a date like 2026-10-01: 'yesterday'" in bad.stderr


def test_our_errors_exit_two_without_a_traceback(tmp_path: Path) -> None:
    missing = _cli("status", "--duckdb", str(tmp_path / "none.duckdb"))
    assert missing.returncode == 2
    assert "run `robofy-etl sync` first" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_setting_exits_two_naming_the_variable(value: str) -> None:
    result = _cli("status", env={"ROBOFY_MAX_IN_FLIGHT": value})
    assert result.returncode == 2
    assert "ROBOFY_MAX_IN_FLIGHT" in result.stderr
