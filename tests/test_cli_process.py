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


@pytest.mark.parametrize(
    ("command", "message"),
    [
        # the sync loads into PostgreSQL: an unreachable server is a clear error before any run
        (["sync", "--start", "2026-11-29"], "cannot connect to the PostgreSQL warehouse"),
        (["status"], "cannot connect to the PostgreSQL warehouse"),
        # rebuild builds the SQL models there too
        (["rebuild"], "cannot connect to the PostgreSQL warehouse"),
    ],
)
def test_a_postgresql_warehouse_url_is_used_or_refused_clearly_without_its_password(
    command: list[str], message: str, tmp_path: Path
) -> None:
    """PostgreSQL takes the sync (raw and meta) but not the DuckDB-only commands: each says
    what it cannot do before anything runs, never shows the password, and never falls back to
    a DuckDB file nobody asked for."""
    url = "postgresql://robofy:pw-5e0a@127.0.0.1:9/robofy"
    result = _cli(
        *command,
        env={"ROBOFY_WAREHOUSE_URL": url, "ROBOFY_API_KEY": "k", "DAGSTER_HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw-5e0a" not in result.stdout + result.stderr
    assert "***" in result.stderr


def test_a_duckdb_warehouse_url_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "from-url.duckdb"
    result = _cli("status", env={"ROBOFY_WAREHOUSE_URL": f"duckdb:///{missing}"})
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert not missing.parent.exists()  # a command that only reads creates nothing


def test_the_warehouse_option_names_the_warehouse_and_duckdb_wins_over_the_variable(
    tmp_path: Path,
) -> None:
    by_option = tmp_path / "option.duckdb"
    result = _cli("status", "--warehouse", f"duckdb:///{by_option}")
    assert result.returncode == 2
    assert str(by_option) in result.stderr
    # --duckdb names the file, whatever ROBOFY_WAREHOUSE_URL says
    by_path = tmp_path / "path.duckdb"
    env = {"ROBOFY_WAREHOUSE_URL": "postgresql://robofy:pw-1@127.0.0.1:9/robofy"}
    result = _cli("status", "--duckdb", str(by_path), env=env)
    assert result.returncode == 2
    assert str(by_path) in result.stderr
    both = _cli("status", "--duckdb", str(by_path), "--warehouse", f"duckdb:///{by_option}")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


# In-process: the options and the demo's simulator reach the run as values, so the command
# leaves the environment of the process that called it exactly as it found it.


def test_options_override_settings_without_writing_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robofy_etl.cli import main

    before = dict(os.environ)
    missing = tmp_path / "elsewhere.duckdb"
    assert main(["status", "--duckdb", str(missing), "--base-url", "http://127.0.0.1:9"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["status", "--base-url", "ftp://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("robofy-etl: ROBOFY_BASE_URL must")
    assert dict(os.environ) == before


@pytest.mark.slow
def test_demo_hands_the_simulator_to_the_run_without_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key and no URL in the environment: the demo must pass the simulator's to Dagster."""
    from robofy_etl.cli import main

    for name in ("ROBOFY_API_KEY", "ROBOFY_BASE_URL", "ROBOFY_DUCKDB_PATH", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    db = tmp_path / "demo.duckdb"
    assert main(["demo", "--scale", "tiny", "--duckdb", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Checks: " in out
    assert "failed" not in out
    assert dict(os.environ) == before
    assert (tmp_path / "demo.read.duckdb").exists()
