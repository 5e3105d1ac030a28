"""Build the ``sql/`` models on PostgreSQL: incrementally, in one transaction, from the same files.

The model files are DuckDB SQL. Each one runs on PostgreSQL as

- its hand-written PostgreSQL variant ``sql/postgres/<schema>/<model>.sql`` where there is one
  (the JSON-parsing staging models and the two lead marts: DuckDB's structs, lambdas and
  ``from_json`` have no transpilable counterpart; see docs/postgres-models.md), or else
- the file transpiled by sqlglot (pinned), with three patches on its syntax tree:
  ``try_cast`` -> a helper function returning null where the cast fails (PostgreSQL 13-15 have
  no try_cast, and sqlglot would silently emit a failing ``CAST``), ``any_value`` -> ``min``
  (PostgreSQL 16+ only; the models use it on one value per group), and ``arg_min(a, b)`` ->
  ``(array_agg(a order by b))[1]``. A construct sqlglot cannot translate fails the build
  (``unsupported_level=RAISE``) instead of being dropped with a log line.

Builds are incremental, by the planner of ``incremental.py`` (the same as DuckDB's), run on
the PostgreSQL SQL above (which is what each model is fingerprinted by: an edited variant or a
new sqlglot rebuilds it in full); ``pg/build_sql.py`` holds what PostgreSQL spells its own way
and why the watermark is a transaction id. A build runs in ``build_transaction``: the advisory
lock ``BUILD_LOCK`` (builds take turns), then one REPEATABLE READ transaction, the caller's.
An incremental model has its touched keys' rows deleted and inserted in place (readers keep
their MVCC snapshot: no lock beyond the rows). A model built in full goes into
``<schema>.<model>__robofy_new`` (models built in full later in the same run read each
other's new tables), and at the end its rows replace the old table's in place (``delete``,
``insert``: no lock a reader waits for), or, when its columns changed, the old table is
dropped and the new one renamed (retried while readers hold it; see ``_swap_in``): readers
see the previous marts until the commit and the new ones after, never an empty or missing
table (PostgreSQL DDL is transactional; nothing is truncated). Loads are not held off at
all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from robofy_etl.warehouse.incremental import Change, Planner, Watermark, full_reason
from robofy_etl.warehouse.models import (
    SQL_DIR,
    BuildResult,
    Model,
    ModelBuildError,
    ModelGraphError,
    _downstream,
    plan_selection,
)
from robofy_etl.warehouse.pg.build_sql import PgBuildSQL, sql_literal
from robofy_etl.warehouse.pg.locks import lock_key
from robofy_etl.warehouse.tables import SCHEMAS

logger = logging.getLogger(__name__)

# Hand-written PostgreSQL variants of the models sqlglot cannot transpile.
VARIANTS_DIR = "postgres"
# Suffix of the tables a build writes before it swaps them in.
NEW_SUFFIX = "__robofy_new"
# try_cast targets -> helper functions (in the meta schema) returning null where a cast fails.
_TRY_TYPES = ("integer", "bigint", "boolean", "double precision", "timestamp", "date")
_HELPER_SCHEMA = "meta"
# The advisory lock serialising model builds.
BUILD_LOCK = lock_key("robofy", "sql_models")


def helper_ddl() -> list[str]:
    """The helper functions transpiled models call (idempotent; run in every build)."""
    out = []
    for pg_type in _TRY_TYPES:
        name = f"{_HELPER_SCHEMA}.try_cast_" + pg_type.replace(" ", "_")
        out.append(
            f"create or replace function {name}(v text) returns {pg_type}"
            " language plpgsql immutable parallel safe as"
            f" $$ begin return v::{pg_type}; exception when others then return null; end $$"
        )
    return out


def _first_of_ordered_agg(arg: exp.ArgMin, where: exp.Expr | None) -> exp.Expr:
    """arg_min(a, b) [filter (where w)] -> (array_agg(a order by b) [filter (where w)])[1]."""
    agg: exp.Expr = exp.ArrayAgg(
        this=exp.Order(this=arg.this, expressions=[exp.Ordered(this=arg.expression)])
    )
    if where is not None:
        agg = exp.Filter(this=agg, expression=where)
    return exp.Bracket(this=exp.paren(agg), expressions=[exp.Literal.number(1)], offset=1)


def _patch(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.TryCast):
        to = node.args.get("to")
        pg_type = to.sql(dialect="postgres").lower() if isinstance(to, exp.Expr) else ""
        pg_type = {"int": "integer", "double": "double precision"}.get(pg_type, pg_type)
        if pg_type not in _TRY_TYPES:
            raise ModelBuildError(
                f"try_cast to {pg_type!r} has no PostgreSQL helper; add it to _TRY_TYPES in "
                f"{__name__}"
            )
        name = f"{_HELPER_SCHEMA}.try_cast_" + pg_type.replace(" ", "_")
        return exp.func(name, exp.cast(node.this, "text"))
    # DuckDB's any_value skips nulls (sqlglot reads it as IGNORE NULLS), as min does; the
    # models use it on one value per group.
    if isinstance(node, exp.IgnoreNulls) and isinstance(node.this, exp.AnyValue):
        return exp.Min(this=node.this.this)
    if isinstance(node, exp.AnyValue):
        return exp.Min(this=node.this)
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.ArgMin):
        return _first_of_ordered_agg(node.this, node.expression)
    if isinstance(node, exp.ArgMin):
        return _first_of_ordered_agg(node, None)
    return node


@functools.lru_cache(maxsize=64)
def transpile(sql: str) -> str:
    """One DuckDB model SELECT in PostgreSQL, by sqlglot and the patches above.

    Raises:
        sqlglot.errors.SqlglotError: if the SQL does not parse, or uses a construct sqlglot
            cannot express in PostgreSQL.
    """
    tree = sqlglot.parse_one(sql, read="duckdb").transform(_patch)
    return tree.sql(dialect="postgres", pretty=True, unsupported_level=ErrorLevel.RAISE)


def variant_path(model: Model, sql_dir: Path | None = None) -> Path:
    """Where the hand-written PostgreSQL variant of ``model`` would be."""
    return (sql_dir or SQL_DIR) / VARIANTS_DIR / model.schema / f"{model.relation}.sql"


def postgres_sql(model: Model, sql_dir: Path | None = None) -> tuple[str, str]:
    """The SELECT building ``model`` on PostgreSQL, and how: ``variant`` or ``transpiled``.

    Raises:
        ModelBuildError: if the model's file cannot be transpiled; the message names the file
            and the fix (a hand-written variant).
    """
    variant = variant_path(model, sql_dir or model.path.parents[1])
    if variant.exists():
        return variant.read_text(encoding="utf-8").strip().rstrip(";"), "variant"
    try:
        return transpile(model.sql), "transpiled"
    except SqlglotError as exc:
        detail = str(exc).strip().splitlines()[0][:300]
        raise ModelBuildError(
            f"{model.path}: cannot be transpiled to PostgreSQL ({detail}); write a PostgreSQL "
            f"variant at {variant}"
        ) from None


def _retarget(sql: str, built: Iterable[str]) -> str:
    """Point references to models built in this run at their new tables."""
    for name in built:
        schema, relation = name.split(".", 1)
        sql = re.sub(rf'\b{schema}\."?{relation}"?(?!\w)', f"{schema}.{relation}{NEW_SUFFIX}", sql)
    return sql


def _document(conn: sa.Connection, model: Model, table: str) -> None:
    """COMMENT ON the new table and its columns, from the model's header (as on DuckDB)."""
    summary = " ".join(part for part in (model.description, f"Grain: {model.grain}.") if part)
    conn.exec_driver_sql(f"comment on table {table} is {sql_literal(summary)}".replace("%", "%%"))
    present = set(
        conn.execute(
            sa.text(
                "select column_name from information_schema.columns "
                "where table_schema = :schema and table_name = :name"
            ),
            {"schema": model.schema, "name": table.split(".", 1)[1]},
        ).scalars()
    )
    missing = sorted(set(model.column_docs) - present)
    if missing:
        raise ModelBuildError(
            f"{model.path}: the header documents columns the model does not produce: {missing}"
        )
    for column, doc in model.column_docs.items():
        statement = f'comment on column {table}."{column}" is {sql_literal(doc)}'
        conn.exec_driver_sql(statement.replace("%", "%%"))


@contextmanager
def build_transaction(conn: sa.Connection) -> Iterator[sa.Connection]:
    """The transaction a build runs in: ``BUILD_LOCK`` first, then REPEATABLE READ.

    The lock is taken at session level *before* the transaction begins, because a REPEATABLE
    READ transaction reads the snapshot of its first statement: a build that waited for
    another one inside its transaction would read the marts and ``meta.model_state`` from
    before that build (see ``pg/build_sql.py``). Commits on success, rolls back on error, and
    releases the lock either way.

    Args:
        conn: a connection not inside a transaction.
    """
    if conn.in_transaction():
        raise ModelBuildError("build_transaction needs a connection outside any transaction")
    conn.execute(sa.text("select pg_advisory_lock(:k)"), {"k": BUILD_LOCK})
    conn.commit()
    try:
        conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn
    finally:
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.execution_options(isolation_level=conn.default_isolation_level)
            conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": BUILD_LOCK})
            conn.commit()
        except sa.exc.DBAPIError:  # the session is gone, and its lock with it
            logger.debug("could not release the build lock: the connection is closed")


def _check_transaction(build_sql: PgBuildSQL) -> None:
    """Refuse to build outside ``build_transaction`` (the watermark would not be sound)."""
    high, low = (BUILD_LOCK >> 32) & 0xFFFFFFFF, BUILD_LOCK & 0xFFFFFFFF
    isolation, locked = build_sql.rows(
        "select current_setting('transaction_isolation'), exists (select 1 from pg_locks"
        " where locktype = 'advisory' and pid = pg_backend_pid() and granted"
        f" and classid = {high}::oid and objid = {low}::oid and objsubid = 1)"
    )[0]
    if isolation not in ("repeatable read", "serializable") or not locked:
        raise ModelBuildError(
            "PostgreSQL model builds run inside pg.models.build_transaction(conn) (the build "
            f"lock, then one REPEATABLE READ snapshot); this transaction is {isolation}"
            f"{'' if locked else ' without the build lock'}"
        )


def build(
    conn: sa.Connection,
    models: Sequence[Model] | None = None,
    *,
    select: Iterable[str] | None = None,
    full_refresh: bool = False,
) -> list[BuildResult]:
    """Bring every (selected) model up to date with ``raw``, in dependency order.

    Incremental as on DuckDB (``incremental.py``, the same planner): a model's rows are
    replaced only for the keys whose inputs changed since its last build. A model is built in
    full (into ``<name>__robofy_new``, swapped in at the end) when it is missing, its
    PostgreSQL SQL changed (variant file, transpiler), ``full_refresh`` is asked for,
    something it reads was rebuilt in full, too many of its keys changed, or its watermark is
    too old. Nothing is committed here: run it inside ``build_transaction(conn)``; readers see
    the previous tables until it commits, the new ones after.

    Args:
        conn: a connection to the PostgreSQL warehouse inside ``build_transaction``, whose
            ``raw`` and ``meta`` tables exist.
        models: the models to consider; defaults to ``discover()``.
        select: relation names to build; they are rebuilt in full, and models downstream of
            them that were not selected are rebuilt in full by the next build. Defaults to
            all, incrementally.
        full_refresh: rebuild every selected model from everything.

    Returns:
        One result per built model, in build order.

    Raises:
        ModelGraphError: if the graph is not buildable, or ``select`` names an unknown model.
        ModelBuildError: if a model cannot be transpiled or its SQL fails (the message names
            the model file), or ``conn`` is not inside ``build_transaction``.
    """
    everything, ordered, subset = plan_selection(models, select)
    sql = PgBuildSQL(conn)
    _check_transaction(sql)
    for schema in dict.fromkeys(model.schema for model in ordered):
        if schema not in SCHEMAS:
            raise ModelGraphError(f"unknown schema {schema!r}")
        conn.exec_driver_sql(f"create schema if not exists {schema}")
    for statement in helper_ddl():
        conn.exec_driver_sql(statement)
    sql.prepare_state()
    # Transpile everything first: a model that cannot run fails the build before any work.
    # Each model is planned and fingerprinted by the SQL PostgreSQL runs.
    sources = {model.name: postgres_sql(model) for model in ordered}
    state = sql.load_state()
    xmin, xmax = sql.watermark_now()
    planner = Planner(sql, f"_robofy_build_{next(_builds)}", everything)
    rebuilt: list[str] = []
    results: list[BuildResult] = []
    try:
        for model in ordered:
            pg_model = replace(model, sql=sources[model.name][0])
            try:
                with conn.begin_nested():  # a failed statement leaves the outer transaction usable
                    result, change = _build_one(
                        conn, sql, pg_model, planner, state, xmax, rebuilt, full_refresh or subset
                    )
            except sa.exc.DBAPIError as exc:
                detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
                raise ModelBuildError(
                    f"{model.path} ({sources[model.name][1]} for PostgreSQL) failed: {detail}"
                ) from None
            results.append(result)
            if change.mode == "full":
                rebuilt.append(model.name)
            table = f"{model.name}{NEW_SUFFIX}" if change.mode == "full" else model.name
            grain = (
                sql.grain_counts(change.new or table, model.key_columns)
                if model.key_columns and change.mode != "unchanged"
                else None
            )
            sql.save_state(model.name, pg_model.sql, xmin, change, grain, result.rows or 0)
        if subset:
            sql.forget_state(_downstream(everything, set(rebuilt)) - set(rebuilt))
    finally:
        # Dropped on success; after an error the transaction is rolled back with them.
        with contextlib.suppress(sa.exc.DBAPIError):
            planner.drop_all()
    _swap_in(conn, [model for model in ordered if model.name in rebuilt])
    _index_lookups(conn, everything)
    return results


def lookup_columns(models: Sequence[Model]) -> dict[str, list[tuple[str, ...]]]:
    """The column lists an incremental build finds a table model's rows by.

    A model's own incremental key (its rows to replace), and, for each model reading it as a
    ``key`` source, the columns that map onto that model's key (the rows to rebuild from).
    A list that begins another one is left out: the longer one's index serves it.
    """
    tables = {model.name for model in models if model.materialization == "table"}
    wanted: dict[str, set[tuple[str, ...]]] = {}
    for model in models:
        if model.name in tables and model.incremental_key:
            wanted.setdefault(model.name, set()).add(model.incremental_key)
        for source in model.sources:
            if source.relation in tables and not source.lookup:
                wanted.setdefault(source.relation, set()).add(source.columns)
    return {
        name: sorted(c for c in lists if not any(o != c and o[: len(c)] == c for o in lists))
        for name, lists in sorted(wanted.items())
    }


def _index_lookups(conn: sa.Connection, models: Sequence[Model]) -> None:
    """Give each table model a B-tree index per list of `lookup_columns` it lacks.

    PostgreSQL reads a whole table to find rows by columns it has no index on: measured on 90
    days of history (3.1M messages), each lookup of an hourly build's touched conversations
    took 0.5-0.7 s and grew with the history. DuckDB needs none (``incremental.py``, spans).
    An index is made once, in the build that finds it missing (a full build whose table was
    replaced, or the first build after an upgrade), and kept up to date by the loads after.
    """
    schemas = "('staging', 'marts', 'intermediate')"
    existing = {
        str(row[0])
        for row in conn.exec_driver_sql(
            f"select schemaname || '.' || indexname from pg_indexes where schemaname in {schemas}"
        )
    }
    built = {
        str(row[0])
        for row in conn.exec_driver_sql(
            f"select schemaname || '.' || tablename from pg_tables where schemaname in {schemas}"
        )
    }
    for name, lists in lookup_columns(models).items():
        schema, relation = name.split(".", 1)
        if name not in built:
            continue  # not built (yet)
        for columns in lists:
            digest = hashlib.md5(",".join(columns).encode(), usedforsecurity=False).hexdigest()
            index = f"{relation[:40]}__by_{digest[:8]}"
            if f"{schema}.{index}" in existing:
                continue
            listed = ", ".join(f'"{column}"' for column in columns)
            conn.exec_driver_sql(f'create index "{index}" on {name} ({listed})')


# Replacing a table (DROP, RENAME) waits for its readers: give up on the attempt after this
# long, below PostgreSQL's default deadlock_timeout (1 s), so a reader waiting on a table this
# build already replaced gets it back first; then try again, for about this many seconds.
SWAP_LOCK_TIMEOUT_MS = 500
SWAP_PATIENCE_S = 300.0


def _swap_in(conn: sa.Connection, models: Sequence[Model]) -> None:
    """Put the models built in full in place of their tables, without deadlocking readers.

    A table whose columns did not change gets the new rows in place (``delete``, ``insert``,
    its documentation again): row locks only, which no reader's lock conflicts with, so a
    dashboard reading several marts in one transaction never waits for the build (before, one
    DROP and RENAME per table took exclusive locks one table at a time, and a reader holding a
    mart while asking for one already swapped deadlocked with the build, which PostgreSQL then
    cancelled). A table whose columns changed (its SQL did) is replaced by DROP and RENAME, all
    of them in one attempt that gives up after ``SWAP_LOCK_TIMEOUT_MS`` on a lock and retries.
    """
    replace_tables: list[Model] = []
    for model in models:
        new = f"{model.name}{NEW_SUFFIX}"
        if _columns(conn, model.name) != _columns(conn, new):
            replace_tables.append(model)
            continue
        conn.exec_driver_sql(f"delete from {model.name}")
        conn.exec_driver_sql(f"insert into {model.name} select * from {new}")
        conn.exec_driver_sql(f"drop table {new}")
        _document(conn, model, model.name)
    if not replace_tables:
        return
    deadline = time.monotonic() + SWAP_PATIENCE_S
    pause = 0.05
    while True:
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"set local lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms'")
                for model in replace_tables:
                    conn.exec_driver_sql(f"drop table if exists {model.name}")
                    conn.exec_driver_sql(
                        f"alter table {model.name}{NEW_SUFFIX} rename to {model.relation}"
                    )
            break
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _LOCK_WAITS:
                raise
            if time.monotonic() > deadline:
                raise ModelBuildError(
                    f"could not replace {', '.join(m.name for m in replace_tables)} (their "
                    f"columns changed) in {SWAP_PATIENCE_S:.0f} s: readers kept them open; "
                    "end those sessions or rebuild when dashboards are idle"
                ) from None
            logger.info("replacing changed tables: readers hold them; trying again")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    conn.exec_driver_sql("set local lock_timeout to default")


# lock_not_available (lock_timeout) and deadlock_detected.
_LOCK_WAITS = frozenset({"55P03", "40P01"})


def _columns(conn: sa.Connection, relation: str) -> list[tuple[str, str]]:
    """``(name, type)`` of a table's columns in order; empty if it does not exist."""
    schema, name = relation.split(".", 1)
    rows = conn.execute(
        sa.text(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
            " join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = :schema and c.relname = :name and a.attnum > 0"
            " and not a.attisdropped order by a.attnum"
        ),
        {"schema": schema, "name": name},
    ).all()
    return [(str(column), str(typ)) for column, typ in rows]


_builds = itertools.count()


def _build_one(
    conn: sa.Connection,
    sql: PgBuildSQL,
    model: Model,
    planner: Planner,
    state: dict[str, tuple[str, Watermark]],
    xmax: int,
    rebuilt: list[str],
    full_refresh: bool,
) -> tuple[BuildResult, Change]:
    """Build one model (its ``sql`` the PostgreSQL SELECT), incrementally or in full.

    The rows it reports are its table's exact count, never counted when ``sql.row_counts``
    holds the previous one (see ``pg/build_sql.py``): a full build's ``create table ... as``
    reports its rows, an incremental build deleted and inserted ``change.deleted`` and
    ``change.inserted`` of them, an unchanged one none.
    """
    started = time.perf_counter()
    previous = state.get(model.name)
    reason = full_reason(model, previous, sql.exists(model.name), full_refresh, set(rebuilt))
    if not reason and previous is not None:
        reason = sql.stale_reason(previous[1], xmax)
    since = previous[1] if previous else None
    change = Change("full", reason=reason) if reason else planner.apply(model, since)
    table = model.name
    if change.mode == "full":
        table = f"{model.name}{NEW_SUFFIX}"
        conn.exec_driver_sql(f"drop table if exists {table}")
        select = _retarget(model.sql, rebuilt)
        rows = sql.write(f"create table {table} as\n{select}")
        # Statistics now, not when autovacuum gets to the table (after a 365-day build it was
        # still analyzing other tables, marts.sessions not yet): the models built after it,
        # and the next incremental builds, are planned with them (PgBuildSQL.about_rows,
        # cut_in_place).
        conn.exec_driver_sql(f"analyze {table}")
        _document(conn, model, table)
    elif model.name in sql.row_counts:
        rows = sql.row_counts[model.name] - change.deleted + change.inserted
    else:  # a state row from before counts were kept: counted once, then kept
        rows = sql.count_rows(table)
    seconds = time.perf_counter() - started
    logger.debug(
        "built %s %s (%s rows, %d keys%s) in %.3fs",
        change.mode,
        model.name,
        rows,
        change.keys,
        f": {change.reason}" if change.reason else "",
        seconds,
    )
    result = BuildResult(
        name=model.name,
        materialization="table",
        rows=int(rows),
        seconds=seconds,
        mode=change.mode,
        keys=change.keys,
        reason=change.reason,
    )
    return result, change
