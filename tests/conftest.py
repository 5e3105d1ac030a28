"""Fixtures shared by every test folder: a throwaway PostgreSQL cluster (tests/pg.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy

from tests.pg import PgCluster, find_bin_dir, pg_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole session, stopped and deleted at its end.

    Skipped where no server binaries are installed; in CI (``CI`` set) that is a failure
    instead, so the PostgreSQL tests cannot silently stop running there.
    """
    if find_bin_dir() is None:
        reason = (
            "PostgreSQL server binaries not found (apt-get install postgresql, or set "
            "ROBOFY_TEST_PG_BIN to the folder holding initdb and postgres)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PgCluster) -> Iterator[sqlalchemy.URL]:
    """A new empty database for one test (``postgresql+psycopg://``), dropped afterwards.

    ``str(pg_url)`` hides the password; ``pg_url.render_as_string(hide_password=False)`` is
    the full URL, for an environment variable.
    """
    name = f"test_{secrets.token_hex(6)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)
