"""The warehouse's tables declared once in SQLAlchemy Core, for PostgreSQL (and DuckDB).

The raw tables are derived from ``tables.RAW_TABLES`` (never copied by hand): each declared
type maps to a Core type, and ``NOT NULL`` and the soft-delete default carry over. The meta
tables are those of ``tables.META_DDL`` and ``incremental.STATE_DDL``, declared here in Core;
a test checks that they keep the same columns, types, nullability and keys as those DDLs
(but ``PG_ONLY_COLUMNS``: ``meta.model_state.watermark_xid`` and ``row_count``, see
``pg/build_sql.py``).

JSON columns (``_payload``, ``row_data``, ``payload``, ``value``) are PostgreSQL ``json``, not
``jsonb``: ``json`` keeps the text exactly as loaded (the compact, key-sorted form
``load.encode_payload`` writes), so ``_payload::text``, its md5 and every mart column read from
it are byte for byte those of DuckDB, which stores JSON as text too; ``jsonb`` would reorder
keys, add spaces and rewrite numbers. ``json`` is still validated on input and has the same
``->``/``->>`` operators; each read re-parses the text, as on DuckDB.

Each raw table gets an index on ``_slice`` (every load deletes and compares one slice), one on
its key (the comparison joins on it), one on ``_run_id`` (the run-scoped data-quality checks
read the rows one run wrote, so their cost follows the change, not the history) and one on
``_xid``, a PostgreSQL-only column holding the transaction that wrote the row (the model
builds find what changed since their last snapshot through it, see ``build_sql.py``; so does
``meta.removed_rows``); DuckDB needs none of them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from robofy_etl.warehouse.tables import RAW_TABLES, SCHEMAS, RawTable

__all__ = ["METADATA", "PG_ONLY_COLUMNS", "SCHEMA_LOCK", "create_all", "ddl", "raw_table"]

METADATA = sa.MetaData()
# pg_advisory_xact_lock key taken by create_all, so two processes creating the schema at the
# same time do not collide on the catalog ("duplicate key value violates unique constraint").
SCHEMA_LOCK = 0x526F626F66790001
# Columns PostgreSQL has beyond the DuckDB tables: (schema, table, column). The incremental
# watermark of a model build is a transaction id there, a time on DuckDB, and each model's row
# count is kept, where DuckDB counts (cheaply) every build (pg/build_sql.py).
# Every raw row, and every removed row, also records the transaction that wrote it (``_xid``,
# set by every statement of pg/load.py that writes one: ``CURRENT_XID``), indexed: a model
# build finds what changed since its snapshot through that index, whatever the history
# (pg/build_sql.py).
XID_COLUMN = "_xid"
CURRENT_XID = "pg_current_xact_id()::text::bigint"
PG_ONLY_COLUMNS = frozenset(
    {
        ("meta", "model_state", "watermark_xid"),
        ("meta", "model_state", "row_count"),
        ("meta", "removed_rows", XID_COLUMN),
    }
    | {("raw", name, XID_COLUMN) for name in RAW_TABLES}
)

# tables.py type (first word) -> Core type. VARCHAR is String() (VARCHAR without a length).
_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "BIGINT": sa.BigInteger(),
    "INTEGER": sa.Integer(),
    "SMALLINT": sa.SmallInteger(),
    "DOUBLE": sa.Double(),
    "BOOLEAN": sa.Boolean(),
    "VARCHAR": sa.String(),
    "JSON": sa.JSON(),
    "TIMESTAMP": sa.DateTime(),
    "DATE": sa.Date(),
}


def _xid_column() -> sa.Column[Any]:
    return sa.Column(XID_COLUMN, sa.BigInteger(), nullable=True)


def _raw(table: RawTable) -> sa.Table:
    columns: list[sa.Column[Any]] = []
    for name, declared in table.all_columns:
        words = declared.upper().split()
        default = None
        if "DEFAULT" in words:
            default = sa.text(declared.split()[words.index("DEFAULT") + 1])
        columns.append(
            sa.Column(
                name,
                _TYPES[words[0]],
                nullable="NOT NULL" not in declared.upper(),
                server_default=default,
            )
        )
    columns.append(_xid_column())
    return sa.Table(
        table.name,
        METADATA,
        *columns,
        sa.Index(f"{table.name}__xid", XID_COLUMN),
        sa.Index(f"{table.name}__slice", "_slice"),
        sa.Index(f"{table.name}__key", *table.key),
        sa.Index(f"{table.name}__run", "_run_id"),
        schema="raw",
    )


RAW: dict[str, sa.Table] = {name: _raw(table) for name, table in RAW_TABLES.items()}


def _meta(name: str, *items: sa.schema.SchemaItem, key: tuple[str, ...] = ()) -> sa.Table:
    extra = (sa.PrimaryKeyConstraint(*key),) if key else ()
    return sa.Table(name, METADATA, *items, *extra, schema="meta")


def _c(name: str, type_: sa.types.TypeEngine[Any], null: bool = False) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=null)


_S, _B, _T, _J = sa.String(), sa.BigInteger(), sa.DateTime(), sa.JSON()

META: dict[str, sa.Table] = {
    t.name: t
    for t in (
        _meta(
            "sync_state",
            _c("stream", _S),
            _c("scope", _S),
            _c("value", _J),
            _c("run_id", _S),
            _c("updated_at", _T),
            key=("stream", "scope"),
        ),
        _meta(
            "load_audit",
            _c("run_id", _S),
            _c("stream", _S),
            _c("slice", _S),
            _c("rows_inserted", _B),
            _c("rows_updated", _B),
            _c("rows_deleted", _B),
            _c("rows_unchanged", _B),
            _c("api_requests", _B, null=True),
            _c("started_at", _T, null=True),
            _c("finished_at", _T),
        ),
        _meta(
            "schema_drift",
            _c("stream", _S),
            _c("field_name", _S),
            _c("change", _S),
            _c("occurrences", _B),
            _c("example", _S, null=True),
            _c("first_seen_at", _T),
            _c("last_seen_at", _T),
            _c("first_run_id", _S),
            _c("last_run_id", _S),
            key=("stream", "field_name", "change"),
        ),
        _meta(
            "quarantine",
            _c("stream", _S),
            _c("reason", _S),
            _c("payload", _J, null=True),
            _c("run_id", _S),
            _c("slice", _S, null=True),
            _c("quarantined_at", _T),
        ),
        _meta(
            "outstanding",
            _c("stream", _S),
            _c("chatbot_id", _S),
            _c("item", _S),
            _c("slice", _S, null=True),
            _c("reason", _S),
            _c("attempts", _B),
            _c("first_seen_at", _T),
            _c("last_seen_at", _T),
            _c("last_run_id", _S),
            key=("stream", "chatbot_id", "item"),
        ),
        _meta(
            "missing",
            _c("stream", _S),
            _c("key", _S),
            _c("chatbot_id", _S, null=True),
            _c("slice", _S, null=True),
            _c("misses", _B),
            _c("first_missed_at", _T),
            _c("last_missed_at", _T),
            _c("last_run_id", _S),
            key=("stream", "key"),
        ),
        _meta(
            "removed_rows",
            _c("stream", _S),
            _c("key", _S),
            _c("slice", _S),
            _c("reason", _S),
            _c("row_data", _J),
            _c("run_id", _S),
            _c("removed_at", _T),
            _xid_column(),
            sa.Index("removed_rows__xid", XID_COLUMN),
        ),
        _meta(
            "model_state",
            _c("model", _S),
            _c("fingerprint", _S),
            _c("watermark", _T, null=True),
            _c("built_at", _T),
            _c("mode", _S),
            _c("keys_rebuilt", _B, null=True),
            _c("grain_rows", _B, null=True),
            _c("grain_duplicates", _B, null=True),
            _c("grain_null_keys", _B, null=True),
            # PostgreSQL only: the incremental watermark as a transaction id (pg/build_sql.py).
            _c("watermark_xid", _B, null=True),
            # PostgreSQL only: the rows of the model's table, kept by every build.
            _c("row_count", _B, null=True),
            key=("model",),
        ),
    )
}


def raw_table(name: str) -> sa.Table:
    """The Core table of ``raw.<name>``."""
    return RAW[name.removeprefix("raw.")]


def ddl(dialect: sa.engine.Dialect | None = None, *, indexes: bool = True) -> list[str]:
    """Every statement that creates the schemas and tables, compiled for ``dialect``.

    Idempotent (``if not exists`` throughout). PostgreSQL's dialect by default; DuckDB accepts
    the same text without the indexes (``indexes=False``), see tests/warehouse/pg/test_schema.py.
    """
    dialect = dialect or postgresql.dialect()  # type: ignore[no-untyped-call]
    statements = [
        str(CreateSchema(s, if_not_exists=True).compile(dialect=dialect)) for s in SCHEMAS
    ]
    for table in METADATA.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        if indexes:
            statements.extend(
                str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                for index in sorted(table.indexes, key=lambda i: str(i.name))
            )
    return [s.strip() for s in statements]


def create_all(conn: sa.Connection) -> None:
    """Create the schemas, raw and meta tables and indexes that do not exist yet (idempotent).

    Runs in the caller's transaction, under an advisory lock, so concurrent callers take turns.
    Only what is missing is created: ``create index if not exists`` would take a SHARE lock on
    its table even when the index is there, and every process initializes once, so a sync
    starting while another one loads would queue behind (and deadlock with) that load's
    writes. Creating a table that exists takes no lock on it.
    """
    conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
    existing = set(
        conn.execute(
            sa.text(
                "select schemaname || '.' || indexname from pg_indexes"
                " where schemaname = any(:schemas)"
            ),
            {"schemas": list(SCHEMAS)},
        ).scalars()
    )
    dialect = conn.dialect
    for schema in SCHEMAS:
        conn.exec_driver_sql(str(CreateSchema(schema, if_not_exists=True).compile(dialect=dialect)))
    for table in METADATA.sorted_tables:
        conn.exec_driver_sql(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
    _add_xid_columns(conn)
    for table in METADATA.sorted_tables:
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if f"{table.schema}.{index.name}" not in existing:
                conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=dialect)))


def _add_xid_columns(conn: sa.Connection) -> None:
    """Give the tables of a warehouse made before ``_xid`` existed that column.

    Their rows have none, so every model's build state is dropped with it: the next build is a
    full one, and the builds after it only need the rows written since, which have one.
    """
    present = set(
        conn.execute(
            sa.text(
                "select table_schema || '.' || table_name from information_schema.columns"
                " where column_name = :column and table_schema in ('raw', 'meta')"
            ),
            {"column": XID_COLUMN},
        ).scalars()
    )
    added = False
    for schema, name, column in sorted(PG_ONLY_COLUMNS):
        if column == XID_COLUMN and f"{schema}.{name}" not in present:
            conn.exec_driver_sql(f"alter table {schema}.{name} add column {XID_COLUMN} bigint")
            added = True
    if added:
        conn.exec_driver_sql("delete from meta.model_state")
