"""Raw and meta table definitions: the landing contract between the pipeline and sql/.

Raw tables keep the key columns typed (and the timestamps the pipeline partitions or compares
on, parsed to naive UTC), plus the record as received in ``_payload`` (keys normalized to
snake_case, secrets removed) and the lineage columns ``_loaded_at``, ``_run_id`` and ``_slice``.
Everything else is typed in ``sql/staging``.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMAS = ("raw", "staging", "marts", "meta")

LINEAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_payload", "JSON NOT NULL"),
    ("_loaded_at", "TIMESTAMP NOT NULL"),
    ("_run_id", "VARCHAR NOT NULL"),
    ("_slice", "VARCHAR NOT NULL"),
)
SOFT_DELETE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_is_deleted", "BOOLEAN NOT NULL DEFAULT false"),
    ("_deleted_at", "TIMESTAMP"),
)


@dataclass(frozen=True)
class RawTable:
    """One landing table: ``raw.<name>``.

    Attributes:
        name: relation name inside the ``raw`` schema (also the stream name).
        columns: typed columns supplied by the pipeline, in order, as (name, SQL type).
        key: the columns that identify one record.
        snapshot: True for small dimensions loaded as full snapshots with soft deletes.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    snapshot: bool = False

    @property
    def relation(self) -> str:
        return f"raw.{self.name}"

    @property
    def all_columns(self) -> tuple[tuple[str, str], ...]:
        extra = SOFT_DELETE_COLUMNS if self.snapshot else ()
        return self.columns + LINEAGE_COLUMNS + extra

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the typed columns the pipeline supplies, in order."""
        return tuple(name for name, _ in self.columns)

    def base_type(self, column: str) -> str:
        """The SQL type of ``column`` without constraints (``"BIGINT NOT NULL"`` -> ``"BIGINT"``).

        Raises:
            KeyError: if the table has no such column.
        """
        for name, sql_type in self.all_columns:
            if name == column:
                return sql_type.split()[0].upper()
        raise KeyError(column)

    def is_not_null(self, column: str) -> bool:
        """Whether ``column`` is declared NOT NULL."""
        return any(
            name == column and "NOT NULL" in sql_type.upper() for name, sql_type in self.all_columns
        )

    @property
    def ddl(self) -> str:
        """Idempotent ``create table if not exists`` statement for this table."""
        cols = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in self.all_columns)
        return f"create table if not exists {self.relation} (\n    {cols})"


PROJECTS = RawTable(
    "robofy__projects",
    (
        ("project_id", "BIGINT NOT NULL"),
        ("created_at", "TIMESTAMP"),
        ("updated_at", "TIMESTAMP"),
    ),
    key=("project_id",),
    snapshot=True,
)
CHATBOTS = RawTable(
    "robofy__chatbots",
    (
        ("chatbot_id", "VARCHAR NOT NULL"),
        ("project_id", "BIGINT NOT NULL"),
        ("created_at", "TIMESTAMP"),
        ("updated_at", "TIMESTAMP"),
    ),
    key=("chatbot_id",),
    snapshot=True,
)
# _slice = the UTC day the session started ('YYYY-MM-DD').
INBOX_SESSIONS = RawTable(
    "robofy__inbox_sessions",
    (
        ("chatbot_id", "VARCHAR NOT NULL"),
        ("session_id", "VARCHAR NOT NULL"),
        ("project_id", "BIGINT NOT NULL"),
        ("started_at", "TIMESTAMP"),
        ("last_message_at", "TIMESTAMP"),
    ),
    key=("chatbot_id", "session_id"),
)
# _slice = the UTC day the message's session started, so a transcript lives in one partition.
CHAT_MESSAGES = RawTable(
    "robofy__chat_messages",
    (
        ("chatbot_id", "VARCHAR NOT NULL"),
        ("session_id", "VARCHAR NOT NULL"),
        ("message_id", "VARCHAR NOT NULL"),
        ("project_id", "BIGINT NOT NULL"),
        ("ordinal", "INTEGER NOT NULL"),
        ("sent_at", "TIMESTAMP"),
    ),
    key=("chatbot_id", "session_id", "message_id"),
)
# _slice = the UTC day the lead was created.
LEADS = RawTable(
    "robofy__leads",
    (
        ("lead_id", "VARCHAR NOT NULL"),
        ("project_id", "BIGINT NOT NULL"),
        ("chatbot_id", "VARCHAR NOT NULL"),
        ("session_id", "VARCHAR"),
        ("created_at", "TIMESTAMP"),
    ),
    key=("lead_id",),
)
# _slice = stat_date.
MESSAGE_STATS = RawTable(
    "robofy__message_stats",
    (
        ("project_id", "BIGINT NOT NULL"),
        ("chatbot_id", "VARCHAR NOT NULL"),
        ("stat_date", "DATE NOT NULL"),
    ),
    key=("chatbot_id", "stat_date"),
)

RAW_TABLES: dict[str, RawTable] = {
    t.name: t for t in (PROJECTS, CHATBOTS, INBOX_SESSIONS, CHAT_MESSAGES, LEADS, MESSAGE_STATS)
}

# The pipeline's own state and audit trail. Written in the same transaction as the data.
META_DDL: tuple[str, ...] = (
    """create table if not exists meta.sync_state (
        stream VARCHAR NOT NULL,
        scope VARCHAR NOT NULL,
        value JSON NOT NULL,
        run_id VARCHAR NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        primary key (stream, scope))""",
    """create table if not exists meta.load_audit (
        run_id VARCHAR NOT NULL,
        stream VARCHAR NOT NULL,
        slice VARCHAR NOT NULL,
        rows_inserted BIGINT NOT NULL,
        rows_updated BIGINT NOT NULL,
        rows_deleted BIGINT NOT NULL,
        rows_unchanged BIGINT NOT NULL,
        api_requests BIGINT,
        started_at TIMESTAMP,
        finished_at TIMESTAMP NOT NULL)""",
    """create table if not exists meta.schema_drift (
        stream VARCHAR NOT NULL,
        field_name VARCHAR NOT NULL,
        change VARCHAR NOT NULL,
        occurrences BIGINT NOT NULL,
        example VARCHAR,
        first_seen_at TIMESTAMP NOT NULL,
        last_seen_at TIMESTAMP NOT NULL,
        first_run_id VARCHAR NOT NULL,
        last_run_id VARCHAR NOT NULL,
        primary key (stream, field_name, change))""",
    """create table if not exists meta.quarantine (
        stream VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        payload JSON,
        run_id VARCHAR NOT NULL,
        slice VARCHAR,
        quarantined_at TIMESTAMP NOT NULL)""",
    # Work that did not arrive complete and is retried by every later run until it does:
    # a transcript (item = session id), or a list scan (item = '<endpoint> <window>').
    """create table if not exists meta.outstanding (
        stream VARCHAR NOT NULL,
        chatbot_id VARCHAR NOT NULL,
        item VARCHAR NOT NULL,
        slice VARCHAR,
        reason VARCHAR NOT NULL,
        attempts BIGINT NOT NULL,
        first_seen_at TIMESTAMP NOT NULL,
        last_seen_at TIMESTAMP NOT NULL,
        last_run_id VARCHAR NOT NULL,
        primary key (stream, chatbot_id, item))""",
    # Stored rows a complete scan did not list, and how many scans in a row missed them.
    """create table if not exists meta.missing (
        stream VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        chatbot_id VARCHAR,
        slice VARCHAR,
        misses BIGINT NOT NULL,
        first_missed_at TIMESTAMP NOT NULL,
        last_missed_at TIMESTAMP NOT NULL,
        last_run_id VARCHAR NOT NULL,
        primary key (stream, key))""",
    # Every row ever deleted from a raw table, as it was stored, with the reason: recoverable.
    """create table if not exists meta.removed_rows (
        stream VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        slice VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        row_data JSON NOT NULL,
        run_id VARCHAR NOT NULL,
        removed_at TIMESTAMP NOT NULL)""",
)


# What each bookkeeping table holds, for the data dictionary (docs/tables.md).
META_DOCS: dict[str, str] = {
    "meta.sync_state": "Each stream's resume point (cursor, watermark) per scope.",
    "meta.load_audit": "One row per loaded slice and run: rows inserted, updated, deleted and"
    " unchanged, API requests, start and end.",
    "meta.schema_drift": "Fields the API sent that the pipeline does not know, or stopped"
    " sending, with an example and when first and last seen.",
    "meta.quarantine": "Records that could not be loaded (no key, an impossible time, ...), with"
    " the reason and the record (secrets removed).",
    "meta.outstanding": "Work that did not arrive complete (a cut transcript, a failed list"
    " scan): every run retries it until it does.",
    "meta.missing": "Stored rows that complete scans did not list, and how many scans in a row"
    " missed them (a lead is removed after 3).",
    "meta.removed_rows": "Every row ever removed from a raw table, as it was stored, with the"
    " reason and the run: nothing is lost.",
    "meta.model_state": "Per model: the SQL fingerprint and watermark of its last build, full or"
    " incremental, how many keys it rebuilt and (on PostgreSQL) how many rows its table holds.",
}
