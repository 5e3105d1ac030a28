"""ROBOFY_WAREHOUSE_URL: which warehouse, checked at start-up, and never a password in text.

A warehouse URL carries a database password; the only text form that may reach a log, an
error, Dagster metadata or a table is the redacted one (``***``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from robofy_etl.settings import Settings, SettingsError
from robofy_etl.warehouse.url import PG_DRIVER, WarehouseURLError, parse_warehouse_url

PASSWORD = "s3cr3t-Pa55word"  # a test value that must never be shown


def test_unset_or_empty_means_the_duckdb_file_of_robofy_duckdb_path() -> None:
    for raw in (None, "", "   "):
        parsed = parse_warehouse_url(raw, duckdb_path="some/where.duckdb")
        assert parsed.backend == "duckdb"
        assert parsed.path == Path("some/where.duckdb")
    settings = Settings.from_env({"ROBOFY_DUCKDB_PATH": "x/y.duckdb"})
    assert settings.warehouse_url == ""
    assert settings.warehouse.backend == "duckdb"
    assert settings.warehouse.path == Path("x/y.duckdb")


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("duckdb:///data/robofy.duckdb", Path("data/robofy.duckdb")),
        ("duckdb:////srv/robofy/wh.duckdb", Path("/srv/robofy/wh.duckdb")),
    ],
)
def test_duckdb_urls_give_relative_and_absolute_files(raw: str, path: Path) -> None:
    parsed = parse_warehouse_url(raw)
    assert (parsed.backend, parsed.path) == ("duckdb", path)


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgres"])
def test_postgresql_urls_are_normalised_to_psycopg_3(scheme: str) -> None:
    parsed = parse_warehouse_url(f"{scheme}://robofy:{PASSWORD}@db.internal:6543/warehouse")
    assert parsed.backend == "postgresql"
    assert parsed.url.drivername == PG_DRIVER
    assert (parsed.url.host, parsed.url.port, parsed.url.database) == (
        "db.internal",
        6543,
        "warehouse",
    )
    assert parsed.secret() == f"{PG_DRIVER}://robofy:{PASSWORD}@db.internal:6543/warehouse"


def test_a_password_never_shows_in_str_repr_or_the_settings_repr() -> None:
    raw = f"postgresql+psycopg://robofy:{PASSWORD}@localhost/wh"
    parsed = parse_warehouse_url(raw)
    for text in (str(parsed), repr(parsed), parsed.redacted, str(parsed.url), repr(parsed.url)):
        assert PASSWORD not in text
        assert "***" in text
    settings = Settings.from_env({"ROBOFY_WAREHOUSE_URL": raw})
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in repr(settings.warehouse)
    assert settings.warehouse.secret() == raw  # connecting still has it


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("postgresql+psycopg2://u:{pw}@h/db", "psycopg (3) driver"),
        ("postgresql+asyncpg://u:{pw}@h/db", "psycopg (3) driver"),
        ("postgresql+psycopg://u:{pw}@h", "name the database"),
        ("postgresql://u:{pw}@h:notaport/db", "cannot be parsed"),
        ("mysql://u:{pw}@h/db", "must start with duckdb:/// or postgresql+psycopg://"),
        ("http://u:{pw}@h/db", "must start with duckdb:/// or postgresql+psycopg://"),
        ("u:{pw}@h/db", "cannot be parsed"),
        ("duckdb://u:{pw}@host/x.duckdb", "a file path only"),
        ("duckdb:///", "must name the warehouse file"),
        ("duckdb:///:memory:", "must name the warehouse file"),
    ],
)
def test_bad_urls_fail_naming_the_variable_and_never_the_password(raw: str, says: str) -> None:
    text = raw.format(pw=PASSWORD)
    with pytest.raises(WarehouseURLError) as caught:
        parse_warehouse_url(text)
    message = str(caught.value)
    assert message.startswith("ROBOFY_WAREHOUSE_URL")
    assert says in message
    assert PASSWORD not in message
    assert caught.value.__cause__ is None  # no chained SQLAlchemy error quoting the URL
    with pytest.raises(SettingsError) as from_settings:
        Settings.from_env({"ROBOFY_WAREHOUSE_URL": text})
    assert str(from_settings.value).startswith("ROBOFY_WAREHOUSE_URL")
    assert PASSWORD not in str(from_settings.value)
    assert PASSWORD not in repr(from_settings.value)


def test_the_setting_round_trips_through_as_env() -> None:
    settings = Settings.from_env({"ROBOFY_WAREHOUSE_URL": f"postgresql://u:{PASSWORD}@h/db"})
    assert Settings.from_env(settings.as_env()) == settings
