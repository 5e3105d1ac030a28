"""Fixtures of the PostgreSQL back end tests: an engine on a fresh database with the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from robofy_etl.warehouse.pg.schema import create_all


@pytest.fixture
def pg_engine(pg_url: sa.URL) -> Iterator[sa.Engine]:
    """An engine on a new database of the throwaway cluster, its tables created."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        create_all(conn)
    yield engine
    engine.dispose()
