"""One load transaction: the methods the sync writes through (``TransactionLike``).

``BaseTransaction`` holds them once for both back ends: each method delegates to the back end's
loading, state and ledger functions, which have the same signatures on both (``load.py``,
``state.py`` and ``ledger.py`` for DuckDB; ``pg/load.py`` and ``pg/state.py`` for PostgreSQL).
``Transaction`` is DuckDB's (``Warehouse.transaction()`` opens it on a locked connection),
``pg.warehouse.PgTransaction`` PostgreSQL's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import duckdb

from robofy_etl.warehouse import ledger, load, state
from robofy_etl.warehouse.interface import REPLACED_DEFAULT
from robofy_etl.warehouse.load import LoadCounts, Rows, Slice

__all__ = [
    "BaseTransaction",
    "LedgerFunctions",
    "LoadFunctions",
    "StateFunctions",
    "Transaction",
    "utc_now",
]


def utc_now() -> datetime:
    """The current time as a naive UTC datetime (the warehouse's TIMESTAMP convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


class LoadFunctions(Protocol):
    """A back end's slice loading (``load.py``, ``pg/load.py``)."""

    def replace_slice(
        self,
        conn: Any,
        table_name: str,
        rows: Rows,
        slc: Slice,
        *,
        loaded_at: datetime,
        run_id: str,
        removal_reason: str = ...,
    ) -> LoadCounts: ...

    def merge_snapshot(
        self,
        conn: Any,
        table_name: str,
        rows: Rows,
        within: Mapping[str, Sequence[Any]] | None = ...,
        *,
        loaded_at: datetime,
        run_id: str,
    ) -> LoadCounts: ...

    def count_slice(self, conn: Any, table_name: str, slc: Slice) -> int: ...


class StateFunctions(Protocol):
    """A back end's sync state, drift, quarantine and audit (``state.py``, ``pg/state.py``)."""

    def get_state(self, conn: Any, stream: str, scope: str) -> dict[str, Any] | None: ...

    def set_state(
        self,
        conn: Any,
        stream: str,
        scope: str,
        value: Mapping[str, Any],
        *,
        run_id: str,
        now: datetime,
    ) -> None: ...

    def record_drift(
        self,
        conn: Any,
        stream: str,
        *,
        added: Mapping[str, Any] | Iterable[str] = ...,
        missing: Mapping[str, Any] | Iterable[str] = ...,
        run_id: str,
        now: datetime,
    ) -> int: ...

    def quarantine(
        self,
        conn: Any,
        stream: str,
        items: Sequence[tuple[str, Any]],
        *,
        slice_label: str | None,
        run_id: str,
        now: datetime,
    ) -> int: ...

    def audit(
        self,
        conn: Any,
        stream: str,
        *,
        slice_label: str,
        counts: LoadCounts,
        api_requests: int | None,
        started_at: datetime | None,
        run_id: str,
        finished_at: datetime,
    ) -> None: ...


class LedgerFunctions(Protocol):
    """A back end's ledger of what did not load and what scans missed (``ledger.py``,
    ``pg/state.py``)."""

    def outstanding(self, conn: Any, stream: str | None = ...) -> list[ledger.Outstanding]: ...

    def mark_outstanding(
        self,
        conn: Any,
        stream: str,
        items: Sequence[tuple[str, str, str | None, str]],
        *,
        run_id: str,
        now: datetime,
    ) -> None: ...

    def clear_outstanding(
        self, conn: Any, stream: str, items: Iterable[tuple[str, str]]
    ) -> None: ...

    def count_misses(
        self,
        conn: Any,
        stream: str,
        missed: Sequence[tuple[str, str | None, str | None]],
        *,
        run_id: str,
        now: datetime,
    ) -> Mapping[str, int]: ...

    def clear_missing(self, conn: Any, stream: str, keys: Iterable[str]) -> None: ...


C = TypeVar("C")


class BaseTransaction(Generic[C]):
    """One open read-write transaction; every write of one load goes through it.

    Attributes:
        conn: the back end's connection, for anything the helpers do not cover.
        run_id: the run that writes (stored in ``_run_id`` and ``meta.*``).
        loaded_at: one naive-UTC timestamp for every row this transaction writes.
    """

    # The back end's functions (modules), set by each subclass.
    _load: ClassVar[LoadFunctions]
    _state: ClassVar[StateFunctions]
    _ledger: ClassVar[LedgerFunctions]

    def __init__(self, conn: C, run_id: str, loaded_at: datetime) -> None:
        self.conn = conn
        self.run_id = run_id
        self.loaded_at = loaded_at

    def replace(
        self, table: str, rows: Rows, slice: Slice, removal_reason: str = REPLACED_DEFAULT
    ) -> LoadCounts:
        """Make ``slice`` of ``raw.<table>`` exactly ``rows`` (see ``load.replace_slice``);
        removed rows are archived in ``meta.removed_rows`` with ``removal_reason``."""
        return self._load.replace_slice(
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
        """Merge a snapshot, soft-deleting vanished keys (see ``load.merge_snapshot``)."""
        return self._load.merge_snapshot(
            self.conn, table, rows, within, loaded_at=self.loaded_at, run_id=self.run_id
        )

    def count(self, table: str, slice: Slice) -> int:
        """Rows of ``raw.<table>`` inside ``slice``, as this transaction sees them."""
        return self._load.count_slice(self.conn, table, slice)

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None:
        """Read sync state as this transaction sees it."""
        return self._state.get_state(self.conn, stream, scope)

    def set_state(self, stream: str, scope: str, value: Mapping[str, Any]) -> None:
        """Write sync state; it commits or rolls back together with the data."""
        self._state.set_state(
            self.conn, stream, scope, value, run_id=self.run_id, now=self.loaded_at
        )

    def record_drift(
        self,
        stream: str,
        added: Mapping[str, Any] | Sequence[str] | set[str] = (),
        missing: Mapping[str, Any] | Sequence[str] | set[str] = (),
    ) -> int:
        """Record fields added to or missing from a stream's records (``meta.schema_drift``)."""
        return self._state.record_drift(
            self.conn, stream, added=added, missing=missing, run_id=self.run_id, now=self.loaded_at
        )

    def quarantine(
        self, stream: str, items: Sequence[tuple[str, Any]], slice: str | None = None
    ) -> int:
        """Store malformed records with their reason (``meta.quarantine``)."""
        return self._state.quarantine(
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
        self._state.audit(
            self.conn,
            stream,
            slice_label=slice,
            counts=counts,
            api_requests=api_requests,
            started_at=started_at,
            run_id=self.run_id,
            finished_at=utc_now(),
        )

    # -- the ledger (``ledger.py``): what did not load, and what a scan missed ------------------

    def outstanding(self, stream: str | None = None) -> list[ledger.Outstanding]:
        """Everything outstanding (of ``stream``), oldest first, as this transaction sees it."""
        return self._ledger.outstanding(self.conn, stream)

    def mark_outstanding(
        self, stream: str, items: Sequence[tuple[str, str, str | None, str]]
    ) -> None:
        """Record ``(chatbot_id, item, slice, reason)`` as outstanding (attempts counted up)."""
        self._ledger.mark_outstanding(
            self.conn, stream, items, run_id=self.run_id, now=self.loaded_at
        )

    def clear_outstanding(self, stream: str, items: Iterable[tuple[str, str]]) -> None:
        """Forget ``(chatbot_id, item)`` pairs that have now loaded completely."""
        self._ledger.clear_outstanding(self.conn, stream, items)

    def count_misses(
        self, stream: str, missed: Sequence[tuple[str, str | None, str | None]]
    ) -> Mapping[str, int]:
        """Count one more miss for each ``(key, chatbot_id, slice)``; key -> misses in a row."""
        return self._ledger.count_misses(
            self.conn, stream, missed, run_id=self.run_id, now=self.loaded_at
        )

    def clear_missing(self, stream: str, keys: Iterable[str]) -> None:
        """Forget the misses of keys that were listed again (or removed)."""
        self._ledger.clear_missing(self.conn, stream, keys)


class Transaction(BaseTransaction[duckdb.DuckDBPyConnection]):
    """DuckDB's load transaction, on the locked connection inside ``BEGIN``."""

    _load: ClassVar[LoadFunctions] = load
    _state: ClassVar[StateFunctions] = state
    _ledger: ClassVar[LedgerFunctions] = ledger
