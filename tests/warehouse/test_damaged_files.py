"""A warehouse file that cannot be used fails at its first open, before any load, with advice.

Every message names the file, the setting that chose it (``--duckdb`` / ``ROBOFY_DUCKDB_PATH``)
and the way out: move the file away and sync again (the published read-only copy holds only the
marts and meta, so it cannot replace the warehouse; when it is healthy, the message says that
dashboards can keep reading it meanwhile). A truncated file used to take four loads before DuckDB
noticed; DuckDB's own messages ("not a valid DuckDB database file", "Corrupt database file")
said neither.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from robofy_etl.warehouse import Slice, Warehouse, WarehouseFileError

from .conftest import message_row

SETTING = "--duckdb / ROBOFY_DUCKDB_PATH"
BLOCK_SIZE = 256 * 1024
HEADERS_SIZE = 3 * 4096


@pytest.fixture
def filled(tmp_path: Path) -> Warehouse:
    """A checkpointed warehouse of a few MB (many blocks), published once."""
    wh = Warehouse(tmp_path / "robofy.duckdb")
    noise = random.Random(8)  # text that does not compress away
    rows = [
        message_row("bot", f"s{i // 10}", i % 10, "2026-10-01", text=f"{noise.getrandbits(1024):x}")
        for i in range(20_000)
    ]
    with wh.transaction(run_id="r1") as tx:
        tx.replace("robofy__chat_messages", rows, Slice(day_from="2026-10-01", day_to="2026-10-02"))
    with wh.connect() as conn:
        conn.execute("CHECKPOINT")  # every row is in the file's blocks
    wh.publish()
    assert wh.path.stat().st_size > 8 * BLOCK_SIZE
    return wh


def first_use(path: Path) -> list[str]:
    """Open a new Warehouse on ``path`` and try to load; returns the loads that ran."""
    ran: list[str] = []
    with Warehouse(path).transaction(run_id="r2"):
        ran.append("load")
    return ran


def assert_advice(error: WarehouseFileError, path: Path) -> None:
    message = str(error)
    assert str(path) in message
    assert SETTING in message
    assert f"mv {path} {path}.damaged" in message
    assert "sync again" in message


@pytest.mark.parametrize("published", ["healthy", "missing"])
def test_a_truncated_file_fails_at_the_first_open_before_any_load(
    filled: Warehouse, published: str
) -> None:
    if published == "missing":
        filled.published_path.unlink()
    os.truncate(filled.path, filled.path.stat().st_size // 2)

    with pytest.raises(WarehouseFileError) as raised:
        first_use(filled.path)

    assert raised.value.reason == "damaged"
    assert "cut short" in str(raised.value)
    assert_advice(raised.value, filled.path)
    assert f"cp {filled.published_path}" not in str(raised.value)
    keep_reading = f"dashboards can keep reading the published copy {filled.published_path}"
    assert (keep_reading in str(raised.value)) == (published == "healthy")


def test_a_corrupt_block_found_by_a_later_read_gets_the_same_advice(filled: Warehouse) -> None:
    with filled.connect() as conn:
        rows = conn.execute(
            "select max(block_id) from pragma_storage_info('raw.robofy__chat_messages') "
            "where column_name = '_payload' and persistent"
        ).fetchall()
    with filled.path.open("r+b") as handle:  # garble a data block; the metadata stays intact
        handle.seek(HEADERS_SIZE + rows[0][0] * BLOCK_SIZE + 64)
        handle.write(os.urandom(4096))
    wh = Warehouse(filled.path)
    assert wh.get_state("s", "x") is None  # the first-open check reads metadata only

    with pytest.raises(WarehouseFileError) as raised, wh.connect() as conn:
        conn.execute("select max(length(_payload::varchar)) from raw.robofy__chat_messages")

    assert raised.value.reason == "damaged"
    assert "Corrupt database file" in str(raised.value)
    assert_advice(raised.value, filled.path)
    assert f"dashboards can keep reading the published copy {filled.published_path}" in str(
        raised.value
    )


def write_text(path: Path) -> None:
    path.write_text("project_id,name\n1,Acme\n", encoding="utf-8")


def write_empty(path: Path) -> None:
    path.touch()


def make_directory(path: Path) -> None:
    path.mkdir()


def checksum(block: bytes) -> int:
    """DuckDB's block checksum (src/common/checksum.cpp) over whole 8-byte words."""
    result = 5381
    for (word,) in struct.iter_unpack("<Q", block):
        result ^= (word * 0xBF58476D1CE4E5B9) & 0xFFFF_FFFF_FFFF_FFFF
    return result


def write_newer_version(path: Path) -> None:
    """A DuckDB file whose main header claims a storage version this DuckDB cannot read.

    DuckDB 2.0's main header is 4 KiB: an 8-byte checksum of the rest, ``DUCK``, then the
    storage version as a little-endian uint64.
    """
    Warehouse(path).initialize()
    with path.open("r+b") as handle:
        header = bytearray(handle.read(4096))
        assert header[8:12] == b"DUCK"
        header[12:20] = struct.pack("<Q", 10_000)
        header[0:8] = struct.pack("<Q", checksum(bytes(header[8:])))
        handle.seek(0)
        handle.write(header)


@pytest.mark.parametrize(
    ("make", "reason", "says"),
    [
        (write_text, "not_duckdb", "is not a DuckDB database file"),
        (write_empty, "not_duckdb", "is not a DuckDB database file"),
        (make_directory, "directory", "robofy.duckdb/robofy.duckdb"),
        (write_newer_version, "newer_version", "newer DuckDB than this robofy-etl uses"),
    ],
    ids=["text-file", "empty-file", "directory", "newer-duckdb"],
)
def test_an_unusable_file_names_itself_the_setting_and_the_way_out(
    tmp_path: Path, make: Callable[[Path], None], reason: str, says: str
) -> None:
    path = tmp_path / "robofy.duckdb"
    make(path)

    with pytest.raises(WarehouseFileError) as raised:
        first_use(path)

    assert raised.value.reason == reason
    assert says in str(raised.value)
    assert_advice(raised.value, path)
    assert f"the published copy {tmp_path / 'robofy.read.duckdb'} does not exist" in str(
        raised.value
    )


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_whose_permissions_to_fix(filled: Warehouse) -> None:
    filled.path.chmod(0)
    try:
        with pytest.raises(WarehouseFileError) as raised:
            first_use(filled.path)
    finally:
        filled.path.chmod(0o644)

    assert raised.value.reason == "permission"
    assert "chmod" in str(raised.value)
    assert_advice(raised.value, filled.path)


def test_duckdbs_permission_error_becomes_the_same_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message DuckDB gives a user who may not open the file (also when tests run as root)."""
    path = tmp_path / "robofy.duckdb"

    def refuse(database: str, read_only: bool = False) -> None:
        raise duckdb.IOException(f'IO Error: Cannot open file "{database}": Permission denied')

    monkeypatch.setattr(duckdb, "connect", refuse)

    with pytest.raises(WarehouseFileError) as raised:
        first_use(path)

    assert raised.value.reason == "permission"
    assert "may not read and write it" in str(raised.value)
    assert_advice(raised.value, path)
