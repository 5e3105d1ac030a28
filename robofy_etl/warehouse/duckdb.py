"""The DuckDB back end: short-lived locked connections, one transaction per load, publishing
(the copy itself is written by ``publish.py``)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from robofy_etl.settings import DEFAULTS, Settings, size_in_bytes
from robofy_etl.warehouse import ledger, publish, reads, state
from robofy_etl.warehouse.errors import (
    PATH_SETTING,
    WarehouseError,
    WarehouseFileError,
    WarehouseLockedError,
    WarehouseMemoryError,
)
from robofy_etl.warehouse.load import (
    day_string,
)
from robofy_etl.warehouse.publish import DEFAULT_PUBLISH_STORAGE_VERSION
from robofy_etl.warehouse.tables import META_DDL, RAW_TABLES, SCHEMAS
from robofy_etl.warehouse.transaction import Transaction, utc_now

if TYPE_CHECKING:
    from robofy_etl.warehouse.pg.warehouse import PgWarehouse

__all__ = [
    "LOCK_TIMEOUT_ENV",
    "Transaction",
    "Warehouse",
]

DEFAULT_MEMORY_LIMIT = DEFAULTS.duckdb_memory_limit

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_ENV = "ROBOFY_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = DEFAULTS.lock_timeout_s
LOCK_BACKOFF_INITIAL_S = 0.05
LOCK_BACKOFF_MAX_S = 2.0
# DuckDB's scan and join operators scale with threads; beyond a handful a load gains little and
# a Dagster worker shares the machine with others.
MAX_THREADS = 8
_LOCK_MESSAGE = "Could not set lock"
# A DuckDB file is three 4 KiB headers followed by blocks of `block_size` bytes.
_HEADERS_SIZE = 3 * 4096
# What DuckDB says when a read finds a block missing or not what was written.
_DAMAGE_MESSAGES = ("Corrupt database file", "Could not read enough bytes from file")
_HOLDER = re.compile(r"held in (?P<process>.+?) \(PID (?P<pid>\d+)\)")

# DuckDB shares one database instance between connections of the same process, so its file
# lock does not serialize writers inside one process; this does (re-entrant for nesting).
_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()
# One PgWarehouse (one SQLAlchemy engine and its connection pool) per URL and process, as
# SQLAlchemy advises: every Dagster step asks for the warehouse again.
_pg_warehouses: dict[str, PgWarehouse] = {}


def _process_lock(path: Path) -> threading.RLock:
    with _process_locks_guard:
        return _process_locks.setdefault(str(path), threading.RLock())


# DuckDB's Python client (2.0) is not safe when threads of one process open and close
# connections to the same file at once: the shared database can be torn down as another thread
# attaches it ("Unique file handle conflict"), or a query finds "Table Function with name
# python_arrow_scan does not exist" while another connection registers it. Seen in a sync's
# concurrent streams; in a stress test (two threads inserting from Arrow, one opening and
# closing) 13-53 errors in 10 s, none once every open and close of the file took this lock.
_instance_locks: dict[str, threading.Lock] = {}


def _instance_lock(path: Path) -> threading.Lock:
    with _process_locks_guard:
        return _instance_locks.setdefault(str(path), threading.Lock())


def _close(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Close a connection to ``path``, one open or close of that file at a time."""
    with _instance_lock(path):
        conn.close()


class Warehouse:
    """A DuckDB file holding the ``raw``, ``staging``, ``marts`` and ``meta`` schemas.

    DuckDB lets one process write a file at a time, so every connection here is short-lived
    (opened for one load, never held during HTTP) and waits for the lock instead of failing.
    Dashboards read a copy made by ``publish()``, so they never block a load.

    Args:
        path: the database file; its parent directory is created.
        lock_timeout_s: how long to wait for another process's lock before giving up.
        sleep: the sleep function used while waiting (injectable for tests).
        threads: DuckDB worker threads per connection (default: CPU count, at most 8).
        memory_limit: DuckDB's buffer memory per connection (e.g. ``"160MB"``); beyond it
            DuckDB spills to ``<path>.tmp``. Keeps peak memory flat as history grows: the
            model build over 300k messages peaks at ~300 MB RSS with 160MB instead of ~430 MB
            with DuckDB's default (80% of RAM), for ~0.4 s more build time. None: the default.
        publish_storage_version: the DuckDB storage format of the copy ``publish()`` writes:
            ``vX.Y.Z`` (DuckDB of that version and newer open it) or ``latest`` (this
            DuckDB's default, which older readers may not open).

    Raises:
        WarehouseError: if ``memory_limit`` or ``publish_storage_version`` is not valid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        threads: int | None = None,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        publish_storage_version: str = DEFAULT_PUBLISH_STORAGE_VERSION,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_timeout_s = lock_timeout_s
        self._sleep = sleep
        self._threads = threads or max(1, min(os.cpu_count() or 1, MAX_THREADS))
        self._memory_limit = memory_limit
        if memory_limit is not None and size_in_bytes(memory_limit) is None:
            raise WarehouseError(
                f"memory limit must look like 160MB or 2GB, got {memory_limit!r}"
                " (ROBOFY_DUCKDB_MEMORY_LIMIT)"
            )
        self.publish_storage_version = publish.check_storage_version(publish_storage_version)
        self._initialized = False
        self._checked = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Warehouse | PgWarehouse:
        """The warehouse ``settings`` describe: a DuckDB file (lock wait, memory, publish
        format) or, for a ``postgresql`` ``ROBOFY_WAREHOUSE_URL``, a ``PgWarehouse``.

        Args:
            settings: the validated settings.
            overrides: constructor arguments that win (``lock_timeout_s=0.0``: do not wait);
                DuckDB only, ignored for PostgreSQL (which has no file lock to wait for).

        Raises:
            WarehouseError: for PostgreSQL without its driver (the ``postgres`` extra).
        """
        target = settings.warehouse
        if target.backend == "postgresql":
            try:  # lazy: the DuckDB default needs neither psycopg nor the pg modules
                from robofy_etl.warehouse.pg.warehouse import PgWarehouse
            except ModuleNotFoundError as exc:
                raise WarehouseError(
                    f"ROBOFY_WAREHOUSE_URL names a PostgreSQL warehouse ({target.redacted}),"
                    f" which needs {exc.name or 'psycopg'}: install the postgres extra"
                    " (pip install 'robofy-etl[postgres]')."
                ) from None
            with _process_locks_guard:
                if target.secret() not in _pg_warehouses:
                    _pg_warehouses[target.secret()] = PgWarehouse(target)
                return _pg_warehouses[target.secret()]
        if target.path is None:
            raise WarehouseError(f"ROBOFY_WAREHOUSE_URL names no DuckDB file ({target.redacted})")
        arguments: dict[str, Any] = {
            "lock_timeout_s": settings.lock_timeout_s,
            "memory_limit": settings.duckdb_memory_limit,
            "publish_storage_version": settings.publish_storage_version,
        }
        return cls(target.path, **{**arguments, **overrides})

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    @property
    def published_path(self) -> Path:
        """Default target of ``publish()``: ``<stem>.read.duckdb`` beside the database."""
        return self.path.with_name(f"{self.path.stem}.read.duckdb")

    # -- connections ---------------------------------------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying with backoff while another process holds its lock.

        The first open of this ``Warehouse`` also checks that the file is whole (``_check``).
        """
        if self.path.is_dir():
            raise self._directory_error()
        delay = LOCK_BACKOFF_INITIAL_S
        waited = 0.0
        start = time.monotonic()
        while True:
            try:
                with _instance_lock(self.path):
                    conn = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.Error as exc:
                message = str(exc)
                if _LOCK_MESSAGE not in message:
                    raise self._open_error(exc, read_only) from exc
                elapsed = max(waited, time.monotonic() - start)
                if elapsed >= self.lock_timeout_s:
                    raise self._locked_error(message, elapsed) from exc
                if waited == 0.0:
                    logger.info(
                        "%s is locked by another process (%s); waiting up to %.0f s",
                        self.path,
                        _holder_text(message),
                        self.lock_timeout_s,
                    )
                pause = min(delay, max(self.lock_timeout_s - elapsed, 0.0))
                self._sleep(pause)
                waited += pause
                delay = min(delay * 2, LOCK_BACKOFF_MAX_S)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute(f"SET threads = {int(self._threads)}")
            if self._memory_limit is not None and not read_only:
                conn.execute(f"SET memory_limit = '{self._memory_limit.strip()}'")
            if not self._checked:
                self._check(conn)
                self._checked = True
        except BaseException:
            _close(conn, self.path)
            raise
        if waited:
            logger.info("%s: got the lock after %.1f s", self.path, waited)
        return conn

    def _check(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Fail now, before any load, if the file is damaged: cheaply, not by reading it all.

        Raises:
            WarehouseFileError: if the file is shorter than its tables need (truncated), or
                their metadata cannot be read.
        """
        started = time.monotonic()
        try:
            problem = _damage(conn, self.path)
        except duckdb.Error as exc:
            raise self._open_error(exc, read_only=False) from exc
        logger.debug("%s: checked in %.3f s", self.path, time.monotonic() - started)
        if problem is not None:
            raise self._file_error("damaged", problem)

    def _open_error(self, exc: duckdb.Error, read_only: bool) -> WarehouseFileError:
        """The ``WarehouseFileError`` for DuckDB failing to open or read the file."""
        detail = str(exc).strip().splitlines()[0].rstrip(".")
        if "newer version of DuckDB" in str(exc) or "storage version" in detail:
            return self._file_error(
                "newer_version",
                f"was written by a newer DuckDB than this robofy-etl uses "
                f"({duckdb.__version__}): {detail}",
                fix="Run the robofy-etl version that wrote it (or a newer one). Otherwise,",
            )
        if "Permission denied" in detail:
            access = "read" if read_only else "read and write"
            return self._file_error(
                "permission",
                f"cannot be opened: this user may not {access} it ({detail})",
                fix=f"Let this user {access} the file and its directory (chown/chmod). Or,",
            )
        if "not a valid DuckDB database file" in detail:
            return self._file_error("not_duckdb", "is not a DuckDB database file")
        if "Is a directory" in detail:
            return self._directory_error()
        if any(text in detail for text in _DAMAGE_MESSAGES):
            return self._file_error("damaged", f"is damaged ({detail})")
        return self._file_error("unusable", f"cannot be opened ({detail})")

    def _directory_error(self) -> WarehouseFileError:
        return self._file_error(
            "directory",
            "is a directory, not a DuckDB file",
            fix=f"Point {PATH_SETTING} at a file, for example {self.path / 'robofy.duckdb'}. Or,",
        )

    def _file_error(self, reason: str, problem: str, fix: str = "") -> WarehouseFileError:
        """A ``WarehouseFileError`` saying what is wrong with the file and what to do.

        Args:
            reason: the error's ``reason``.
            problem: what is wrong, as a clause after the file name.
            fix: a remedy for this reason, said before the general ones.
        """
        published = self.published_path
        moved = self.path.with_name(f"{self.path.name}.damaged")
        remedy = f"move it away (mv {self.path} {moved}) and sync again to rebuild it from the API"
        # The published copy holds only the marts and meta (no raw data): it cannot replace
        # the warehouse, but dashboards can go on reading it while the warehouse is rebuilt.
        if published.exists() and _healthy(published):
            remedy += (
                f"; meanwhile dashboards can keep reading the published copy {published} "
                "(it holds the marts, not the raw data, so it cannot replace the warehouse)."
            )
        else:
            state = "is damaged too" if published.exists() else "does not exist"
            remedy += f" (the published copy {published} {state})."
        return WarehouseFileError(
            f"The warehouse {self.path} ({PATH_SETTING}) {problem}. {fix or 'To go on,'} {remedy}",
            path=str(self.path),
            reason=reason,
        )

    def _locked_error(self, message: str, elapsed: float) -> WarehouseLockedError:
        match = _HOLDER.search(message)
        pid = int(match["pid"]) if match else None
        process = match["process"] if match else None
        holder = f" (PID {pid}, {process})" if match else ""
        return WarehouseLockedError(
            f"{self.path} is locked by another process{holder}; gave up after {elapsed:.1f} s. "
            f"Stop the other robofy-etl/dagster process that holds {self.path}"
            f"{f' (PID {pid})' if pid else ''}, or point readers at the published copy "
            f"{self.published_path}; set {LOCK_TIMEOUT_ENV} to wait longer.",
            path=str(self.path),
            holder_pid=pid,
            holder_process=process,
        )

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the database open through a block of several short reads and writes.

        Once its last connection closes, DuckDB shuts the database down (a checkpoint, after a
        write) and the next connection builds it again: about 15-40 ms per connection. While
        this holds a connection of its own, the block's connections share one open database
        (about 1-2 ms each). It holds the file like any connection, so it wraps warehouse work
        only, never a wait for the API (design.md section 5).
        """
        conn = self._open(read_only=False)
        try:
            yield
        finally:
            _close(conn, self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection (waiting for the lock), closed on exit.

        Args:
            read_only: open read-only; several read-only processes may share the file, but
                they still block writers, so keep it short.

        Raises:
            WarehouseMemoryError: if DuckDB runs out of memory while the connection is used.
        """
        with self._connect(read_only, doing=f"working on {self.path}") as conn:
            yield conn

    @contextmanager
    def _connect(self, read_only: bool, doing: str) -> Iterator[duckdb.DuckDBPyConnection]:
        guard = _process_lock(self.path)
        if not read_only and not guard.acquire(timeout=self.lock_timeout_s):
            raise WarehouseLockedError(
                f"{self.path} is held by another thread of this process; gave up after "
                f"{self.lock_timeout_s:.1f} s. Set {LOCK_TIMEOUT_ENV} to wait longer.",
                path=str(self.path),
                holder_pid=os.getpid(),
            )
        try:
            conn = self._open(read_only)
            try:
                yield conn
            except Exception as exc:
                memory_error = self._memory_error(exc, doing, read_only)
                if memory_error is not None:
                    raise memory_error from _find(exc, duckdb.OutOfMemoryException) or exc
                if isinstance(exc, duckdb.Error) and any(
                    text in str(exc) for text in _DAMAGE_MESSAGES
                ):
                    raise self._open_error(exc, read_only) from exc
                raise
            finally:
                _close(conn, self.path)
        finally:
            if not read_only:
                guard.release()

    def _memory_error(
        self, exc: BaseException, doing: str, read_only: bool
    ) -> WarehouseMemoryError | None:
        """The error to raise instead of ``exc`` when DuckDB ran out of memory, else None.

        Names the limit as configured (``160MB``), which is what a user sets; a build reports
        it the way DuckDB prints it, so its error is raised again with the configured value.
        """
        configured = None if read_only or self._memory_limit is None else self._memory_limit
        if isinstance(exc, WarehouseMemoryError):
            if configured is None or exc.memory_limit == configured.strip():
                return None
            return WarehouseMemoryError(exc.doing, configured.strip(), exc.detail)
        oom = _find(exc, duckdb.OutOfMemoryException)
        if oom is None:
            return None
        return WarehouseMemoryError(doing, configured.strip() if configured else None, str(oom))

    @contextmanager
    def transaction(self, run_id: str) -> Iterator[Transaction]:
        """One read-write transaction: COMMIT on success, ROLLBACK on error, always close.

        Creates the schemas and tables first if this ``Warehouse`` has not done so yet.

        Args:
            run_id: the run that writes; stored in ``_run_id`` and ``meta.*``.

        Raises:
            WarehouseMemoryError: if DuckDB runs out of memory (the transaction rolls back).
        """
        with self._connect(read_only=False, doing=f"writing run {run_id}") as conn:
            if not self._initialized:
                self._create_all(conn)
            conn.execute("BEGIN TRANSACTION")
            tx = Transaction(conn, run_id, utc_now())
            try:
                yield tx
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except duckdb.Error:
                    logger.exception("%s: rollback failed; closing the connection", self.path)
                raise
            conn.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------------------

    def initialize(self) -> None:
        """Create the schemas, raw tables and meta tables if they do not exist (idempotent)."""
        with self.connect(read_only=False) as conn:
            self._create_all(conn)

    def _create_all(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("BEGIN TRANSACTION")
        try:
            for schema in SCHEMAS:
                conn.execute(f"create schema if not exists {schema}")
            for table in RAW_TABLES.values():
                conn.execute(table.ddl)
            for ddl in META_DDL:
                conn.execute(ddl)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._initialized = True

    # -- reads -------------------------------------------------------------------------------------

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
        """Stored sessions of a window, to decide which rows and transcripts must be refreshed.

        Args:
            chatbot_ids: the chatbots to look at (None: all).
            day_from: first ``_slice`` day, inclusive.
            day_to: last ``_slice`` day, exclusive.

        Returns:
            ``(chatbot_id, session_id) -> (last_message_time as received, _slice, md5 of the
            stored listing record)``: a new watermark means a new transcript; a new digest with
            the same watermark means only the listing changed (a status that flipped to closed).
        """
        if chatbot_ids is not None and not chatbot_ids:
            return {}
        params: dict[str, Any] = {
            "day_from": day_string(day_from),
            "day_to": day_string(day_to),
        }
        chatbot_filter = ""
        with self.connect() as conn:
            if not self._initialized:
                self._create_all(conn)
            if chatbot_ids is not None:
                conn.register(
                    "_robofy_chatbots", pa.table({"v": pa.array(chatbot_ids, pa.string())})
                )
                chatbot_filter = "and chatbot_id in (select v from _robofy_chatbots)"
            rows = conn.execute(
                f"""
                select chatbot_id, session_id, _payload->>'last_message_time', _slice,
                       md5(_payload::varchar)
                from raw.robofy__inbox_sessions
                where _slice >= $day_from and _slice < $day_to {chatbot_filter}
                """,
                params,
            ).fetchall()
        return {(c, s): (lmt, sl, digest) for c, s, lmt, sl, digest in rows}

    def active_project_ids(self) -> list[int]:
        """Every project not marked deleted."""
        with self.connect(read_only=False) as conn:
            return reads.active_project_ids(conn)

    def active_chatbots(self) -> list[reads.Chatbot]:
        """Every chatbot not marked deleted, by chatbot_id."""
        with self.connect(read_only=False) as conn:
            return reads.active_chatbots(conn)

    def stored_sessions(
        self, chatbot_ids: Sequence[str], day_from: date, day_to: date
    ) -> dict[tuple[str, str], reads.StoredSession]:
        """``(chatbot_id, session_id) -> StoredSession`` of the sessions that started in
        ``[day_from, day_to)``, for ``chatbot_ids`` (see ``session_watermarks``)."""
        return {
            key: reads.StoredSession(*value)
            for key, value in self.session_watermarks(chatbot_ids, day_from, day_to).items()
        }

    def stored_keys(
        self,
        table: str,
        key_column: str,
        chatbot_ids: Sequence[str],
        day_from: date,
        day_to: date,
    ) -> list[reads.StoredKey]:
        """The rows of ``raw.<table>`` in ``[day_from, day_to)``, for ``chatbot_ids``.

        ``table`` and ``key_column`` come from the stream registry, never from input.
        """
        with self.connect() as conn:
            rows = ledger.stored_keys(
                conn, table, key_column, chatbot_ids, str(day_from), str(day_to)
            )
        return [reads.StoredKey(*row) for row in rows]

    def outstanding(self, stream: str | None = None) -> list[ledger.Outstanding]:
        """The work (of ``stream``) earlier runs left undone, oldest first."""
        with self.connect() as conn:
            return ledger.outstanding(conn, stream)

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, target: str | os.PathLike[str] | None = None) -> Path:
        """Publish an atomic, consistent, read-only copy of what readers query.

        The copy holds the ``marts`` tables (views materialized as tables, since what they
        read is not copied) and the ``meta`` tables except ``publish.UNPUBLISHED_TABLES``,
        with their table and column comments; not ``raw`` or ``staging``. It is written in the
        storage format ``publish_storage_version``, so older DuckDB readers can open it.

        Takes the write lock, writes the copy to ``<target>.tmp-<pid>`` in one transaction
        (a consistent snapshot), fsyncs it, and renames it onto ``target``, all while holding
        the lock. A reader that has the previous copy open keeps its consistent view; the next
        open sees the new one. The previous copy stays beside it as ``<target>.spare`` (a hard
        link), which the next publish brings up to date in place when no reader holds it.
        Temp copies that a killed publish left behind are removed first.

        Args:
            target: where to publish (default: ``published_path``).

        Returns:
            The published path.

        Raises:
            WarehouseError: if ``target`` is the warehouse itself, or this DuckDB cannot write
                the storage version asked for.
            WarehouseMemoryError: if DuckDB runs out of memory while copying.
        """
        dest = Path(target).expanduser().resolve() if target else self.published_path
        if dest == self.path:
            raise WarehouseError(f"cannot publish {self.path} onto itself")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        started = time.monotonic()
        try:
            with self._connect(read_only=False, doing=f"publishing {dest}") as conn:
                # Only the holder of the write lock writes and renames a temp copy, so every
                # other one beside the target is what a killed publish left behind.
                publish.remove_stale_copies(dest, keep=tmp)
                publish.remove_copy(tmp)  # this process's own, if an earlier publish could not
                if not self._initialized:
                    self._create_all(conn)
                how, copied = publish.write_copy(conn, dest, tmp, self.publish_storage_version)
                # A stale WAL beside the target would be replayed into the new copy on open.
                Path(f"{dest}.wal").unlink(missing_ok=True)
                _keep_spare(dest)
                os.replace(tmp, dest)
                publish.fsync_dir(dest.parent)
                publish.forget_published(conn)
        finally:
            publish.remove_copy(tmp)
        logger.info(
            "published %s -> %s (%s: %d tables, %.1f MB, storage %s, in %.2f s)",
            self.path,
            dest,
            how,
            copied,
            dest.stat().st_size / 1e6,
            self.publish_storage_version,
            time.monotonic() - started,
        )
        return dest


def _keep_spare(dest: Path) -> None:
    """Keep the copy about to be replaced as the spare the next publish updates in place."""
    spare = publish.spare_path(dest)
    publish.remove_copy(spare)
    if dest.exists():
        try:
            os.link(dest, spare)
        except OSError as exc:  # a filesystem without hard links: the next update copies
            logger.info("publishing: no spare copy kept (%s)", exc)


def _damage(conn: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """What is wrong with the open file ``path``, judged from its metadata; None if nothing.

    First the cheap test (a millisecond at any size): the file is at least as long as the
    blocks its block manager counts. Only a file that fails it is examined table by table: every
    table's storage metadata is read (which fails if a metadata block is missing or corrupt)
    and the file's length is compared with the last block a table uses, so free blocks at the
    end never count as damage. Data blocks are not read: that would cost a full scan of the
    file. Reading every table's storage metadata took 7 s per open of a year of history, and
    each Dagster step opens the file once.
    """
    rows = conn.execute(
        "select block_size, total_blocks from pragma_database_size()"
        " where database_name = current_database()"
    ).fetchall()
    block_size, total_blocks = int(rows[0][0]), int(rows[0][1])
    size = path.stat().st_size
    if size >= _HEADERS_SIZE + total_blocks * block_size:
        return None
    tables = conn.execute(
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = current_database()"
    ).fetchall()
    last_block = -1
    for schema, table in tables:
        row = conn.execute(
            "select max(block_id), max(list_max(additional_block_ids)) "
            "from pragma_storage_info(?) where persistent",
            [f'"{schema}"."{table}"'],
        ).fetchall()[0]
        last_block = max([last_block, *(block for block in row if block is not None)])
    if last_block < 0:
        return None
    needed = _HEADERS_SIZE + (last_block + 1) * block_size
    if size < needed:
        return (
            f"is damaged: it is {size:,} bytes long but its tables need {needed:,} "
            "(the file was cut short)"
        )
    return None


def _healthy(path: Path) -> bool:
    """Whether the DuckDB file at ``path`` opens read-only and passes ``_damage``."""
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return _damage(conn, path) is None
    except (duckdb.Error, OSError):
        return False


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` among its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _holder_text(message: str) -> str:
    match = _HOLDER.search(message)
    return f"PID {match['pid']}, {match['process']}" if match else "holder unknown"
