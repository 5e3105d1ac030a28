"""Publishing: an atomic, read-only copy of what readers query, written or brought up to date.

The copy holds the ``marts`` and ``meta`` tables (not ``raw``, ``staging``, or the removed-rows
archive), in a DuckDB storage format older readers open. ``Warehouse.publish`` takes the write
lock and renames the result into place; this module writes the copy: in full, or, when the
previous copy is the one this warehouse last published, by rewriting only the keys the model
builds since replaced (``changelog.*``, see ``incremental.py``).

Updating starts from the *spare* when it can: the copy published before the current one, kept
as a hard link ``<dest>.spare`` when the current one replaced it. Rewriting the spare's changed
keys in place writes only those rows, where copying the current file writes the whole file (at
a year of history, 0.6-1 s for 632 MB, and growing with it). A reader that still has the spare
open holds DuckDB's file lock, so the spare cannot be opened for writing and the update falls
back to a copy of the current file: a reader never sees its file change under it. The change
log keeps the keys of the last two publishes for this (a few thousand rows an hour).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import duckdb

from robofy_etl.settings import DEFAULTS
from robofy_etl.warehouse.errors import WarehouseError
from robofy_etl.warehouse.incremental import TimeRange

__all__ = [
    "DEFAULT_PUBLISH_STORAGE_VERSION",
    "PUBLISHED_SCHEMAS",
    "PUBLISH_STORAGE_ENV",
    "UNPUBLISHED_TABLES",
    "check_storage_version",
    "fsync_dir",
    "remove_copy",
    "remove_stale_copies",
    "spare_path",
    "write_copy",
]

logger = logging.getLogger(__name__)

PUBLISH_STORAGE_ENV = "ROBOFY_PUBLISH_STORAGE_VERSION"
# The published copy is written in the storage format of this DuckDB release, so that readers
# still on DuckDB 1.4 (BI tools, the DuckDB CLI of a distribution) can open it; the warehouse
# file itself keeps this DuckDB's own format. "latest": DuckDB's default for new files.
DEFAULT_PUBLISH_STORAGE_VERSION = DEFAULTS.publish_storage_version
_STORAGE_VERSION = re.compile(r"v\d+\.\d+\.\d+|latest")
# What readers query: the marts, and the pipeline's state for `robofy-etl status`.
PUBLISHED_SCHEMAS = ("marts", "meta")
# Left out of the published copy: every row ever removed from raw, kept for operators working
# on the warehouse file itself; it grows with history and no reader queries it.
UNPUBLISHED_TABLES = frozenset({"meta.removed_rows"})
_PUBLISH_ALIAS = "robofy_publish"
# In the published copy: the last model build it holds, and its storage version.
_STAMP = "meta._published_build"
_CHANGELOG = "changelog"  # incremental.CHANGELOG (the marts' change log; never published)
# How many publishes' changes the change log keeps: the current copy's and the spare's.
_KEEP_PUBLISHES = 2


def spare_path(dest: Path) -> Path:
    """The previous published copy, kept to be updated in place: ``<dest>.spare``."""
    return dest.with_name(f"{dest.name}.spare")


def write_copy(
    conn: duckdb.DuckDBPyConnection, dest: Path, tmp: Path, version: str
) -> tuple[str, int]:
    """Write the copy to publish onto ``dest`` into ``tmp``, complete and fsynced.

    Updates the spare in place or a copy of ``dest`` when it can (see ``_update_copy``), else
    writes every table. Call it holding the warehouse's write lock, with ``tmp`` absent.

    Returns:
        How (``updated in place``, ``updated`` or ``written``) and how many tables were
        written.
    """
    latest = _latest_build(conn)
    spare = spare_path(dest)
    copied: int | None = None
    how = "written"
    if dest.exists() and spare.exists():
        copied = _update_copy(conn, spare, tmp, latest, version, move=True)
        how = "updated in place"
    if copied is None and dest.exists():
        copied = _update_copy(conn, dest, tmp, latest, version, move=False)
        how = "updated"
    if copied is None:
        how = "written"
        copied = _write_copy(conn, tmp, latest, version)
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    return how, copied


def forget_published(conn: duckdb.DuckDBPyConnection) -> None:
    """After the copy is in place: the changes it holds are dropped from the change log."""
    _forget_published_changes(conn, _latest_build(conn))


def _update_copy(
    conn: duckdb.DuckDBPyConnection,
    source: Path,
    tmp: Path,
    latest: int | None,
    version: str,
    *,
    move: bool,
) -> int | None:
    """Bring a published copy up to date with the builds since it was written, as ``tmp``.

    ``source`` (the current copy, or the spare) is copied to ``tmp``, or with ``move`` renamed
    to it and updated in place. The copy's stamp names the last build it holds; the marts'
    change log has the keys every later incremental build replaced, so only those keys' rows
    are rewritten (and the small ``meta`` tables in full). Returns None, leaving ``tmp``
    absent, when that is not possible: no stamp or another storage version, a mart rebuilt in
    full since, marts added or dropped, a copy that is not one this warehouse published
    recently, or (the spare) a file a reader still has open.
    """
    if latest is None:
        return None
    alias = _PUBLISH_ALIAS
    try:
        if move:
            os.replace(source, tmp)
        else:
            shutil.copyfile(source, tmp)
        conn.execute(f"ATTACH {_literal(str(tmp))} AS {alias}")
    except (OSError, duckdb.Error) as exc:
        logger.info("publishing: cannot update %s (%s)", source, str(exc).splitlines()[0])
        remove_copy(tmp)
        return None
    try:
        done = _apply_changes(conn, latest, version)
    except duckdb.Error as exc:
        logger.warning("publishing: updating %s failed (%s)", source, exc)
        done = None
    finally:
        with _suppressed(f"detaching {tmp}"):
            conn.execute(f"DETACH {alias}")
    if done is None:
        remove_copy(tmp)
    return done


def _apply_changes(conn: duckdb.DuckDBPyConnection, latest: int, version: str) -> int | None:
    alias = _PUBLISH_ALIAS
    stamp = conn.execute(
        "select count(*) from duckdb_tables() where database_name = ?"
        " and schema_name = 'meta' and table_name = '_published_build'",
        [alias],
    ).fetchall()[0][0]
    if not stamp:
        return None
    rows = conn.execute(f"select build_id, storage from {alias}.{_STAMP}").fetchall()
    if len(rows) != 1 or rows[0][1] != version:
        return None
    since = int(rows[0][0])
    (known,) = conn.execute(
        f"select count(*) from {_CHANGELOG}.published where build_id = ?", [since]
    ).fetchall()[0]
    if not known:
        return None  # not a copy this warehouse published recently: its changes are gone
    (fulls,) = conn.execute(
        f"select count(*) from {_CHANGELOG}.builds where build_id > ? and mode <> 'incremental'",
        [since],
    ).fetchall()[0]
    marts = [(s, n) for s, n, _ in _published_relations(conn) if s == "marts"]
    copied_marts = conn.execute(
        "select schema_name, table_name from duckdb_tables() where database_name = ?"
        " and schema_name = 'marts' order by all",
        [alias],
    ).fetchall()
    if fulls or sorted(marts) != sorted(copied_marts):
        return None
    conn.execute("SET preserve_insertion_order = false")
    conn.execute("BEGIN TRANSACTION")
    try:
        for schema, name in marts:
            log = f"{_CHANGELOG}.{schema}__{name}"
            columns = [
                c
                for (c,) in conn.execute(
                    "select column_name from duckdb_columns() where database_name ="
                    " current_database() and schema_name = ? and table_name = ?"
                    " order by column_index",
                    [_CHANGELOG, f"{schema}__{name}"],
                ).fetchall()
                if c != "_build_id"
            ]
            if not columns:
                continue  # never built incrementally: unchanged since the copy
            key = ", ".join(_ident(c) for c in columns)
            keys = f"(select {key} from {log} where _build_id > {since})"
            where = f"({key}) in {keys}{_in_time(conn, f'{schema}.{name}', since)}"
            target, source = f"{alias}.{schema}.{_ident(name)}", f"{schema}.{_ident(name)}"
            conn.execute(f"delete from {target} where {where}")
            conn.execute(f"insert into {target} select * from {source} where {where}")
        meta = [(s, n) for s, n, _ in _published_relations(conn) if s == "meta"]
        for schema, name in meta:
            target = f"{alias}.{schema}.{_ident(name)}"
            conn.execute(f"drop table if exists {target}")
            conn.execute(f"create table {target} as select * from {schema}.{_ident(name)}")
        conn.execute(f"update {alias}.{_STAMP} set build_id = ?", [latest])
        conn.execute("COMMIT")
    except BaseException:
        with _suppressed("rollback of the publish update"):
            conn.execute("ROLLBACK")
        raise
    finally:
        with _suppressed("resetting preserve_insertion_order"):
            conn.execute("RESET preserve_insertion_order")
    conn.execute(f"CHECKPOINT {alias}")
    return len(marts) + len(meta)


def _in_time(conn: duckdb.DuckDBPyConnection, mart: str, since: int) -> str:
    """`` and <time range>`` holding every row the builds after ``since`` replaced in
    ``mart``, old and new, when each of them logged one (a mart that keeps a span): the copy
    then finds them by time before key. "" otherwise."""
    row = conn.execute(
        f"select count(*), count(span_column), any_value(span_column), min(span_lo),"
        f" max(span_hi), coalesce(bool_or(span_nulls), false) from {_CHANGELOG}.builds"
        " where build_id > ? and model = ? and mode = 'incremental'",
        [since, mart],
    ).fetchall()[0]
    builds, logged, column, lo, hi, nulls = row
    if not builds or logged != builds or not isinstance(column, str):
        return ""
    return f" and {TimeRange(column, lo, hi, bool(nulls)).condition()}"


def _write_copy(
    conn: duckdb.DuckDBPyConnection, tmp: Path, latest: int | None, version: str
) -> int:
    """Write the published relations into a new DuckDB file ``tmp``; returns how many.

    Runs in one transaction on ``conn`` (which holds the write lock), so every table is
    copied from the same snapshot; the file is complete and checkpointed when this returns.
    """
    options = "" if version == "latest" else f" (STORAGE_VERSION '{version}')"
    alias = _PUBLISH_ALIAS
    try:
        conn.execute(f"ATTACH {_literal(str(tmp))} AS {alias}{options}")
    except duckdb.InvalidInputException as exc:
        raise WarehouseError(
            f"this DuckDB ({duckdb.__version__}) cannot write storage version {version!r} "
            f"({PUBLISH_STORAGE_ENV}): {str(exc).strip()}"
        ) from exc
    # Rows may land in the copy in any order (SQL gives none without ORDER BY): keeping
    # the source's order makes DuckDB buffer the big tables, which under the default
    # 160MB limit doubles the time (365 days of a large account: 24 s instead of 12 s).
    conn.execute("SET preserve_insertion_order = false")
    # The copy is written once: its commit checkpoints it at once, instead of writing every
    # row to the copy's WAL first and again at the checkpoint below (0.14 s to 0.09 s, medium).
    conn.execute("SET checkpoint_threshold = '1KB'")
    try:
        conn.execute("BEGIN TRANSACTION")
        try:
            relations = _published_relations(conn)
            copied = {(schema, name) for schema, name, _ in relations}
            for schema in PUBLISHED_SCHEMAS:
                conn.execute(f"create schema {alias}.{_ident(schema)}")
            comments: list[str] = []  # run as one script: a statement each costs a round trip
            for schema, name, comment in relations:
                source = f"{_ident(schema)}.{_ident(name)}"
                copy = f"{alias}.{source}"
                conn.execute(f"create table {copy} as select * from {source}")
                if comment:
                    comments.append(f"comment on table {copy} is {_literal(comment)}")
            for schema, name, column, text in conn.execute(
                "select schema_name, table_name, column_name, comment from duckdb_columns()"
                " where database_name = current_database() and schema_name in (select unnest(?))"
                " and comment is not null and comment <> '' order by all",
                [list(PUBLISHED_SCHEMAS)],
            ).fetchall():
                if (schema, name) in copied:
                    copy = f"{alias}.{_ident(schema)}.{_ident(name)}"
                    comments.append(
                        f"comment on column {copy}.{_ident(column)} is {_literal(text)}"
                    )
            if comments:
                conn.execute(";\n".join(comments))
            if latest is not None:  # the stamp an update of this copy starts from
                conn.execute(
                    f"create table {alias}.{_STAMP} as select ?::bigint as build_id,"
                    " ?::varchar as storage",
                    [latest, version],
                )
            conn.execute("COMMIT")
        except BaseException:
            with _suppressed("rollback of the publish transaction"):
                conn.execute("ROLLBACK")
            raise
        conn.execute(f"CHECKPOINT {alias}")
    finally:
        with _suppressed(f"detaching {tmp}"):
            conn.execute(f"DETACH {alias}")
        for setting in ("preserve_insertion_order", "checkpoint_threshold"):  # global settings
            with _suppressed(f"resetting {setting}"):
                conn.execute(f"RESET {setting}")
    return len(relations)


def _latest_build(conn: duckdb.DuckDBPyConnection) -> int | None:
    """The id of the last model build (the marts' change log), or None before any."""
    exists = conn.execute(
        "select count(*) from duckdb_tables() where database_name = current_database()"
        " and schema_name = ? and table_name = 'builds'",
        [_CHANGELOG],
    ).fetchall()[0][0]
    if not exists:
        return None
    value = conn.execute(f"select max(build_id) from {_CHANGELOG}.builds").fetchall()[0][0]
    return None if value is None else int(value)


def _forget_published_changes(conn: duckdb.DuckDBPyConnection, latest: int | None) -> None:
    """After a publish of build ``latest``: the changes both the copy and the spare hold are
    dropped from the log (the spare, one publish behind, still needs the newer ones)."""
    if latest is None:
        return
    conn.execute(f"create table if not exists {_CHANGELOG}.published (build_id BIGINT)")
    conn.execute(f"delete from {_CHANGELOG}.published where build_id = ?", [latest])
    conn.execute(f"insert into {_CHANGELOG}.published values (?)", [latest])
    conn.execute(
        f"delete from {_CHANGELOG}.published where build_id not in (select build_id from"
        f" {_CHANGELOG}.published order by build_id desc limit {_KEEP_PUBLISHES})"
    )
    (oldest,) = conn.execute(f"select min(build_id) from {_CHANGELOG}.published").fetchall()[0]
    for (name,) in conn.execute(
        "select table_name from duckdb_tables() where database_name = current_database()"
        " and schema_name = ? and table_name not in ('builds', 'published')",
        [_CHANGELOG],
    ).fetchall():
        conn.execute(f"delete from {_CHANGELOG}.{_ident(name)} where _build_id <= ?", [oldest])


def _published_relations(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str | None]]:
    """``(schema, name, comment)`` of every table and view the published copy holds."""
    rows = conn.execute(
        """
        select schema_name, table_name, comment from duckdb_tables()
        where database_name = current_database() and schema_name in (select unnest($schemas))
        union all
        select schema_name, view_name, comment from duckdb_views()
        where database_name = current_database() and schema_name in (select unnest($schemas))
            and not internal
        order by all
        """,
        {"schemas": list(PUBLISHED_SCHEMAS)},
    ).fetchall()
    return [
        (str(schema), str(name), comment)
        for schema, name, comment in rows
        if f"{schema}.{name}" not in UNPUBLISHED_TABLES
    ]


@lru_cache(maxsize=8)
def check_storage_version(version: str) -> str:
    """``version`` if this DuckDB can write that storage format; else a ``WarehouseError``.

    Checked once per value and process, on a throwaway in-memory database, so that a bad
    ``ROBOFY_PUBLISH_STORAGE_VERSION`` fails when the warehouse is set up, not after a sync.
    """
    value = version.strip()
    if not _STORAGE_VERSION.fullmatch(value):
        raise WarehouseError(
            f"{PUBLISH_STORAGE_ENV} must be a DuckDB version such as v1.4.0 or 'latest', "
            f"got {version!r}"
        )
    if value != "latest":
        with duckdb.connect(":memory:") as conn:
            try:
                conn.execute(f"ATTACH ':memory:' AS probe (STORAGE_VERSION '{value}')")
            except duckdb.Error as exc:
                known = str(exc).partition("valid options are:")[2].strip()
                raise WarehouseError(
                    f"{PUBLISH_STORAGE_ENV}={value} is not a storage version this DuckDB "
                    f"({duckdb.__version__}) knows"
                    + (f"; it knows {known}" if known else f": {str(exc).strip()}")
                ) from exc
    return value


def _ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """A quoted SQL string literal (for statements that take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def _suppressed(doing: str) -> Iterator[None]:
    """Log, rather than raise, a DuckDB error of a clean-up step, so it hides no first error."""
    try:
        yield
    except duckdb.Error:
        logger.exception("publishing: %s failed", doing)


def remove_copy(path: Path) -> None:
    """Delete a temp copy and the WAL DuckDB may have left beside it."""
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)


def remove_stale_copies(dest: Path, keep: Path) -> None:
    """Delete the ``<dest>.tmp-<pid>`` copies beside ``dest`` other than ``keep``, logging each.

    Call it only while holding the write lock (see ``Warehouse.publish``).
    """
    name = re.compile(re.escape(dest.name) + r"\.tmp-(?P<pid>\d+)(\.wal)?")
    for path in sorted(dest.parent.glob(f"{glob.escape(dest.name)}.tmp-*")):
        match = name.fullmatch(path.name)
        if match is None or path == keep:
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        logger.warning(
            "removed %s (%.1f MB), a copy left by a publish that did not finish (PID %s)",
            path,
            size / 1e6,
            match["pid"],
        )


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
