"""Settings: every value is checked against a sane range at start-up, and a bad one names itself.

Issue 8: ``ROBOFY_TIMEOUT_S=inf`` was accepted (a request could then wait forever), as were
``nan``, ``1e9``-style typos and a base URL on port 99999. Each must fail before anything runs,
naming the variable and what it accepts.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from robofy_etl.settings import (
    Settings,
    SettingsError,
    check_api_key,
    env_example,
    settings_table,
)

# variable -> (values that must fail, the allowed range as the message states it)
BAD_NUMBERS: dict[str, tuple[list[str], str]] = {
    "ROBOFY_TIMEOUT_S": (
        ["inf", "-inf", "nan", "NaN", "0", "-1", "-0.5", "601", "1e9", "", "30s", "thirty"],
        "0 < value <= 600",
    ),
    "ROBOFY_MAX_IN_FLIGHT": (
        ["0", "-3", "257", "1000000000", "inf", "nan", "1.5", "1e3", "", "many"],
        "from 1 to 256",
    ),
    "ROBOFY_MAX_RPS": (["inf", "nan", "-1", "10001", "1e9", "fast"], "0 < value <= 10000"),
    "ROBOFY_MAX_ATTEMPTS": (["0", "-1", "21", "1e9", "inf", "nan", "2.5", ""], "from 1 to 20"),
    "ROBOFY_RETRY_DELAY_S": (["0", "-0.1", "inf", "nan", "61", "1e9", ""], "0 < value <= 60"),
    "ROBOFY_LOCK_TIMEOUT_S": (
        ["0", "-1", "inf", "nan", "86401", "1e9", ""],
        "0 < value <= 86400",
    ),
    "ROBOFY_LOOKBACK_DAYS": (["-1", "367", "1000000000", "inf", "nan", "1.5", ""], "0 to 366"),
    "ROBOFY_DUCKDB_MEMORY_LIMIT": (
        ["0MB", "0", "1MB", "15MB", "0.5MB", "5TB", "1000000TB", "inf", "nanGB", "-1GB", "lots"],
        "from 16MB to 4TB",
    ),
    "ROBOFY_START_DATE": (["0001-01-01", "1999-12-31", "2100-01-01", "yesterday"], "2000-01-01"),
}


@pytest.mark.parametrize(
    ("variable", "value"),
    [(variable, value) for variable, (values, _) in BAD_NUMBERS.items() for value in values],
)
def test_out_of_range_numbers_fail_naming_the_variable_and_the_range(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(variable)
    assert BAD_NUMBERS[variable][1] in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("ROBOFY_TIMEOUT_S", "0.5", "timeout_s", 0.5),
        ("ROBOFY_TIMEOUT_S", "600", "timeout_s", 600.0),
        ("ROBOFY_MAX_IN_FLIGHT", "1", "max_in_flight", 1),
        ("ROBOFY_MAX_IN_FLIGHT", " 256 ", "max_in_flight", 256),
        ("ROBOFY_MAX_RPS", "", "max_rps", None),
        ("ROBOFY_MAX_RPS", "0", "max_rps", None),
        ("ROBOFY_MAX_RPS", "off", "max_rps", None),
        ("ROBOFY_MAX_RPS", "2.5", "max_rps", 2.5),
        ("ROBOFY_MAX_RPS", "10000", "max_rps", 10000.0),
        ("ROBOFY_MAX_ATTEMPTS", "1", "max_attempts", 1),
        ("ROBOFY_MAX_ATTEMPTS", "20", "max_attempts", 20),
        ("ROBOFY_RETRY_DELAY_S", "0.01", "retry_delay_s", 0.01),
        ("ROBOFY_LOCK_TIMEOUT_S", "1", "lock_timeout_s", 1.0),
        ("ROBOFY_LOCK_TIMEOUT_S", "86400", "lock_timeout_s", 86400.0),
        ("ROBOFY_LOOKBACK_DAYS", "0", "lookback_days", 0),
        ("ROBOFY_LOOKBACK_DAYS", "366", "lookback_days", 366),
        ("ROBOFY_DUCKDB_MEMORY_LIMIT", "16MB", "duckdb_memory_limit", "16MB"),
        ("ROBOFY_DUCKDB_MEMORY_LIMIT", "1.5GiB", "duckdb_memory_limit", "1.5GiB"),
        ("ROBOFY_DUCKDB_MEMORY_LIMIT", "4TB", "duckdb_memory_limit", "4TB"),
        ("ROBOFY_START_DATE", "2026-09-01", "start_date", date(2026, 9, 1)),
        ("ROBOFY_PUBLISH_STORAGE_VERSION", " v1.0.0 ", "publish_storage_version", "v1.0.0"),
        ("ROBOFY_PUBLISH_STORAGE_VERSION", "LATEST", "publish_storage_version", "latest"),
    ],
)
def test_values_in_range_are_accepted(
    variable: str, value: str, field: str, expected: object
) -> None:
    assert getattr(Settings.from_env({variable: value}), field) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://agents.robofy.ai:99999", "port"),
        ("https://agents.robofy.ai:0", "port"),
        ("https://agents.robofy.ai:-1", "port"),
        ("https://agents.robofy.ai:http", "port"),
        ("http://127.0.0.1:", "port"),
        ("ftp://agents.robofy.ai", "http:// or https://"),
        ("agents.robofy.ai", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://", "no host"),
        ("http://:8080", "no host"),
        ("https:///v1", "no host"),
        ("https://user:pw@agents.robofy.ai", "ROBOFY_API_KEY"),
        ("https://agents.robofy.ai/?key=1", "no query"),
        ("https://agents.robofy.ai/#top", "no query"),
        ("https://agents robofy.ai", "no query, fragment or spaces"),
    ],
)
def test_bad_base_urls_fail_naming_the_variable(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ROBOFY_BASE_URL": url})
    message = str(caught.value)
    assert message.startswith("ROBOFY_BASE_URL")
    assert problem in message
    assert "pw@" not in message  # never echo a password


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://agents.robofy.ai", "https://agents.robofy.ai"),
        ("https://agents.robofy.ai/", "https://agents.robofy.ai"),
        (" http://127.0.0.1:8080 ", "http://127.0.0.1:8080"),
        ("http://localhost:65535/robofy/", "http://localhost:65535/robofy"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]", "http://[::1]"),
    ],
)
def test_good_base_urls_are_kept(url: str, expected: str) -> None:
    assert Settings.from_env({"ROBOFY_BASE_URL": url}).base_url == expected


def test_the_defaults_are_in_range() -> None:
    settings = Settings.from_env({})
    assert settings.timeout_s == 30.0
    assert settings.max_in_flight == 16
    assert settings.max_rps is None
    assert settings.duckdb_memory_limit == "160MB"
    assert settings.publish_storage_version == "v1.4.0"


@pytest.mark.parametrize("value", ["1.4.0", "v1.4", "v1.4.0.1", "v1.4.x", "newest", ""])
def test_a_malformed_publish_storage_version_fails_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ROBOFY_PUBLISH_STORAGE_VERSION": value})
    message = str(caught.value)
    assert message.startswith("ROBOFY_PUBLISH_STORAGE_VERSION")
    assert "such as v1.4.0" in message
    assert "'latest'" in message
    assert repr(value) in message


def test_the_publish_storage_version_reaches_the_warehouse(tmp_path: Path) -> None:
    from robofy_etl.defs.assembly import build_definitions

    settings = Settings.from_env(
        {
            "ROBOFY_PUBLISH_STORAGE_VERSION": "v1.0.0",
            "ROBOFY_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        }
    )
    resource = build_definitions(settings).resources["warehouse"]

    assert resource.get_warehouse().publish_storage_version == "v1.0.0"


def test_overrides_win_over_the_environment_and_are_checked_the_same_way() -> None:
    environ = {"ROBOFY_BASE_URL": "https://agents.robofy.ai", "ROBOFY_MAX_IN_FLIGHT": "4"}
    settings = Settings.from_env(environ, overrides={"ROBOFY_BASE_URL": "http://127.0.0.1:9/"})
    assert settings.base_url == "http://127.0.0.1:9"
    assert settings.max_in_flight == 4
    with pytest.raises(SettingsError, match=r"^ROBOFY_BASE_URL must"):
        Settings.from_env(environ, overrides={"ROBOFY_BASE_URL": "127.0.0.1:9"})
    with pytest.raises(SettingsError, match="not a setting: ROBOFY_BASE_ULR"):
        Settings.from_env(environ, overrides={"ROBOFY_BASE_ULR": "http://127.0.0.1:9"})


def test_settings_round_trip_through_their_variables() -> None:
    """`as_env()` is how the CLI's settings reach Dagster's resources: nothing may change."""
    settings = Settings.from_env(
        {
            "ROBOFY_MAX_RPS": "2.5",
            "ROBOFY_TIMEOUT_S": "0.1",
            "ROBOFY_START_DATE": "2026-09-01",
            "ROBOFY_STATS_PARAMS": "pid,cid,from,to",
            "ROBOFY_DUCKDB_MEMORY_LIMIT": "1.5 GiB",
            "ROBOFY_PUBLISH_PATH": "elsewhere.duckdb",
        }
    )
    assert Settings.from_env(settings.as_env()) == settings
    assert Settings.from_env(Settings.from_env({}).as_env()) == Settings.from_env({})
    assert "ROBOFY_API_KEY" not in settings.as_env()


@pytest.mark.parametrize(
    "text", ["160MB", "1.5 GiB", "16000000B", "2gb", "512MiB", "2 G", "160", "MB", "1,5GB"]
)
def test_the_warehouse_and_the_settings_read_sizes_alike(text: str, tmp_path: Path) -> None:
    """One grammar: a memory limit the settings accept, the warehouse accepts, and vice versa."""
    from robofy_etl.warehouse import Warehouse, WarehouseError

    try:
        Settings.from_env({"ROBOFY_DUCKDB_MEMORY_LIMIT": text})
        settings_accept = True
    except SettingsError:
        settings_accept = False
    try:
        Warehouse(tmp_path / "w.duckdb", memory_limit=text)
        warehouse_accepts = True
    except WarehouseError:
        warehouse_accepts = False
    assert settings_accept == warehouse_accepts


@pytest.mark.parametrize("key", ["", "  ", "abc def", "abc\n", "ключ"])
def test_a_bad_api_key_is_named_and_never_echoed(key: str) -> None:
    with pytest.raises(SettingsError, match=r"^ROBOFY_API_KEY ") as caught:
        check_api_key(key)
    assert not key.strip() or key.strip() not in str(caught.value)


def test_the_readme_and_env_example_list_the_settings_as_declared() -> None:
    """Both are generated from the declarations (`make docs`); a new setting shows up in both."""
    repo = Path(__file__).resolve().parents[1]
    fix = "out of date: run `.venv/bin/python scripts/gen_settings_doc.py`"
    assert settings_table() in (repo / "README.md").read_text(encoding="utf-8"), fix
    assert (repo / ".env.example").read_text(encoding="utf-8") == env_example(), fix


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "urllib3"), ("urllib3", "urllib3"), ("HTTPX", "httpx"), ("stdlib", "urllib3")],
)
def test_http_transport_choices_and_the_removed_stdlib_one(value: str, expected: str) -> None:
    """Issue 10: 'stdlib' named the hand-written transport urllib3 replaced; an old .env that
    still says so gets the new default, not a start-up error."""
    env = {"ROBOFY_HTTP_TRANSPORT": value} if value else {}
    assert Settings.from_env(env).http_transport == expected
