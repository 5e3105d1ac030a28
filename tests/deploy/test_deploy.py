"""The service recipe in deploy/, checked as far as a machine without Docker can.

Docker is not available where these tests run, so `docker compose up` is never exercised. What
can break silently instead is checked here: files that no longer parse, a compose file that
drifted from docs/deploy.md, a Dockerfile that installs something other than what `make install`
installs (and CI tested), a COPY of a file that moved, a workspace that points at the wrong
port, and a code-server command that does not start or does not serve our jobs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _yaml(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def _compose() -> dict[str, Any]:
    return _yaml("docker-compose.yml")


def _interpolate(text: str) -> str:
    """What compose makes of ${VAR:-default} (the default) and ${VAR:?error} ($VAR)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", text)
    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", r"$\1", text)


def _documented_services() -> dict[str, tuple[str, str]]:
    """docs/deploy.md's table: service -> (command cell, host port)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (ROOT / "docs" / "deploy.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].split("`")[1]] = (cells[1], cells[2].strip("`"))
    return rows


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _makefile_install() -> tuple[str, set[str]]:
    """The uv pip install line `make install` runs, and its extras."""
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS := (.+)$", makefile, re.MULTILINE)
    install = re.search(r"^\t\$\(BIN\)/uv pip install .+$", makefile, re.MULTILINE)
    assert extras, "Makefile: the EXTRAS variable moved"
    assert install, "Makefile: the uv pip install line moved"
    return install.group(0), set(extras.group(1).strip().split(","))


def test_every_deploy_file_parses() -> None:
    for name in ("dagster.yaml", "docker-compose.yml", "workspace.yaml"):
        assert isinstance(_yaml(name), dict), name
    assert _dockerfile_instructions()[0][0] == "FROM"


def test_the_services_and_their_commands_are_the_documented_ones() -> None:
    services = _compose()["services"]
    documented = _documented_services()
    assert set(services) == set(documented)
    for name, (cell, _) in documented.items():
        if "command" in services[name]:
            command = _interpolate(" ".join(services[name]["command"]))
            assert cell.split("`")[1] == command, name
        else:  # the image's own command
            assert f"`{services[name]['image']}`" in cell, name


def test_the_ports_bind_to_loopback_as_documented() -> None:
    services = _compose()["services"]
    for name, (_, port) in _documented_services().items():
        published = [_interpolate(p) for p in services[name].get("ports", [])]
        if port == "none":
            assert published == [], name
            continue
        assert [p.rsplit(":", 1)[0] for p in published] == [port], name
        assert port.startswith("127.0.0.1:"), name
        command = services[name].get("command", ["-p", "5432"])  # postgres: its default port
        assert published[0].rsplit(":", 1)[1] == command[command.index("-p") + 1], name


def test_the_instance_file_is_valid_dagster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://user:secret@db:5432/dagster")
    config, _ = dagster_instance_config(str(DEPLOY))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 1


def test_the_image_installs_what_make_install_installs_minus_dev_and_editable() -> None:
    make_line, make_extras = _makefile_install()
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    installs = [args for args in runs if "uv pip install" in args]
    assert len(installs) == 1
    install = installs[0]
    assert "-c constraints.txt" in install
    assert "-c constraints.txt" in make_line
    assert " -e " not in f" {install} "
    extras = re.search(r"'\.\[([^\]]*)\]'", install)
    assert extras is not None
    assert set(extras.group(1).split(",")) == make_extras - {"dev"}
    assert "--compile-bytecode" in install
    assert "--compile-bytecode" in make_line
    uv_make = re.search(r"uv==([\d.]+)", (ROOT / "Makefile").read_text())
    uv_image = [re.search(r"uv==([\d.]+)", args) for args in runs]
    assert uv_make
    assert [m.group(1) for m in uv_image if m] == [uv_make.group(1)]


def test_the_image_is_current_and_copies_files_that_exist() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    postgres = _compose()["services"]["postgres"]["image"]
    assert postgres in ("postgres:15", "postgres:16")
    for keyword, args in instructions:
        if keyword == "COPY":
            sources = shlex.split(args)[:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"


def test_dagster_url_names_psycopg2_and_the_postgres_service_login() -> None:
    compose = _compose()
    postgres = compose["services"]["postgres"]["environment"]
    for name in ("code", "webserver", "daemon"):
        url = compose["services"][name]["environment"]["DAGSTER_PG_URL"]
        expected = (
            f"postgresql+psycopg2://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{postgres['POSTGRES_DB']}"
        )
        assert url == expected, name
    assert _yaml("dagster.yaml")["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}


def _env_example() -> dict[str, str]:
    """deploy/.env.example: variable -> value, and ``#   NAME=value`` examples in comments."""
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            out.setdefault(match.group(1), match.group(2))
            if not line.startswith("#"):
                out[match.group(1)] = match.group(2)
    return out


def test_every_variable_the_compose_file_reads_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "docker-compose.yml").read_text()))
    assert used - set(_env_example()) == set()


def test_the_postgresql_warehouse_example_names_the_database_initdb_creates() -> None:
    """The code service passes ROBOFY_WAREHOUSE_URL on (empty: DuckDB on the volume); the
    example in .env.example is a psycopg 3 URL to the database deploy/initdb creates."""
    code = _compose()["services"]["code"]["environment"]
    assert _interpolate(code["ROBOFY_WAREHOUSE_URL"]) == ""
    example = next(
        line.split("=", 1)[1]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line.startswith("#") and "ROBOFY_WAREHOUSE_URL=postgresql" in line
    )
    created = re.findall(
        r"create database (\w+)",
        (DEPLOY / "initdb").joinpath("10-robofy-warehouse.sql").read_text(),
        re.IGNORECASE,
    )
    postgres = _compose()["services"]["postgres"]["environment"]
    assert example == (
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:<POSTGRES_PASSWORD>"
        f"@postgres:5432/{created[0]}"
    )
    from robofy_etl.warehouse.url import parse_warehouse_url

    parsed = parse_warehouse_url(example.replace("<POSTGRES_PASSWORD>", "secret"))
    assert parsed.backend == "postgresql"


def test_the_workspace_points_at_the_code_servers_port_and_module() -> None:
    (location,) = _yaml("workspace.yaml")["load_from"]
    server = location["grpc_server"]
    code = _compose()["services"][server["host"]]
    command = code["command"]
    assert command[command.index("-p") + 1] == str(server["port"])
    module = command[command.index("-m") + 1]
    assert module == "robofy_etl.definitions"
    assert importlib.util.find_spec(module) is not None
    health = code["healthcheck"]["test"]
    assert health[1:] == ["dagster", "api", "grpc-health-check", "-p", str(server["port"])]
    dagster_yaml = _yaml("dagster.yaml")
    assert dagster_yaml["telemetry"] == {"enabled": False}
    assert dagster_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert dagster_yaml["concurrency"]["pools"]["default_limit"] == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(port: int) -> bool:
    result = subprocess.run(
        [str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.slow
def test_the_code_server_command_starts_and_serves_our_jobs(tmp_path: Path) -> None:
    """Runs the `code` service's command (host and port changed to a free loopback port),
    then lists the jobs through deploy/workspace.yaml (its host changed to 127.0.0.1)."""
    command = list(_compose()["services"]["code"]["command"])
    port = _free_port()
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(port)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    workspace = _yaml("workspace.yaml")
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=port)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as server:
        try:
            deadline = time.monotonic() + 180
            while not _healthy(port):
                assert server.poll() is None, f"the code server exited: {server.stderr}"
                assert time.monotonic() < deadline, "the code server never became healthy"
                time.sleep(0.5)
            jobs = subprocess.run(
                [str(BIN / "dagster"), "job", "list", "-w", str(tmp_path / "workspace.yaml")],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert jobs.returncode == 0, jobs.stderr
            assert "robofy_sync" in jobs.stdout
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait()
    assert server.returncode == 0  # SIGTERM stops it cleanly (what `docker compose stop` sends)
