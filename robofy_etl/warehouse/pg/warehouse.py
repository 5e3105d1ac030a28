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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from robofy_etl.warehouse.errors import WarehouseError
from robofy_etl.warehouse.interface import REPLACED_DEFAULT
from robofy_etl.warehouse.ledger import Outstanding
from robofy_etl.warehouse.load import LoadCounts, Rows, Slice
from robofy_etl.warehouse.models import BuildResult, Model
from robofy_etl.warehouse.pg import load, state
from robofy_etl.warehouse.pg.schema import create_all
from robofy_etl.warehouse.reads import Chatbot, StoredKey, StoredSession
from robofy_etl.warehouse.transaction import utc_now
from robofy_etl.warehouse.url import URL_ENV, WarehouseURL, parse_warehouse_url

__all__ = ["PgTransaction", "PgWarehouse"]

logger = logging.getLogger(__name__)


class PgTransaction:
    """One transaction on one pooled connection; every write of one load goes through it.

    Attributes:
        conn: the SQLAlchemy connection, for anything the helpers do not cover.
        run_id: the run that writes (stored in ``_run_id`` and ``meta.*``).
        loaded_at: one naive-UTC timestamp for every row this transaction writes.
    """

    def __init__(self, conn: sa.Connection, run_id: str, loaded_at: datetime) -> None:
        self.conn = conn
        self.run_id = run_id
        self.loaded_at = loaded_at

    def replace(
        self,
        table: str,
        rows: Rows,
        slice: Slice,
        removal_reason: str = REPLACED_DEFAULT,
    ) -> LoadCounts:
        """Make ``slice`` of ``raw.<table>`` exactly ``rows`` (see ``pg.load.replace_slice``)."""
        return load.replace_slice(
            self.conn,
            table,
            rows,
            slice,
            loaded_at=self.loaded_at,
            run_id=self.run_id,
            removal_reason=removal_reason,
        )

    def merge_snapshot(
        self, table: str, rows: Rows, within: Mapping[str, Sequence[Any]] | None = None
    ) -> LoadCounts:
        """Merge a snapshot, soft-deleting vanished keys (see ``pg.load.merge_snapshot``)."""
        return load.merge_snapshot(
            self.conn, table, rows, within, loaded_at=self.loaded_at, run_id=self.run_id
        )

    def count(self, table: str, slice: Slice) -> int:
        """Rows of ``raw.<table>`` inside ``slice``, as this transaction sees them."""
        return load.count_slice(self.conn, table, slice)

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None:
        """Read sync state as this transaction sees it."""
        return state.get_state(self.conn, stream, scope)

    def set_state(self, stream: str, scope: str, value: Mapping[str, Any]) -> None:
        """Write sync state; it commits or rolls back together with the data."""
        state.set_state(self.conn, stream, scope, value, run_id=self.run_id, now=self.loaded_at)

    def record_drift(
        self,
        stream: str,
        added: Mapping[str, Any] | Sequence[str] | set[str] = (),
        missing: Mapping[str, Any] | Sequence[str] | set[str] = (),
    ) -> int:
        """Record fields added to or missing from a stream's records (``meta.schema_drift``)."""
        return state.record_drift(
            self.conn, stream, added=added, missing=missing, run_id=self.run_id, now=self.loaded_at
        )

    def quarantine(
        self, stream: str, items: Sequence[tuple[str, Any]], slice: str | None = None
    ) -> int:
        """Store malformed records with their reason (``meta.quarantine``)."""
        return state.quarantine(
            self.conn, stream, items, slice_label=slice, run_id=self.run_id, now=self.loaded_at
        )

    def audit(
        self,
        stream: str,
        slice: str,
        counts: LoadCounts,
        api_requests: int | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Append one ``meta.load_audit`` row for a load."""
        state.audit(
            self.conn,
            stream,
            slice_label=slice,
            counts=counts,
            api_requests=api_requests,
            started_at=started_at,
            run_id=self.run_id,
            finished_at=utc_now(),
        )

    # -- the ledger: what did not load, and what a scan missed ----------------------------------

    def outstanding(self, stream: str | None = None) -> list[Outstanding]:
        """Everything outstanding (of ``stream``), oldest first, as this transaction sees it."""
        return state.outstanding(self.conn, stream)

    def mark_outstanding(
        self, stream: str, items: Sequence[tuple[str, str, str | None, str]]
    ) -> None:
        """Record ``(chatbot_id, item, slice, reason)`` as outstanding (attempts counted up)."""
        state.mark_outstanding(self.conn, stream, items, run_id=self.run_id, now=self.loaded_at)

    def clear_outstanding(self, stream: str, items: Iterable[tuple[str, str]]) -> None:
        """Forget ``(chatbot_id, item)`` pairs that have now loaded completely."""
        state.clear_outstanding(self.conn, stream, items)

    def count_misses(
        self, stream: str, missed: Sequence[tuple[str, str | None, str | None]]
    ) -> Mapping[str, int]:
        """Count one more miss for each ``(key, chatbot_id, slice)``; key -> misses in a row."""
        return state.count_misses(self.conn, stream, missed, run_id=self.run_id, now=self.loaded_at)

    def clear_missing(self, stream: str, keys: Iterable[str]) -> None:
        """Forget the misses of keys that were listed again (or removed)."""
        state.clear_missing(self.conn, stream, keys)


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
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            with conn.begin():
                yield PgTransaction(conn, run_id, utc_now())

    def initialize(self) -> None:
        """Create the schemas, raw and meta tables if they do not exist (idempotent)."""
        with self.connect() as conn:
            self._create_all(conn)

    def _create_all(self, conn: sa.Connection) -> None:
        with conn.begin():
            create_all(conn)
        self._initialized = True

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None:
        """Read the sync state of ``(stream, scope)`` on a connection of its own."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            return state.get_state(conn, stream, scope)

    def session_watermarks(
        self,
        chatbot_ids: Sequence[str] | None,
        day_from: date | str,
        day_to: date | str,
    ) -> dict[tuple[str, str], tuple[str | None, str, str]]:
        """Stored sessions of a window (see ``Warehouse.session_watermarks``)."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            return state.session_watermarks(conn, chatbot_ids, day_from, day_to)

    def active_project_ids(self) -> list[int]:
        """Every project not marked deleted."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            return state.active_project_ids(conn)

    def active_chatbots(self) -> list[Chatbot]:
        """Every chatbot not marked deleted, by chatbot_id."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
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
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            rows = state.stored_keys(
                conn, table, key_column, chatbot_ids, str(day_from), str(day_to)
            )
        return [StoredKey(*row) for row in rows]

    def outstanding(self, stream: str | None = None) -> list[Outstanding]:
        """The work (of ``stream``) earlier runs left undone, oldest first."""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
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

        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            with pg_models.build_transaction(conn):
                return pg_models.build(conn, models, select=select, full_refresh=full_refresh)

    def publish(self, target: object = None) -> None:
        """Nothing to copy: on PostgreSQL, readers query the marts directly."""
        del target
        logger.info("%s: PostgreSQL marts are read directly; nothing to publish", self)
