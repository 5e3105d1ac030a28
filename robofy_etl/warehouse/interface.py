"""What the sync may ask of a warehouse: the methods both back ends implement.

``Warehouse``/``Transaction`` (DuckDB, ``duckdb.py``) and ``PgWarehouse``/``PgTransaction``
(PostgreSQL, ``pg/warehouse.py``) both satisfy these protocols, so the sync is written once
against them and never touches a connection or runs SQL of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any, Protocol

from robofy_etl.warehouse.ledger import Outstanding
from robofy_etl.warehouse.load import LoadCounts, Rows, Slice
from robofy_etl.warehouse.reads import Chatbot, StoredKey, StoredSession

__all__ = ["REPLACED_DEFAULT", "TransactionLike", "WarehouseLike"]

REPLACED_DEFAULT = "not in the rows that replaced its slice"


class TransactionLike(Protocol):
    """One read-write transaction of one load (``Warehouse.transaction``)."""

    run_id: str
    loaded_at: datetime

    def replace(
        self, table: str, rows: Rows, slice: Slice, removal_reason: str = REPLACED_DEFAULT
    ) -> LoadCounts: ...

    def merge_snapshot(
        self, table: str, rows: Rows, within: Mapping[str, Sequence[Any]] | None = None
    ) -> LoadCounts: ...

    def count(self, table: str, slice: Slice) -> int: ...

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None: ...

    def set_state(self, stream: str, scope: str, value: Mapping[str, Any]) -> None: ...

    def record_drift(
        self,
        stream: str,
        added: Mapping[str, Any] | Sequence[str] | set[str] = (),
        missing: Mapping[str, Any] | Sequence[str] | set[str] = (),
    ) -> int: ...

    def quarantine(
        self, stream: str, items: Sequence[tuple[str, Any]], slice: str | None = None
    ) -> int: ...

    def audit(
        self,
        stream: str,
        slice: str,
        counts: LoadCounts,
        api_requests: int | None = None,
        started_at: datetime | None = None,
    ) -> None: ...

    def outstanding(self, stream: str | None = None) -> list[Outstanding]: ...

    def mark_outstanding(
        self, stream: str, items: Sequence[tuple[str, str, str | None, str]]
    ) -> None: ...

    def clear_outstanding(self, stream: str, items: Iterable[tuple[str, str]]) -> None: ...

    def count_misses(
        self, stream: str, missed: Sequence[tuple[str, str | None, str | None]]
    ) -> Mapping[str, int]: ...

    def clear_missing(self, stream: str, keys: Iterable[str]) -> None: ...


class WarehouseLike(Protocol):
    """A warehouse the sync loads into: reads on short connections, writes in transactions."""

    def transaction(self, run_id: str) -> AbstractContextManager[TransactionLike]: ...

    def initialize(self) -> None: ...

    def hold(self) -> AbstractContextManager[None]:
        """Keep the warehouse open through a block of several short reads and writes (no API
        waits inside): DuckDB then builds its database once for the block, not per connection.
        """
        ...

    def get_state(self, stream: str, scope: str) -> dict[str, Any] | None: ...

    def active_project_ids(self) -> list[int]: ...

    def active_chatbots(self) -> list[Chatbot]: ...

    def stored_sessions(
        self, chatbot_ids: Sequence[str], day_from: date, day_to: date
    ) -> dict[tuple[str, str], StoredSession]: ...

    def stored_keys(
        self,
        table: str,
        key_column: str,
        chatbot_ids: Sequence[str],
        day_from: date,
        day_to: date,
    ) -> list[StoredKey]: ...

    def outstanding(self, stream: str | None = None) -> list[Outstanding]: ...

    def publish(self, target: str | None = None) -> object: ...
