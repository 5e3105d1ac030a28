"""robofy-etl works from a built wheel, not only from its checkout.

The SQL models are package data (``robofy_etl/sql``, loaded with importlib.resources). This test
builds the sdist and the wheel from the repository, installs the wheel into a fresh virtual
environment with the pinned dependencies, and runs ``robofy-etl sync`` from an unrelated
directory against the simulator. Before the models were package data, every sync from an
installed wheel failed with ``SQL model folder not found: .../site-packages/sql``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from robofy_etl.simulator import Simulator, SimulatorConfig, serve
from robofy_etl.warehouse import models

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SIM_END = datetime(2026, 10, 15, 6, 0)
DAYS = (date(2026, 10, 14), date(2026, 10, 15))  # two days keep the install test short


def _uv(*args: str, cwd: Path) -> None:
    """Runs uv (installed in the development venv by ``make install``) and fails with its output."""
    done = subprocess.run(
        [sys.executable, "-m", "uv", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding robofy-etl installed from its wheel; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _uv("build", "--quiet", "--out-dir", str(dist), str(REPO), cwd=root)
    (wheel,) = dist.glob("robofy_etl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("robofy_etl/sql/")}
    in_repo = {f"robofy_etl/sql/{p.relative_to(REPO / 'sql')}" for p in REPO.glob("sql/**/*.sql")}
    assert shipped == in_repo
    venv = root / "venv"
    _uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=root)
    _uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(venv / "bin" / "python"),
        "--compile-bytecode",
        "-c",
        str(REPO / "constraints.txt"),
        str(wheel),
        cwd=root,
    )
    return venv / "bin"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with serve(SimulatorConfig(scale="tiny", seed=7, end=SIM_END)) as simulator:
        yield simulator


def _clean_env(tmp_path: Path, sim: Simulator) -> dict[str, str]:
    """The caller's environment without anything pointing at the checkout or its settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ROBOFY_", "PYTHON", "VIRTUAL_ENV", "DAGSTER_"))
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(
        DAGSTER_HOME=str(home),
        ROBOFY_API_KEY=sim.api_key,
        ROBOFY_START_DATE="2026-09-01",
        ROBOFY_RETRY_DELAY_S="0.01",
    )
    return env


def test_installed_wheel_syncs_from_another_directory(
    installed: Path, sim: Simulator, tmp_path: Path
) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env(tmp_path, sim)

    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import robofy_etl.warehouse.models as m; print(m.SQL_DIR)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    sql_dir = Path(where.stdout.strip())
    assert sql_dir.is_relative_to(installed.parent), sql_dir  # the venv, not the checkout
    assert sql_dir.parts[-2:] == ("robofy_etl", "sql")

    db = work / "robofy.duckdb"
    done = subprocess.run(
        [
            str(installed / "robofy-etl"),
            "sync",
            "--start",
            DAYS[0].isoformat(),
            "--end",
            DAYS[1].isoformat(),
            "--base-url",
            sim.base_url,
            "--duckdb",
            str(db),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"sync failed:\n{done.stdout}\n{done.stderr}"

    with duckdb.connect(str(db), read_only=True) as conn:
        marts = {
            name
            for (name,) in conn.execute(
                "select table_name from duckdb_tables() where schema_name = 'marts'"
            ).fetchall()
        }
        assert marts == {m.relation for m in models.discover() if m.schema == "marts"}
        (sessions,) = conn.execute("select count(*) from marts.sessions").fetchone() or (0,)
        (messages,) = conn.execute("select count(*) from marts.messages").fetchone() or (0,)
    assert sessions > 0
    assert messages > 0
