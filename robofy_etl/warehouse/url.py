"""Which warehouse to use: ``ROBOFY_WAREHOUSE_URL``, a SQLAlchemy URL, parsed and checked once.

Accepted forms:

- unset or empty: the DuckDB file ``ROBOFY_DUCKDB_PATH`` (the default, as before);
- ``duckdb:///relative/path.duckdb`` or ``duckdb:////absolute/path.duckdb`` (SQLAlchemy's
  file-URL convention, as for SQLite: three slashes then the path);
- ``postgresql+psycopg://user:password@host:port/database`` (PostgreSQL 13+). A bare
  ``postgresql://`` (or ``postgres://``) means psycopg 3, SQLAlchemy 2.1's default, and is
  normalised to ``postgresql+psycopg``; ``+psycopg2`` and other drivers are refused, since the
  bulk load uses psycopg 3's ``COPY``.

The password never leaves this module in text form except through ``WarehouseURL.secret()``,
which connecting code calls: ``str()``, ``repr()`` and every error show ``***`` instead
(SQLAlchemy's ``render_as_string(hide_password=True)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from robofy_etl.warehouse.errors import WarehouseError

__all__ = [
    "PG_DRIVER",
    "URL_ENV",
    "WarehouseURL",
    "WarehouseURLError",
    "parse_warehouse_url",
]

URL_ENV = "ROBOFY_WAREHOUSE_URL"
PG_DRIVER = "postgresql+psycopg"
_EXAMPLES = (
    "duckdb:///data/robofy.duckdb, duckdb:////srv/robofy.duckdb or "
    "postgresql+psycopg://user:password@host:5432/database"
)
# `scheme://user:password@` (or `scheme://user@`): what an error may show of an unparsable URL.
_SCHEME = re.compile(r"^\s*(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")

Backend = Literal["duckdb", "postgresql"]


class WarehouseURLError(WarehouseError):
    """``ROBOFY_WAREHOUSE_URL`` names no warehouse robofy-etl can use; the message says why,
    with the password (if any) replaced by ``***``."""


@dataclass(frozen=True)
class WarehouseURL:
    """A checked warehouse URL.

    Attributes:
        backend: ``duckdb`` or ``postgresql``.
        url: the SQLAlchemy URL (driver normalised to ``postgresql+psycopg``); its own
            ``str()`` and ``repr()`` hide the password too.
        path: the DuckDB file (``duckdb`` only), as given (relative to the working directory).
    """

    backend: Backend
    url: sqlalchemy.URL = field(repr=False)
    path: Path | None = None

    @property
    def redacted(self) -> str:
        """The URL with ``***`` for the password: the only form for logs, errors, metadata."""
        return self.url.render_as_string(hide_password=True)

    def secret(self) -> str:
        """The full URL, password included: for connecting only, never for printing."""
        return self.url.render_as_string(hide_password=False)

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"WarehouseURL({self.redacted!r})"


def parse_warehouse_url(
    raw: str | None, *, duckdb_path: str | Path = "data/robofy.duckdb", variable: str = URL_ENV
) -> WarehouseURL:
    """Parse and check a warehouse URL; unset or empty means the DuckDB file ``duckdb_path``.

    Args:
        raw: the URL as the user wrote it, or None.
        duckdb_path: the DuckDB file used when ``raw`` is empty (``ROBOFY_DUCKDB_PATH``).
        variable: the setting's name, for error messages.

    Raises:
        WarehouseURLError: naming ``variable``, the accepted forms and what is wrong, never
            the password.
    """
    if raw is None or not raw.strip():
        path = Path(duckdb_path)
        return WarehouseURL("duckdb", sqlalchemy.URL.create("duckdb", database=str(path)), path)
    text = raw.strip()
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        # SQLAlchemy's messages may quote the URL, password and all: say it in our words.
        match = _SCHEME.match(text)
        shown = f"a {match['scheme']}:// URL that" if match else "a value that"
        raise WarehouseURLError(
            f"{variable} must be a SQLAlchemy URL such as {_EXAMPLES}; got {shown} cannot be "
            "parsed (check the port is a number and special characters in the password are "
            "percent-encoded, e.g. @ as %40)"
        ) from None
    shown = url.render_as_string(hide_password=True)
    backend, _, driver = url.drivername.partition("+")
    if backend == "duckdb":
        return _duckdb(url, shown, variable)
    if backend in ("postgresql", "postgres"):
        return _postgresql(url, driver, shown, variable)
    raise WarehouseURLError(
        f"{variable} must start with duckdb:/// or postgresql+psycopg:// (such as {_EXAMPLES}), "
        f"got {shown}"
    )


def _duckdb(url: sqlalchemy.URL, shown: str, variable: str) -> WarehouseURL:
    if url.username or url.password or url.host or url.port or url.query:
        raise WarehouseURLError(
            f"{variable}: a DuckDB URL is a file path only, duckdb:///relative/path.duckdb or "
            f"duckdb:////absolute/path.duckdb (no user, host, port or query), got {shown}"
        )
    if not url.database or url.database == ":memory:":
        raise WarehouseURLError(
            f"{variable}: a DuckDB URL must name the warehouse file, such as "
            f"duckdb:///data/robofy.duckdb, got {shown}"
        )
    path = Path(url.database)
    return WarehouseURL("duckdb", url, path)


def _postgresql(url: sqlalchemy.URL, driver: str, shown: str, variable: str) -> WarehouseURL:
    if driver not in ("", "psycopg"):
        raise WarehouseURLError(
            f"{variable}: the PostgreSQL warehouse needs the psycopg (3) driver, whose COPY the "
            f"bulk load uses; got +{driver} in {shown}: write postgresql+psycopg:// "
            "(or postgresql://, which means psycopg 3)"
        )
    if not url.database:
        raise WarehouseURLError(
            f"{variable}: name the database, as in "
            f"postgresql+psycopg://user:password@host:5432/database, got {shown}"
        )
    return WarehouseURL("postgresql", url.set(drivername=PG_DRIVER))
