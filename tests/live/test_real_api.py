"""Against the real Robofy API, with your key: ``ROBOFY_API_KEY=... make test-live``.

Never part of ``make test`` or CI (marked ``live``; without ``ROBOFY_API_KEY`` they skip). They
only read from the API: the probe calls each read endpoint once, and the sync writes the last
two days into a throwaway DuckDB file. They confirm, for your account, the assumptions Part 1 of
the API contract marks as such (envelopes, pagination, field names, stats parameters); when one
fails, its message says which setting (``ROBOFY_*``) to change. ``ROBOFY_BASE_URL`` may point
them at another deployment, or at ``robofy-etl simulator`` to try them out.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from robofy_etl.api import ClientConfig, RobofyClient, format_probe_report, probe
from robofy_etl.cli import run_sync
from robofy_etl.settings import API_KEY_ENV, Settings

pytestmark = pytest.mark.live


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if not os.environ.get(API_KEY_ENV, "").strip():
        pytest.skip(f"{API_KEY_ENV} is not set")
    monkeypatch.setenv("ROBOFY_DUCKDB_PATH", str(tmp_path / "live.duckdb"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance: no run history
    monkeypatch.setenv("ROBOFY_MAX_IN_FLIGHT", os.environ.get("ROBOFY_MAX_IN_FLIGHT", "4"))
    return Settings.from_env()


def test_every_required_endpoint_answers_in_a_shape_the_client_reads(settings: Settings) -> None:
    config = ClientConfig(
        base_url=settings.base_url,
        api_key=os.environ[API_KEY_ENV],
        auth_header=settings.auth_header,
        max_in_flight=2,
        naive_timezone=settings.naive_timezone,
        stats_params=settings.stats_params,
    )
    with RobofyClient(config) as api:
        report = probe(api, days=2)
    assert report.ok, format_probe_report(report)


def test_the_last_two_days_sync_pass_their_checks_and_hold_no_secret(settings: Settings) -> None:
    today = datetime.now(UTC).date()
    outcome = run_sync(settings, today - timedelta(days=1), today)
    assert outcome.success, outcome.errors
    assert outcome.raw_rows["robofy__projects"]["in_slice"] > 0, "the key sees no project"
    failed = [name for name, (passed, severity) in outcome.checks.items() if not passed]
    assert not failed, f"checks failed on live data: {failed}"
    key = os.environ[API_KEY_ENV]
    with duckdb.connect(settings.duckdb_path, read_only=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "select table_name from duckdb_tables() where schema_name = 'raw'"
            ).fetchall()
        ]
        for table in tables:
            (leaks,) = conn.execute(
                f"select count(*) from raw.{table} where _payload::varchar like ?",
                [f"%{key}%"],
            ).fetchone() or (0,)
            assert leaks == 0, f"raw.{table} holds the API key"
