"""`dg`, Dagster's project CLI, recognises the repository through ``[tool.dg]`` in pyproject.toml.

``dg list defs`` runs in a subprocess from the repository root, as a developer would run it, and
must list exactly what the Definitions object of ``robofy_etl.definitions`` holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robofy_etl.definitions import defs

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).with_name("dg")


def _dg(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert DG.exists(), f"{DG} is missing: dagster-dg-cli is in the dev extra; run make install"
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROBOFY_")}
    env.update(DAGSTER_HOME=str(home), VIRTUAL_ENV=str(DG.parent.parent))
    done = subprocess.run(
        [str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"dg {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_dg_lists_every_asset_and_check_of_the_definitions(tmp_path: Path) -> None:
    listed = json.loads(_dg("list", "defs", "--json", tmp_path=tmp_path).stdout)
    graph = defs.resolve_asset_graph()
    assert {a["asset_key"] for a in listed["assets"]} == {
        key.to_user_string() for key in graph.get_all_asset_keys()
    }
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys
    }
    assert "raw/robofy__inbox_sessions" in {a["asset_key"] for a in listed["assets"]}


@pytest.mark.parametrize("what", ["defs", "toml"])
def test_dg_check_passes(what: str, tmp_path: Path) -> None:
    _dg("check", what, tmp_path=tmp_path)
