"""One DuckDB load transaction: the methods the sync writes through (``TransactionLike``).

``Warehouse.transaction()`` opens it on a locked connection; each method delegates to the
loading (``load.py``), state (``state.py``) and ledger (``ledger.py``) functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from robofy_etl.warehouse import ledger, state
from robofy_etl.warehouse.interface import REPLACED_DEFAULT
from robofy_etl.warehouse.load import (
    LoadCounts,
    Rows,
    Slice,
    count_slice,
    merge_snapshot,
    replace_slice,
)


def utc_now() -> datetime:
    """The current time as a naive UTC datetime (the warehouse's TIMESTAMP convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Transaction:
    """One open read-write connection inside ``BEGIN``; every write of one load goes through it.

    Attributes:
        conn: the DuckDB connection, for anything the helpers do not cover.
        run_id: the run that writes (stored in ``_run_id`` and ``meta.*``).
        loaded_at: one naive-UTC timestamp for every row this transaction writes.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, run_id: str, loaded_at: datetime) -> None:
        self.conn = conn
        self.run_id = run_id
        self.loaded_at = loaded_at

    def replace(
        self, table: str, rows: Rows, slice: Slice, removal_reason: str = REPLACED_DEFAULT
    ) -> LoadCounts:
        """Make ``slice`` of ``raw.<table>`` exactly ``rows`` (see ``load.replace_slice``);
        removed rows are archived in ``meta.removed_rows`` with ``removal_reason``."""
        return replace_slice(
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
        return merge_snapshot(
            self.conn, table, rows, within, loaded_at=self.loaded_at, run_id=self.run_id
        )

    def count(self, table: str, slice: Slice) -> int:
        """Rows of ``raw.<table>`` inside ``slice``, as this transaction sees them."""
        return count_slice(self.conn, table, slice)

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

    # -- the ledger (``ledger.py``): what did not load, and what a scan missed ------------------

    def outstanding(self, stream: str | None = None) -> list[ledger.Outstanding]:
        """Everything outstanding (of ``stream``), oldest first, as this transaction sees it."""
        return ledger.outstanding(self.conn, stream)

    def mark_outstanding(
        self, stream: str, items: Sequence[tuple[str, str, str | None, str]]
    ) -> None:
        """Record ``(chatbot_id, item, slice, reason)`` as outstanding (attempts counted up)."""
        ledger.mark_outstanding(self.conn, stream, items, run_id=self.run_id, now=self.loaded_at)

    def clear_outstanding(self, stream: str, items: Iterable[tuple[str, str]]) -> None:
        """Forget ``(chatbot_id, item)`` pairs that have now loaded completely."""
        ledger.clear_outstanding(self.conn, stream, items)

    def count_misses(
        self, stream: str, missed: Sequence[tuple[str, str | None, str | None]]
    ) -> Mapping[str, int]:
        """Count one more miss for each ``(key, chatbot_id, slice)``; key -> misses in a row."""
        return ledger.count_misses(
            self.conn, stream, missed, run_id=self.run_id, now=self.loaded_at
        )

    def clear_missing(self, stream: str, keys: Iterable[str]) -> None:
        """Forget the misses of keys that were listed again (or removed)."""
        ledger.clear_missing(self.conn, stream, keys)
