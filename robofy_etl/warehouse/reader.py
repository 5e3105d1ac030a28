"""One way to run a read query on either back end: ``Reader.rows(sql, params)``.

The data-quality queries (``quality.py``) are written once, in SQL both DuckDB and PostgreSQL
accept, with named parameters spelled ``:name`` (SQLAlchemy's ``text()`` style). A ``Reader``
runs such a query on an open connection and returns plain tuples:

- ``DuckDBReader`` wraps a ``duckdb.DuckDBPyConnection`` and rewrites ``:name`` to DuckDB's
  ``$name`` (with SQLAlchemy's own rule, so ``::`` casts are left alone), binding only the
  parameters the query names;
- ``AlchemyReader`` wraps a ``sqlalchemy.Connection`` (PostgreSQL through psycopg 3).

``as_reader`` picks the one for a connection. A parameter is always bound, never spliced into
the SQL text; ``:word`` inside a string literal would be read as a parameter, so the queries
keep such text out of literals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import duckdb
import sqlalchemy as sa

__all__ = ["AlchemyReader", "DuckDBReader", "Reader", "as_reader"]

# A bind parameter, as sqlalchemy.sql.elements.TextClause finds it: not after a colon, a word
# character or a backslash, and not followed by a colon.
_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


@runtime_checkable
class Reader(Protocol):
    """Runs one read query with ``:name`` parameters and returns its rows as tuples."""

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...


class DuckDBReader:
    """A ``Reader`` on a DuckDB connection."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        names = set(_PARAM.findall(sql))
        if not names:
            return self.conn.execute(sql).fetchall()
        # DuckDB refuses a parameter the query does not use; SQLAlchemy ignores it.
        bound = {name: value for name, value in (params or {}).items() if name in names}
        return self.conn.execute(_PARAM.sub(r"$\1", sql), bound).fetchall()


class AlchemyReader:
    """A ``Reader`` on a SQLAlchemy connection (PostgreSQL)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(sa.text(sql), dict(params or {}))]


def as_reader(conn: Reader | duckdb.DuckDBPyConnection | sa.Connection) -> Reader:
    """The ``Reader`` of ``conn`` (``conn`` itself if it already is one)."""
    if isinstance(conn, duckdb.DuckDBPyConnection):
        return DuckDBReader(conn)
    if isinstance(conn, sa.Connection):
        return AlchemyReader(conn)
    return conn
