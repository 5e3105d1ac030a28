"""The advice in warehouse errors: which memory limit to try after DuckDB ran out."""

from __future__ import annotations

import pytest

from robofy_etl.warehouse.errors import WarehouseMemoryError, size_in_bytes, suggest_memory_limit


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("160MB", 160_000_000),
        ("152.5 MiB", 159_907_840),
        ("1.5GB", 1_500_000_000),
        ("2 GiB", 2 * 2**30),
        ("512KB", 512_000),
        ("lots", None),
        ("12", None),
    ],
)
def test_size_in_bytes_reads_settings_and_duckdb_output(text: str, size: int | None) -> None:
    assert size_in_bytes(text) == size


@pytest.mark.parametrize(
    ("limit", "suggestion"),
    [
        ("160MB", "1GB"),
        ("152.5 MiB", "1GB"),
        (None, "1GB"),
        ("lots", "1GB"),
        ("1GB", "2GB"),
        ("3GB", "6GB"),
        ("1.5 GiB", "3GB"),
    ],
)
def test_suggested_memory_limit_is_1gb_or_twice_the_limit(
    limit: str | None, suggestion: str
) -> None:
    assert suggest_memory_limit(limit) == suggestion


def test_memory_error_names_the_setting_its_value_and_the_fix() -> None:
    error = WarehouseMemoryError("building marts.messages", "160MB", "Out of Memory Error: x\nmore")

    message = str(error)
    assert "while building marts.messages under ROBOFY_DUCKDB_MEMORY_LIMIT=160MB" in message
    assert "(Out of Memory Error: x)" in message
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT=1GB" in message
    assert "Nothing was written" in message


def test_memory_error_without_a_limit_says_duckdbs_default_applied() -> None:
    message = str(WarehouseMemoryError("querying", None, "Out of Memory Error: x"))
    assert "ROBOFY_DUCKDB_MEMORY_LIMIT is not set" in message
