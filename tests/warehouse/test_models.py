"""models.py turns sql/ into documented relations: graph rules, DDL, atomicity, generated docs.

Most tests use tiny model folders under tmp_path, so a failure points at one rule; the last
ones check the repository's own sql/ folder and docs/tables.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from robofy_etl.warehouse import WarehouseMemoryError, docs, models
from robofy_etl.warehouse.tables import META_DOCS, RAW_TABLES

REPO = Path(__file__).resolve().parents[2]
HEADER = """-- grain: one row per project_id
-- description: Projects,
--   deduplicated.
-- columns:
--   project_id: Robofy project id.
--   description: What the project's owner wrote.
"""


def write(root: Path, relation: str, sql: str) -> Path:
    schema, name = relation.split(".")
    path = root / schema / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql, encoding="utf-8")
    return path


def simple_model(root: Path, relation: str, source: str) -> Path:
    """A documented one-column model reading ``source``."""
    return write(
        root,
        relation,
        f"-- grain: one row per project_id\n-- description: Test model.\n-- columns:\n"
        f"--   project_id: Robofy project id.\nselect project_id from {source}\n",
    )


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as connection:
        models.create_empty_raw_tables(connection)
        yield connection


def test_parse_header_reads_grain_description_and_columns() -> None:
    grain, description, columns = models.parse_header(HEADER + "select 1 as project_id")
    assert grain == "one row per project_id"
    assert description == "Projects, deduplicated."
    # a column named like a header key stays a column
    assert columns == {
        "project_id": "Robofy project id.",
        "description": "What the project's owner wrote.",
    }


@pytest.mark.parametrize(
    ("grain", "keys"),
    [
        ("one row per project_id", ("project_id",)),
        ("one row per (chatbot_id, session_id)", ("chatbot_id", "session_id")),
        ("One row per (lead_id,field_name) ", ("lead_id", "field_name")),
        ("whatever", ()),
    ],
)
def test_key_columns_come_from_the_grain(grain: str, keys: tuple[str, ...]) -> None:
    model = models.Model("marts.x", "marts", Path("x.sql"), "", (), "table", grain=grain)
    assert model.key_columns == keys


def test_parse_deps_ignores_comments_and_dedupes() -> None:
    sql = """-- reads from raw.robofy__leads in a comment only
    /* join staging.ignored_in_block */
    with a as (select * from STAGING.stg_robofy__leads),
    b as (select * from staging.stg_robofy__leads l join marts.sessions s on true)
    select from_json(x, 'y') from a left join
        raw.robofy__projects p on true
    """
    assert models.parse_deps(sql) == (
        "staging.stg_robofy__leads",
        "marts.sessions",
        "raw.robofy__projects",
    )


def test_discover_names_relations_after_folder_and_file(tmp_path: Path) -> None:
    simple_model(tmp_path, "staging.stg_robofy__projects", "raw.robofy__projects")
    simple_model(tmp_path, "marts.projects", "staging.stg_robofy__projects")
    found = models.discover(tmp_path)
    assert [(m.name, m.materialization, m.deps) for m in found] == [
        ("marts.projects", "table", ("staging.stg_robofy__projects",)),
        ("staging.stg_robofy__projects", "table", ("raw.robofy__projects",)),
    ]
    assert found[0].sql.endswith("staging.stg_robofy__projects")


def test_discover_rejects_unknown_layer_folders(tmp_path: Path) -> None:
    simple_model(tmp_path, "reports.projects", "raw.robofy__projects")
    with pytest.raises(models.ModelError, match="not a layer"):
        models.discover(tmp_path)


def test_discover_names_the_missing_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(models.ModelError, match=r"not found: .*nowhere.*force-reinstall"):
        models.discover(tmp_path / "nowhere")


def test_topological_order_puts_upstream_first(tmp_path: Path) -> None:
    simple_model(tmp_path, "marts.b", "marts.a")
    simple_model(tmp_path, "marts.a", "staging.s")
    simple_model(tmp_path, "staging.s", "raw.robofy__projects")
    order = [m.name for m in models.topological_order(models.discover(tmp_path))]
    assert order == ["staging.s", "marts.a", "marts.b"]


def test_topological_order_rejects_cycles(tmp_path: Path) -> None:
    simple_model(tmp_path, "marts.a", "marts.b")
    simple_model(tmp_path, "marts.b", "marts.a")
    with pytest.raises(models.ModelGraphError, match=r"cycle among: marts\.a, marts\.b"):
        models.topological_order(models.discover(tmp_path))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raw.robofy__agents", "not a raw table"),
        ("staging.stg_missing", "no model file defines"),
    ],
)
def test_topological_order_rejects_unresolved_refs(
    tmp_path: Path, source: str, message: str
) -> None:
    path = simple_model(tmp_path, "marts.a", source)
    with pytest.raises(models.ModelGraphError, match=message) as error:
        models.topological_order(models.discover(tmp_path))
    assert str(path) in str(error.value)


def test_build_creates_documented_relations(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    write(
        tmp_path,
        "staging.stg_p",
        HEADER + "select project_id, 'x' as description from raw.robofy__projects\n",
    )
    simple_model(tmp_path, "marts.p", "staging.stg_p")
    conn.execute(
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice) "
        "values (1, '{}', now()::timestamp, 'r', 's')"
    )
    results = models.build(conn, models.discover(tmp_path))
    assert [(r.name, r.materialization, r.rows) for r in results] == [
        ("staging.stg_p", "table", 1),
        ("marts.p", "table", 1),
    ]
    assert docs.describe(conn) == {
        "marts.p": [("project_id", "BIGINT", "Robofy project id.")],
        "staging.stg_p": [
            ("project_id", "BIGINT", "Robofy project id."),
            ("description", "VARCHAR", "What the project's owner wrote."),
        ],
    }
    comment = conn.execute("select comment from duckdb_tables() where table_name = 'p'").fetchall()
    assert comment == [("Test model. Grain: one row per project_id.",)]


def test_build_select_builds_only_the_selected_models(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    simple_model(tmp_path, "staging.s", "raw.robofy__projects")
    simple_model(tmp_path, "marts.a", "staging.s")
    found = models.discover(tmp_path)
    assert [r.name for r in models.build(conn, found, select=["staging.s"])] == ["staging.s"]
    with pytest.raises(models.ModelGraphError, match="unknown models"):
        models.build(conn, found, select=["marts.nope"])


def test_build_error_names_the_model_file(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    path = write(tmp_path, "staging.s", "select no_such_column from raw.robofy__projects\n")
    with pytest.raises(models.ModelBuildError, match="no_such_column") as error:
        models.build(conn, models.discover(tmp_path))
    assert str(path) in str(error.value)


def test_build_out_of_memory_names_the_model_and_the_memory_setting(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    path = write(
        tmp_path,
        "marts.p",
        "-- grain: one row per project_id\n-- description: Test model.\n-- columns:\n"
        "--   project_id: Robofy project id.\n--   note: Project note.\n"
        "select project_id, _payload ->> 'note' as note from raw.robofy__projects\n",
    )
    conn.execute(
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice) "
        "values (1, json_object('note', repeat('x', 10_000_000)), now()::timestamp, 'r', 's')"
    )
    conn.execute("set memory_limit = '30MB'")

    with pytest.raises(WarehouseMemoryError) as raised:
        models.build(conn, models.discover(tmp_path))

    message = str(raised.value)
    assert f"building marts.p ({path})" in message
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=28.6 MiB" in message  # 30MB, as DuckDB prints it
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=1GB" in message
    assert isinstance(raised.value.__cause__, duckdb.OutOfMemoryException)


def test_build_fails_when_the_header_documents_a_missing_column(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    write(tmp_path, "staging.s", HEADER + "select project_id from raw.robofy__projects\n")
    with pytest.raises(models.ModelBuildError, match=r"\['description'\]"):
        models.build(conn, models.discover(tmp_path))


def test_build_inside_a_transaction_is_invisible_until_commit(tmp_path: Path) -> None:
    """A dashboard reading during a build sees the previous marts, then the new ones at once."""
    path = str(tmp_path / "wh.duckdb")
    simple_model(tmp_path / "sql", "staging.s", "raw.robofy__projects")
    simple_model(tmp_path / "sql", "marts.a", "staging.s")
    found = models.discover(tmp_path / "sql")
    insert = (
        "insert into raw.robofy__projects (project_id, _payload, _loaded_at, _run_id, _slice) "
        "values (?, '{}', now()::timestamp, 'r', 's')"
    )
    with duckdb.connect(path) as writer, duckdb.connect(path) as reader:
        models.create_empty_raw_tables(writer)
        models.build(writer, found)
        writer.execute("begin")
        writer.execute(insert, [1])
        models.build(writer, found)
        assert reader.execute("select count(*) from marts.a").fetchall() == [(0,)]
        writer.execute("commit")
        assert reader.execute("select count(*) from marts.a").fetchall() == [(1,)]
        writer.execute("begin")
        writer.execute(insert, [2])
        models.build(writer, found)
        writer.execute("rollback")
        assert reader.execute("select count(*) from marts.a").fetchall() == [(1,)]


def test_repository_models_form_a_valid_graph() -> None:
    found = models.discover()
    # Loaded as package data (robofy_etl/sql), which in a checkout is the top-level sql/.
    assert (REPO / "sql").resolve() == models.SQL_DIR
    ordered = models.topological_order(found)
    assert {m.name for m in ordered} == {m.name for m in found}
    staging = {m.name for m in found if m.schema == "staging"}
    assert staging == {f"staging.stg_{name}" for name in RAW_TABLES}
    for model in found:
        assert model.grain, model.path
        assert model.description, model.path
        assert model.column_docs, model.path
        raw_refs = [dep for dep in model.deps if dep.startswith("raw.")]
        if model.schema == "staging":
            # staging is one-to-one with a raw table
            assert model.deps == (f"raw.{model.relation.removeprefix('stg_')}",), model.path
        else:
            assert not raw_refs, f"{model.path}: only staging reads raw.*"


def test_tables_doc_is_current() -> None:
    committed = (REPO / "docs" / "tables.md").read_text(encoding="utf-8")
    assert committed == docs.generate_tables_doc(), (
        "docs/tables.md is out of date: run `.venv/bin/python scripts/gen_tables_doc.py`"
    )


def test_a_warehouse_with_staging_views_is_upgraded_to_tables(tmp_path: Path) -> None:
    """Earlier versions built staging as views; the first build replaces them with tables."""
    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    models.create_empty_raw_tables(conn)
    for model in models.discover():
        if model.schema == "staging":
            conn.execute(f"create view {model.name} as {model.sql}")
    results = models.build(conn)
    assert {r.name: r.materialization for r in results if r.name.startswith("staging.")} == {
        m.name: "table" for m in models.discover() if m.schema == "staging"
    }
    (views,) = conn.execute(
        "select count(*) from duckdb_views() where schema_name = 'staging'"
    ).fetchone()
    assert views == 0
    conn.close()


def test_every_meta_table_is_documented() -> None:
    """docs/tables.md describes each bookkeeping table a build leaves in `meta`."""
    with duckdb.connect(":memory:") as conn:
        models.create_empty_raw_tables(conn)
        models.build(conn)
        tables = {
            f"meta.{name}"
            for (name,) in conn.execute(
                "select table_name from duckdb_tables() where schema_name = 'meta'"
            ).fetchall()
        }
    assert tables == set(META_DOCS)
