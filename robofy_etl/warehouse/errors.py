"""Errors raised by the warehouse layer.

```text
WarehouseError
├── WarehouseLockedError    another process held the file's write lock too long
├── WarehouseMemoryError    DuckDB needed more than ROBOFY_DUCKDB_MEMORY_LIMIT
├── WarehouseFileError      the file is no usable warehouse: damaged, not DuckDB, too new, ...
└── WarehouseUnsupportedError  this back end cannot do that (DuckDB-only work asked of PostgreSQL)
```
"""

from __future__ import annotations

from robofy_etl.settings import size_in_bytes

__all__ = [
    "MEMORY_LIMIT_ENV",
    "PATH_SETTING",
    "WarehouseError",
    "WarehouseFileError",
    "WarehouseLockedError",
    "WarehouseMemoryError",
    "WarehouseUnsupportedError",
]

MEMORY_LIMIT_ENV = "ROBOFY_DUCKDB_MEMORY_LIMIT"
# How a user chooses the warehouse file: the CLI option or the environment variable.
PATH_SETTING = "--duckdb / ROBOFY_DUCKDB_PATH"


class WarehouseError(Exception):
    """A load or query against the warehouse cannot be carried out as asked.

    Raised for caller bugs (a row outside the slice being replaced, an unknown table or column,
    a missing value in a NOT NULL column) and wraps DuckDB failures that need a clearer message.
    """


class WarehouseUnsupportedError(WarehouseError):
    """The warehouse's back end cannot do what was asked: DuckDB-only work (the incremental
    SQL model builds) asked of PostgreSQL. The data-quality checks run on both (issue 11)."""


def models_unsupported(where: str, doing: str = "build") -> WarehouseUnsupportedError:
    """The error for DuckDB-only work asked of the PostgreSQL warehouse ``where`` (redacted)."""
    return WarehouseUnsupportedError(
        f"This is DuckDB-only: it cannot {doing} the tables of the PostgreSQL warehouse "
        f"{where}. To {doing} them this way, use a DuckDB warehouse (unset "
        "ROBOFY_WAREHOUSE_URL, or give duckdb:///path/to/file.duckdb)."
    )


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


class WarehouseMemoryError(WarehouseError):
    """DuckDB needed more memory than its limit (``ROBOFY_DUCKDB_MEMORY_LIMIT``) allows.

    The failed statement wrote nothing (a failing transaction rolls back), so running again
    with a higher limit is safe.

    Attributes:
        doing: what was running, for example ``building marts.messages (sql/marts/messages.sql)``.
        memory_limit: the limit in force as configured (``160MB``) or as DuckDB reports it
            (``152.5 MiB``); None when DuckDB's own default applied.
        detail: DuckDB's message.
    """

    def __init__(self, doing: str, memory_limit: str | None, detail: str) -> None:
        self.doing = doing
        self.memory_limit = memory_limit
        self.detail = detail
        first_line = detail.strip().splitlines()[0] if detail.strip() else "out of memory"
        if memory_limit is None:
            current = f"{MEMORY_LIMIT_ENV} is not set (DuckDB's default: 80% of the RAM)"
        else:
            current = f"{MEMORY_LIMIT_ENV}={memory_limit}"
        super().__init__(
            f"DuckDB ran out of memory while {doing} under {current} ({first_line}). "
            f"Nothing was written. Raise the limit, for example "
            f"{MEMORY_LIMIT_ENV}={suggest_memory_limit(memory_limit)}, and run again; "
            "records of many megabytes are the usual cause (a 10 MB transcript message needs "
            "about 100MB)."
        )


class WarehouseFileError(WarehouseError):
    """The warehouse file cannot be used: damaged, not a DuckDB file, too new, a directory, ...

    The message names the file, the setting that chose it (``--duckdb`` /
    ``ROBOFY_DUCKDB_PATH``) and what to do, for example moving it away and syncing again.

    Attributes:
        path: the file that was given as the warehouse.
        reason: ``damaged``, ``not_duckdb``, ``newer_version``, ``directory``, ``permission``
            or ``unusable``.
    """

    def __init__(self, message: str, *, path: str, reason: str) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


def suggest_memory_limit(memory_limit: str | None) -> str:
    """A memory limit worth trying after ``memory_limit`` ran out: 1GB, or twice the limit.

    Args:
        memory_limit: the limit that was too small (None: unknown).

    Returns:
        A value for ``ROBOFY_DUCKDB_MEMORY_LIMIT``.
    """
    size = size_in_bytes(memory_limit) if memory_limit else None
    if size is None or size < 10**9:
        return "1GB"
    return f"{max(2, round(2 * size / 10**9))}GB"
