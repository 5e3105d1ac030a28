"""``PgWarehouse`` and ``PgTransaction``: the ``Warehouse`` and ``Transaction`` of PostgreSQL.

The same methods, arguments and results as the DuckDB classes in ``warehouse/duckdb.py``, so
the sync can be handed either. Differences that follow from PostgreSQL being a server:

- connections come from a SQLAlchemy pool (psycopg 3) instead of a locked file: no lock wait,
  no process lock; writers of the same slice take turns through advisory locks (``locks.py``),
  writers of different slices run at once;
- ``publish()`` copies nothing: readers query the marts directly (MVCC gives them the last
  committed state), so it only says so and returns None;
- the URL's password is only ever shown as ``***``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any, ClassVar

import sqlalchemy as sa

from robofy_etl.warehouse.errors import WarehouseError
from robofy_etl.warehouse.ledger import Outstanding
from robofy_etl.warehouse.models import BuildResult, Model
from robofy_etl.warehouse.pg import load, state
from robofy_etl.warehouse.pg.schema import create_all
from robofy_etl.warehouse.reads import Chatbot, StoredKey, StoredSession
from robofy_etl.warehouse.transaction import (
    BaseTransaction,
    LedgerFunctions,
    LoadFunctions,
    StateFunctions,
    utc_now,
)
from robofy_etl.warehouse.url import URL_ENV, WarehouseURL, parse_warehouse_url

__all__ = ["PgTransaction", "PgWarehouse"]

logger = logging.getLogger(__name__)


class PgTransaction(BaseTransaction[sa.Connection]):
    """PostgreSQL's load transaction, on one pooled connection (``transaction.BaseTransaction``:
    the same methods as DuckDB's, over ``pg/load.py`` and ``pg/state.py``)."""

    _load: ClassVar[LoadFunctions] = load
    _state: ClassVar[StateFunctions] = state
    _ledger: ClassVar[LedgerFunctions] = state


class PgWarehouse:
    """A PostgreSQL database holding the ``raw``, ``staging``, ``marts`` and ``meta`` schemas.

    Args:
        url: ``postgresql+psycopg://user:password@host:port/database`` (a string, a
            ``sqlalchemy.URL`` or a parsed ``WarehouseURL``).
        pool_size: connections kept open (a sync needs one per concurrent transaction).

    Raises:
        WarehouseURLError: if ``url`` is not a PostgreSQL URL for psycopg 3.
    """

    def __init__(self, url: str | sa.URL | WarehouseURL, pool_size: int = 5) -> None:
        if isinstance(url, sa.URL):
            url = url.render_as_string(hide_password=False)
        parsed = url if isinstance(url, WarehouseURL) else parse_warehouse_url(url)
        if parsed.backend != "postgresql":
            raise WarehouseError(f"{URL_ENV}: not a PostgreSQL URL: {parsed.redacted}")
        self.url = parsed
        self._engine = sa.create_engine(
            parsed.url,
            pool_size=pool_size,
            pool_pre_ping=True,
            hide_parameters=True,  # values in error messages may hold personal data
            connect_args={"application_name": "robofy-etl", "options": "-c timezone=UTC"},
        )
        self._initialized = False

    def __repr__(self) -> str:
        return f"PgWarehouse({self.url.redacted!r})"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (its URL's ``str()`` hides the password)."""
        return self._engine

    def dispose(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[sa.Connection]:
        """A pooled connection, returned to the pool on exit (rolled back if left open).

        Args:
            read_only: its transactions are read-only (a write raises).

        Raises:
            WarehouseError: if the server cannot be reached or refuses the login; the message
                names the URL with its password hidden.
        """
        try:
            conn = self._engine.connect()
        except sa.exc.OperationalError as exc:
            detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise WarehouseError(
                f"cannot connect to the PostgreSQL warehouse {self.url.redacted} ({URL_ENV}): "
                f"{detail}"
            ) from None
        try:
            if read_only:
                conn = conn.execution_options(postgresql_readonly=True)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, run_id: str) -> Iterator[PgTransaction]:
        """One read-write transaction: COMMIT on success, ROLLBACK on error.

        Creates the schemas and tables first if this ``PgWarehouse`` has not done so yet.
        """
        with self._ready() as conn, conn.begin():
            yield PgTransaction(conn, run_id, utc_now())

    def initialize(self) -> None:
        """Create the schemas, raw and meta tables if they do not exist (idempotent)."""
        with self.connect() as conn:
            self._create_all(conn)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Nothing to hold: connections come from a pool (see ``WarehouseLike.hold``)."""
        yield

    @contextmanager
    def _ready(self) -> Iterator[sa.Connection]:
        """A pooled connection, the schemas and tables created first if this ``PgWarehouse``
        has not done so yet."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            yield conn

    def _create_all(self, conn: sa.Connection) -> None:
        with conn.begin():
            create_all(conn)
        self._initialized = True

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None:
        """Read the sync state of ``(stream, scope)`` on a connection of its own."""
        with self._ready() as conn:
            return state.get_state(conn, stream, scope)

    def session_watermarks(
        self,
        chatbot_ids: Sequence[str] | None,
        day_from: date | str,
        day_to: date | str,
    ) -> dict[tuple[str, str], tuple[str | None, str, str]]:
        """Stored sessions of a window (see ``Warehouse.session_watermarks``)."""
        with self._ready() as conn:
            return state.session_watermarks(conn, chatbot_ids, day_from, day_to)

    def active_project_ids(self) -> list[int]:
        """Every project not marked deleted."""
        with self._ready() as conn:
            return state.active_project_ids(conn)

    def active_chatbots(self) -> list[Chatbot]:
        """Every chatbot not marked deleted, by chatbot_id."""
        with self._ready() as conn:
            return state.active_chatbots(conn)

    def stored_sessions(
        self, chatbot_ids: Sequence[str], day_from: date, day_to: date
    ) -> dict[tuple[str, str], StoredSession]:
        """``(chatbot_id, session_id) -> StoredSession`` of a window (``session_watermarks``)."""
        return {
            key: StoredSession(*value)
            for key, value in self.session_watermarks(chatbot_ids, day_from, day_to).items()
        }

    def stored_keys(
        self,
        table: str,
        key_column: str,
        chatbot_ids: Sequence[str],
        day_from: date,
        day_to: date,
    ) -> list[StoredKey]:
        """The rows of ``raw.<table>`` in ``[day_from, day_to)``, for ``chatbot_ids``."""
        with self._ready() as conn:
            rows = state.stored_keys(
                conn, table, key_column, chatbot_ids, str(day_from), str(day_to)
            )
        return [StoredKey(*row) for row in rows]

    def outstanding(self, stream: str | None = None) -> list[Outstanding]:
        """The work (of ``stream``) earlier runs left undone, oldest first."""
        with self._ready() as conn:
            return state.outstanding(conn, stream)

    def build_models(
        self,
        models: Sequence[Model] | None = None,
        *,
        select: Iterable[str] | None = None,
        full_refresh: bool = False,
    ) -> list[BuildResult]:
        """Bring the SQL models up to date, incrementally, in one transaction (``pg/models.py``).

        Readers see the previous staging and mart tables until it commits, the new ones after.
        Loads run meanwhile: the build reads one snapshot and waits for none of them.

        Args:
            models: the models to consider; defaults to ``discover()``.
            select: relation names to build (rebuilt in full); defaults to all, incrementally.
            full_refresh: rebuild every selected model from everything.

        Raises:
            ModelError: if a model cannot be transpiled or its SQL fails (names the file).
            WarehouseError: if the server cannot be reached.
        """
        from robofy_etl.warehouse.pg import models as pg_models  # sqlglot: only when building

        with self._ready() as conn, pg_models.build_transaction(conn):
            return pg_models.build(conn, models, select=select, full_refresh=full_refresh)

    def publish(self, target: object = None) -> None:
        """Nothing to copy: on PostgreSQL, readers query the marts directly."""
        del target
        logger.info("%s: PostgreSQL marts are read directly; nothing to publish", self)
