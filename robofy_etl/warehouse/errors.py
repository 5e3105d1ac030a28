"""Errors raised by the warehouse layer."""

from __future__ import annotations

__all__ = ["WarehouseError", "WarehouseLockedError"]


class WarehouseError(Exception):
    """A load or query against the warehouse cannot be carried out as asked.

    Raised for caller bugs (a row outside the slice being replaced, an unknown table or column,
    a missing value in a NOT NULL column) and wraps DuckDB failures that need a clearer message.
    """


class WarehouseLockedError(WarehouseError):
    """Another process held the DuckDB file's write lock for longer than ``lock_timeout_s``.

    Attributes:
        path: the database file that could not be opened.
        holder_pid: the PID DuckDB reported as holding the lock, when it reported one.
        holder_process: the holder's executable, when DuckDB reported it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        holder_pid: int | None = None,
        holder_process: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid
        self.holder_process = holder_process
