"""Every query in docs/queries.md runs against a built warehouse, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

QUERIES_MD = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
HEADING = re.compile(r"^### (\d+)\. (.+)$", re.MULTILINE)
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)


def sql_blocks() -> list[tuple[str, str]]:
    """(question heading, SQL) for every fenced sql block, in document order."""
    text = QUERIES_MD.read_text(encoding="utf-8")
    headings = [(m.start(), f"{m.group(1)}. {m.group(2)}") for m in HEADING.finditer(text)]
    blocks = []
    for match in SQL_BLOCK.finditer(text):
        heading = [title for start, title in headings if start < match.start()]
        blocks.append((heading[-1] if heading else "(no heading)", match.group(1)))
    return blocks


BLOCKS = sql_blocks()


def test_queries_md_has_ten_numbered_questions_each_with_sql() -> None:
    text = QUERIES_MD.read_text(encoding="utf-8")
    numbers = [int(m.group(1)) for m in HEADING.finditer(text)]
    assert numbers == list(range(1, 11))
    assert {heading for heading, _ in BLOCKS} == {
        f"{m.group(1)}. {m.group(2)}" for m in HEADING.finditer(text)
    }


@pytest.mark.parametrize(("heading", "sql"), BLOCKS, ids=[f"q{h.split('.')[0]}" for h, _ in BLOCKS])
def test_query_runs(warehouse: duckdb.DuckDBPyConnection, heading: str, sql: str) -> None:
    assert re.search(r"\bmarts\.", sql), f"{heading}: queries must read the marts"
    cursor = warehouse.execute(sql)
    assert cursor.description, f"{heading}: returns no columns"
    cursor.fetchall()


def test_every_query_answers_something_on_the_hand_written_account(
    hand_warehouse: duckdb.DuckDBPyConnection,
) -> None:
    empty = [heading for heading, sql in BLOCKS if not hand_warehouse.execute(sql).fetchall()]
    assert not empty
