"""Storage layer: raw and meta tables in DuckDB, idempotent slice loads, sync state."""

from __future__ import annotations

from robofy_etl.warehouse.duckdb import Transaction, Warehouse
from robofy_etl.warehouse.errors import (
    WarehouseError,
    WarehouseFileError,
    WarehouseLockedError,
    WarehouseMemoryError,
)
from robofy_etl.warehouse.interface import TransactionLike, WarehouseLike
from robofy_etl.warehouse.load import LoadCounts, Slice

__all__ = [
    "LoadCounts",
    "Slice",
    "Transaction",
    "TransactionLike",
    "Warehouse",
    "WarehouseError",
    "WarehouseFileError",
    "WarehouseLike",
    "WarehouseLockedError",
    "WarehouseMemoryError",
]
