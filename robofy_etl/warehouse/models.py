"""Build the ``sql/`` models (staging views, mart tables) in dependency order, documented."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Literal

import duckdb

from robofy_etl.warehouse import incremental
from robofy_etl.warehouse.errors import WarehouseMemoryError
from robofy_etl.warehouse.tables import META_DDL, RAW_TABLES, SCHEMAS

logger = logging.getLogger(__name__)


def _packaged_sql_dir() -> Path:
    """The SQL models shipped with the package: ``robofy_etl/sql`` (package data).

    This is the one place the models are located. In a checkout, ``robofy_etl/sql`` is a symlink
    to the top-level ``sql/`` folder analysts browse; it is resolved so that model paths (and
    error messages) name the files one edits. In an installed wheel it is a plain folder.
    """
    folder = resources.files("robofy_etl") / "sql"
    # A package imported from a zip archive has no folder to read; discover() then reports it.
    return folder.resolve() if isinstance(folder, Path) else Path(str(folder))


SQL_DIR: Path = _packaged_sql_dir()

Materialization = Literal["view", "table"]

# Staging is a table: each record's JSON is parsed once, when its raw row changes, and the marts
# are maintained incrementally from it (see incremental.py). Marts are read by dashboards.
MATERIALIZATIONS: dict[str, Materialization] = {
    "staging": "table",
    "intermediate": "view",
    "marts": "table",
}

# Deliberately simple (style.md B7): a dependency is a fully qualified relation after from/join.
_REF = re.compile(r"\b(?:from|join)\s+(raw|staging|marts|intermediate)\.(\w+)", re.IGNORECASE)
_LINE_COMMENT = re.compile(r"--[^\n]*")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_HEADER_KEY = re.compile(r"^(grain|description|columns|incremental)\s*:\s*(.*)$")
_SOURCE = re.compile(r"^(key|(?:raw|staging|marts|intermediate)\.\w+)\s*:\s*(lookup\s+)?(.+)$")
_SPAN = re.compile(r"^span\s*:\s*(\w+)\s+per\s+(.+)$")
_COLUMN_DOC = re.compile(r"^(\w+)\s*:\s*(.+)$")
_GRAIN = re.compile(r"one row per\s+(?:\(([^)]*)\)|(\w+))", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class ModelError(Exception):
    """Base class for errors about the SQL models."""


class ModelGraphError(ModelError):
    """The models' references do not form a buildable graph (unknown reference or cycle)."""


class ModelBuildError(ModelError):
    """A model's SQL failed in the warehouse; the message names the model file."""


@dataclass(frozen=True)
class Source:
    """How rows of one relation a model reads relate to the model's incremental key.

    Attributes:
        relation: the relation read, ``schema.name``.
        columns: its columns that correspond, in order, to the model's key (``key`` source),
            or that the model's rows carry under the same names (``lookup`` source).
        lookup: a small relation read whole (a dimension): a change to one of its rows
            touches every model row with the same ``columns`` values. Otherwise only the rows
            whose ``columns`` are among the touched keys are read, and a changed row touches
            the key its ``columns`` give.
        using: for a lookup, the columns the model takes from it: a change elsewhere in the
            row (a usage counter, a timestamp) touches nothing. Empty: any change touches.
    """

    relation: str
    columns: tuple[str, ...]
    lookup: bool = False
    using: tuple[str, ...] = ()


@dataclass(frozen=True)
class Span:
    """A model's time column and the key prefix its stored span is kept by (see incremental.py).

    ``--   span: sent_at per chatbot_id, session_id`` in the ``incremental:`` section: the
    build keeps, per ``(chatbot_id, session_id)``, the range of ``sent_at`` over its rows, so
    finding a few conversations' rows tests that range before the key.

    Attributes:
        column: a date or time column of the model.
        per: the columns the range is kept by: some or all of the incremental key's.
    """

    column: str
    per: tuple[str, ...]


@dataclass(frozen=True)
class Model:
    """One SQL file, built as the relation ``<folder>.<file stem>``.

    Attributes:
        name: the relation, for example ``marts.sessions``.
        schema: the schema (the file's folder), for example ``marts``.
        path: the SQL file.
        sql: the file's text (one SELECT, header comment included), without a trailing ``;``.
        deps: the relations the SQL reads, as ``schema.relation`` strings, in order of appearance.
        materialization: ``view`` or ``table``.
        grain: the header's ``grain:`` line, for example ``one row per (chatbot_id, session_id)``.
        description: the header's ``description:`` text.
        column_docs: one-line description per output column, from the header's ``columns:`` list.
        incremental_key: the columns whose values an incremental build replaces (the header's
            ``incremental:`` section, ``key:``; a staging model's raw key); empty: always
            rebuilt in full.
        sources: how each relation the model reads maps onto ``incremental_key`` (see
            ``Source``); a relation read but not listed makes every build of it a full one.
        span: the time column whose range is kept per key (see ``Span``), or None.
    """

    name: str
    schema: str
    path: Path
    sql: str
    deps: tuple[str, ...]
    materialization: Materialization
    grain: str = ""
    description: str = ""
    column_docs: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    incremental_key: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    span: Span | None = None

    @property
    def relation(self) -> str:
        """The relation name inside its schema (the file stem)."""
        return self.name.split(".", 1)[1]

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns named by the grain (``one row per (a, b)`` gives ``("a", "b")``)."""
        match = _GRAIN.search(self.grain)
        if match is None:
            return ()
        names = match.group(1) if match.group(1) is not None else match.group(2)
        return tuple(part.strip() for part in names.split(",") if part.strip())


@dataclass(frozen=True)
class BuildResult:
    """What building one model did.

    Attributes:
        name: the relation built.
        materialization: ``view`` or ``table``.
        rows: row count for tables; None for views (counting would run the query).
        seconds: wall time spent creating and documenting the relation.
        mode: ``full``, ``incremental`` or ``unchanged`` (see ``incremental.py``).
        keys: the keys an incremental build replaced.
        reason: why a build was full.
        chunks: how many chunks a full build read its inputs in (0: one statement).
    """

    name: str
    materialization: Materialization
    rows: int | None
    seconds: float
    mode: incremental.Mode = "full"
    keys: int = 0
    reason: str = ""
    chunks: int = 0


def _header_lines(sql: str) -> Iterator[tuple[str, str | None, str]]:
    """The leading comment block of a model file, line by line: ``(section, head, text)``.

    ``-- key: value`` at the left opens a section (``head`` is its value); deeper-indented
    lines (``--   name: ...``) belong to the section last opened (``head`` is None).
    """
    section = ""
    for raw_line in sql.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if not line.startswith("--"):
            return
        text = line[2:].strip()
        indent = len(line[2:]) - len(line[2:].lstrip())
        key = _HEADER_KEY.match(text) if indent <= 1 else None
        if key is not None:
            section = key.group(1)
            yield section, key.group(2).strip(), text
        else:
            yield section, None, text


def parse_header(sql: str) -> tuple[str, str, dict[str, str]]:
    """Read the leading comment block of a model file.

    The block holds ``-- grain: ...``, ``-- description: ...`` (which may continue on the
    following comment lines) and ``-- columns:`` followed by ``--   name: description`` lines.

    Args:
        sql: the model file's text.

    Returns:
        (grain, description, column_docs).
    """
    grain = ""
    description: list[str] = []
    columns: dict[str, str] = {}
    for section, head, text in _header_lines(sql):
        if head is not None:
            if section == "grain":
                grain = head
            elif section == "description" and head:
                description.append(head)
        elif section == "columns":
            doc = _COLUMN_DOC.match(text)
            if doc is not None:
                columns[doc.group(1)] = doc.group(2).strip()
        elif section == "description" and text:
            description.append(text)
    return grain, " ".join(description), columns


def parse_incremental(sql: str) -> tuple[tuple[str, ...], tuple[Source, ...]]:
    """Read the header's ``incremental:`` section.

    ``--   key: a, b`` names the model's incremental key; ``--   staging.x: c, d`` says that
    rows of ``staging.x`` with ``(c, d)`` equal to a key are all the rows that key needs, and
    ``--   staging.y: lookup e using f, g`` that ``staging.y`` is read whole and a change of its
    ``f`` or ``g`` touches the rows with the same ``e``.

    Returns:
        (key, sources); both empty when the header has no such section.
    """
    key: tuple[str, ...] = ()
    sources: list[Source] = []
    for section, head, text in _header_lines(sql):
        entry = _SOURCE.match(text) if section == "incremental" and head is None else None
        if entry is None:
            continue
        names, _, used = entry.group(3).partition(" using ")
        columns = tuple(c.strip() for c in names.split(",") if c.strip())
        using = tuple(c.strip() for c in used.split(",") if c.strip())
        if entry.group(1) == "key":
            key = columns
        else:
            sources.append(Source(entry.group(1).lower(), columns, bool(entry.group(2)), using))
    return key, tuple(sources)


def parse_span(sql: str) -> Span | None:
    """Read ``--   span: <column> per <a>, <b>`` from the header's ``incremental:`` section."""
    for section, head, text in _header_lines(sql):
        entry = _SPAN.match(text) if section == "incremental" and head is None else None
        if entry is not None:
            per = tuple(c.strip() for c in entry.group(2).split(",") if c.strip())
            return Span(entry.group(1), per)
    return None


def parse_deps(sql: str) -> tuple[str, ...]:
    """The fully qualified relations a SELECT reads, comments ignored, in order of appearance.

    Args:
        sql: the model's SQL.

    Returns:
        Distinct ``schema.relation`` strings, lowercased.
    """
    text = _LINE_COMMENT.sub("", _BLOCK_COMMENT.sub("", sql))
    seen: dict[str, None] = {}
    for schema, relation in _REF.findall(text):
        seen.setdefault(f"{schema.lower()}.{relation.lower()}", None)
    return tuple(seen)


def load_model(path: Path, schema: str) -> Model:
    """Read one model file.

    Args:
        path: the ``.sql`` file.
        schema: the schema it builds into (its folder name).

    Returns:
        The model.

    Raises:
        ModelError: if the folder or file name is not a plain lowercase identifier, or the
            folder is not a known layer.
    """
    relation = path.stem
    for part in (schema, relation):
        if not _IDENTIFIER.match(part):
            raise ModelError(f"{path}: {part!r} is not a lowercase snake_case identifier")
    if schema not in MATERIALIZATIONS:
        raise ModelError(f"{path}: folder {schema!r} is not a layer {sorted(MATERIALIZATIONS)}")
    sql = path.read_text(encoding="utf-8").strip().rstrip(";").rstrip()
    name = f"{schema}.{relation}"
    grain, description, column_docs = parse_header(sql)
    deps = tuple(dep for dep in parse_deps(sql) if dep != name)
    key, sources = parse_incremental(sql)
    raw = [RAW_TABLES.get(dep.removeprefix("raw.")) for dep in deps if dep.startswith("raw.")]
    if schema == "staging" and len(deps) == 1 and raw and raw[0] is not None:
        # Staging is one-to-one with its raw table (style.md B7): it is keyed like it.
        key, sources = raw[0].key, (Source(deps[0], raw[0].key),)
    for source in sources:
        if source.relation not in deps:
            raise ModelError(
                f"{path}: the incremental section names {source.relation}, "
                "which the model does not read"
            )
    span = parse_span(sql)
    if span is not None and (not span.per or not set(span.per) <= set(key)):
        raise ModelError(
            f"{path}: the span is kept per {', '.join(span.per) or 'nothing'}, which must be "
            f"some of the incremental key's columns ({', '.join(key) or 'none'})"
        )
    return Model(
        name=name,
        schema=schema,
        path=path,
        sql=sql,
        deps=deps,
        materialization=MATERIALIZATIONS[schema],
        grain=grain,
        description=description,
        column_docs=column_docs,
        incremental_key=key,
        sources=sources,
        span=span,
    )


def discover(sql_dir: Path | None = None) -> list[Model]:
    """Find every model under ``sql_dir`` (``<layer>/<relation>.sql``).

    Args:
        sql_dir: the folder holding ``staging/``, ``marts/`` (and optionally ``intermediate/``);
            defaults to the models shipped with the package (``SQL_DIR``).

    Returns:
        The models, sorted by relation name.

    Raises:
        ModelError: if the folder does not exist or a file name is not a valid relation name.
    """
    root = SQL_DIR if sql_dir is None else sql_dir
    if not root.is_dir():
        raise ModelError(
            f"SQL model folder not found: {root}. robofy-etl ships its models as package data "
            "in robofy_etl/sql: reinstall it (pip install --force-reinstall robofy-etl). In a "
            "checkout, robofy_etl/sql is a symlink to sql/: clone with symlinks enabled "
            "(git config core.symlinks true) and run make install."
        )
    models = [
        load_model(path, folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.glob("*.sql"))
    ]
    return sorted(models, key=lambda m: m.name)


def topological_order(models: Iterable[Model]) -> list[Model]:
    """Order models so that every model comes after the models it reads.

    Ties are broken by name, so the order is deterministic.

    Args:
        models: the models to order.

    Returns:
        The models in build order.

    Raises:
        ModelGraphError: on a duplicate relation, a reference to a relation that is neither a
            model nor a raw table of ``tables.RAW_TABLES``, or a cycle.
    """
    by_name: dict[str, Model] = {}
    for model in models:
        if model.name in by_name:
            raise ModelGraphError(f"{model.path}: relation {model.name} is defined twice")
        by_name[model.name] = model
    raw = {table.relation for table in RAW_TABLES.values()}
    pending: dict[str, set[str]] = {}
    for model in by_name.values():
        upstream: set[str] = set()
        for dep in model.deps:
            if dep.startswith("raw."):
                if dep not in raw:
                    raise ModelGraphError(
                        f"{model.path}: reads {dep}, which is not a raw table in tables.RAW_TABLES"
                    )
            elif dep in by_name:
                upstream.add(dep)
            else:
                raise ModelGraphError(f"{model.path}: reads {dep}, which no model file defines")
        pending[model.name] = upstream
    ordered: list[Model] = []
    while pending:
        ready = sorted(name for name, upstream in pending.items() if not upstream)
        if not ready:
            cycle = ", ".join(sorted(pending))
            raise ModelGraphError(f"models form a dependency cycle among: {cycle}")
        for name in ready:
            ordered.append(by_name[name])
            del pending[name]
        for upstream in pending.values():
            upstream.difference_update(ready)
    return ordered


def _quote(value: str) -> str:
    """A SQL string literal (comments cannot be bound as parameters in DuckDB)."""
    return "'" + value.replace("'", "''") + "'"


def _columns(conn: duckdb.DuckDBPyConnection, model: Model) -> list[str]:
    """The columns the built relation has, in order (from an empty result: reading
    ``duckdb_columns()`` scans the whole catalog, 1.5-2.5 ms a model against 0.4)."""
    return [column[0] for column in conn.execute(f"select * from {model.name} limit 0").description]


def _document(conn: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Attach the header's description and column docs as DuckDB comments."""
    kind = "view" if model.materialization == "view" else "table"
    summary = " ".join(part for part in (model.description, f"Grain: {model.grain}.") if part)
    present = _columns(conn, model)
    missing = sorted(set(model.column_docs) - set(present))
    if missing:
        raise ModelBuildError(
            f"{model.path}: the header documents columns the model does not produce: {missing}"
        )
    undocumented = [column for column in present if column not in model.column_docs]
    if undocumented:
        logger.warning("%s: columns without a description: %s", model.path, undocumented)
    # One script, not a call per statement.
    comments = [f"comment on {kind} {model.name} is {_quote(summary)}"] + [
        f'comment on column {model.name}."{column}" is {_quote(doc)}'
        for column, doc in model.column_docs.items()
    ]
    conn.execute(";\n".join(comments))


def build(
    conn: duckdb.DuckDBPyConnection,
    models: Sequence[Model] | None = None,
    *,
    select: Iterable[str] | None = None,
    full_refresh: bool = False,
) -> list[BuildResult]:
    """Bring every model up to date with ``raw``, in dependency order, with comments.

    Incremental by default (see ``incremental.py``): a model's rows are replaced only for the
    keys whose inputs changed since its last build; a missing model, one whose SQL changed, or
    ``full_refresh`` rebuilds from everything. Nothing is committed here: run it inside the
    caller's transaction (``begin`` ... ``commit``) and readers see either the previous build or
    the new one, never a mix.

    Args:
        conn: an open DuckDB connection whose ``raw`` and ``meta`` tables exist.
        models: the models to consider; defaults to ``discover()``.
        select: relation names to build (for example ``["marts.sessions"]``); they are rebuilt
            in full, and models downstream of them that were not selected are rebuilt in full
            by the next build. Defaults to all, incrementally.
        full_refresh: rebuild every selected model from everything.

    Returns:
        One result per built model, in build order.

    Raises:
        ModelGraphError: if the graph is not buildable, or ``select`` names an unknown model.
        ModelBuildError: if a model's SQL fails; the message names the model file.
        WarehouseMemoryError: if DuckDB runs out of memory; the message names the model and
            ``ROBOFY_DUCKDB_MEMORY_LIMIT``.
    """
    everything, ordered, subset = plan_selection(models, select)
    for schema in dict.fromkeys(model.schema for model in ordered):
        if schema not in SCHEMAS and schema != "intermediate":
            raise ModelGraphError(f"unknown schema {schema!r}")
        conn.execute(f"create schema if not exists {schema}")
    # Read now: once a statement fails, its transaction answers nothing until rolled back.
    memory_limit = _memory_limit(conn)
    for ddl in (*META_DDL, incremental.STATE_DDL):
        conn.execute(ddl)  # the change log and build state live in meta
    state = incremental.load_state(conn)
    until = incremental.watermark_now(conn)
    planner = incremental.Planner(
        conn,
        f"_robofy_build_{next(_builds)}",
        everything,
    )
    build_id = incremental.next_build_id(conn)
    rebuilt: set[str] = set()
    results: list[BuildResult] = []
    try:
        for model in ordered:
            result, change = _build_one(
                conn, model, planner, state, rebuilt, full_refresh or subset, memory_limit
            )
            results.append(result)
            checked = change.new or model.name
            grain = (
                incremental.grain_counts(conn, checked, model.key_columns)
                if model.materialization == "table"
                and model.key_columns
                and change.mode != "unchanged"
                else None
            )
            incremental.save_state(conn, model.name, model.sql, until, change, grain)
            if model.schema == "marts":
                incremental.log_change(conn, model, change, build_id)
        if subset:
            incremental.forget_state(conn, _downstream(everything, rebuilt) - rebuilt)
    finally:
        planner.drop_all()
    return results


_builds = itertools.count()


def plan_selection(
    models: Sequence[Model] | None, select: Iterable[str] | None
) -> tuple[list[Model], list[Model], bool]:
    """What a build considers and builds: ``(every model in dependency order, the selected ones
    in that order, whether that is a strict subset)``; ``models`` defaults to ``discover()``.

    Raises:
        ModelGraphError: if the graph is not buildable, or ``select`` names an unknown model.
    """
    everything = topological_order(discover() if models is None else models)
    if select is None:
        return everything, everything, False
    wanted = set(select)
    unknown = wanted - {model.name for model in everything}
    if unknown:
        raise ModelGraphError(f"unknown models selected: {sorted(unknown)}")
    subset = wanted != {model.name for model in everything}
    return everything, [model for model in everything if model.name in wanted], subset


def _build_one(
    conn: duckdb.DuckDBPyConnection,
    model: Model,
    planner: incremental.Planner,
    state: dict[str, tuple[str, datetime | None]],
    rebuilt: set[str],
    full_refresh: bool,
    memory_limit: str,
) -> tuple[BuildResult, incremental.Change]:
    started = time.perf_counter()
    try:
        previous = state.get(model.name)
        reason = incremental.full_reason(
            model, previous, incremental.exists(conn, model.name), full_refresh, rebuilt
        )
        change = (
            incremental.Change("full", reason=reason)
            if reason
            else planner.apply(model, previous[1] if previous else None)
        )
        if change.mode == "full":
            if model.materialization == "table" and _is_view(conn, model):
                # Warehouses built before staging was materialized hold views of these names.
                conn.execute(f"drop view {model.name}")
            table = model.materialization == "table"
            # A large model that keeps a span is built in chunks into a scratch table, then
            # copied into place in time order (see incremental.cluster_by_time). A small one
            # fills a row group or two whatever its order, and later rows append in time.
            into = incremental.unclustered(model) if table and model.span else model.name
            chunks = (
                incremental.build_in_chunks(conn, model, planner.tag, into=into) if table else 0
            )
            if not chunks:
                conn.execute(
                    f"create or replace {model.materialization} {model.name} as\n{model.sql}"
                )
            elif into != model.name:
                incremental.cluster_by_time(conn, model, into)
            _document(conn, model)
            if model.materialization == "table":
                planner.refresh_span(model)
            rebuilt.add(model.name)
        else:
            chunks = 0
        rows: int | None = None
        if model.materialization == "table":
            count = conn.execute(f"select count(*) from {model.name}").fetchall()[0]
            rows = int(count[0]) if count is not None else 0
    except duckdb.OutOfMemoryException as exc:
        doing = f"building {model.name} ({model.path})"
        raise WarehouseMemoryError(doing, memory_limit, str(exc)) from exc
    except duckdb.Error as exc:
        raise ModelBuildError(f"{model.path}: building {model.name} failed: {exc}") from exc
    seconds = time.perf_counter() - started
    logger.debug(
        "built %s %s %s (%s rows, %d keys%s) in %.3fs",
        change.mode,
        model.materialization,
        model.name,
        rows,
        change.keys,
        f": {change.reason}" if change.reason else "",
        seconds,
    )
    result = BuildResult(
        model.name,
        model.materialization,
        rows,
        seconds,
        change.mode,
        change.keys,
        change.reason,
        chunks,
    )
    return result, change


def _is_view(conn: duckdb.DuckDBPyConnection, model: Model) -> bool:
    rows = conn.execute(
        "select count(*) from duckdb_views() where database_name = current_database()"
        " and schema_name = ? and view_name = ?",
        [model.schema, model.relation],
    ).fetchall()
    return bool(rows[0][0])


def _downstream(models: Sequence[Model], roots: set[str]) -> set[str]:
    """``roots`` and every model that reads one of them, directly or not."""
    found = set(roots)
    for model in models:  # topological order: readers come after what they read
        if any(dep in found for dep in model.deps):
            found.add(model.name)
    return found


def _memory_limit(conn: duckdb.DuckDBPyConnection) -> str:
    """The connection's memory limit as DuckDB reports it (``160MB`` reads ``152.5 MiB``)."""
    rows = conn.execute("select current_setting('memory_limit')").fetchall()
    return str(rows[0][0])


def create_empty_raw_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and empty ``raw`` tables, as ``tables.RAW_TABLES`` describes them.

    Args:
        conn: an open DuckDB connection.
    """
    for schema in SCHEMAS:
        conn.execute(f"create schema if not exists {schema}")
    for table in RAW_TABLES.values():
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type in table.all_columns)
        conn.execute(f"create table if not exists {table.relation} ({columns})")
