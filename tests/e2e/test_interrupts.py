"""Ctrl-C and SIGTERM stop `robofy-etl sync` cleanly, at any moment, and lose nothing.

The command runs as a process of its own (as a user or Kubernetes runs it) against the
simulator, slowed down so the signal lands where it used to hang: in the transcript fan-out;
SIGTERM also against PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FIRST_DAY, LAST_DAY, Pipeline
from tests.e2e.test_sync import _assert_matches_dataset

pytestmark = pytest.mark.slow


_RANGE = ("--start", FIRST_DAY.isoformat(), "--end", LAST_DAY.isoformat())


class _Sync:
    """`robofy-etl sync` in a child process, its stderr collected line by line."""

    def __init__(self, pipeline: Pipeline) -> None:
        env = {**os.environ, "ROBOFY_MAX_IN_FLIGHT": "2"}
        env.pop("PYTHONUNBUFFERED", None)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robofy_etl.cli", "sync", *_RANGE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=Path(pipeline.db_path).parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def stop(self, signum: int, timeout: float = 30.0) -> int:
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        if code is None:
            pytest.fail(f"still running {timeout} s after {signum}:\n{self.stderr}")
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


@pytest.mark.parametrize(
    ("pipeline", "signum", "code"),
    [
        pytest.param("duckdb", signal.SIGINT, 130, id="SIGINT"),
        pytest.param("duckdb", signal.SIGTERM, 143, id="SIGTERM"),
        # Kubernetes stops a pod with SIGTERM; the writer may be inside a transaction then.
        pytest.param("postgresql", signal.SIGTERM, 143, id="postgresql-SIGTERM"),
    ],
    indirect=["pipeline"],
)
def test_signal_during_the_transcript_fan_out_stops_cleanly(
    pipeline: Pipeline, signum: int, code: int
) -> None:
    pipeline.sim.set_latency(100)
    sync = _Sync(pipeline)
    sync.wait_for("new or changed transcripts")
    time.sleep(0.5)  # well inside the fan-out
    assert sync.stop(signum) == code
    name = signal.Signals(signum).name
    assert f"interrupted ({name})" in sync.stderr
    assert "the next sync resumes" in sync.stderr
    assert "Traceback" not in sync.stderr

    pipeline.sim.set_latency(0)
    outcome = pipeline.sync()
    assert outcome.success, outcome.errors
    _assert_matches_dataset(pipeline)


def test_sigterm_during_start_up_says_so(pipeline: Pipeline) -> None:
    sync = _Sync(pipeline)
    time.sleep(0.3)  # importing Dagster
    assert sync.stop(signal.SIGTERM) == 143
    assert "interrupted (SIGTERM)" in sync.stderr
    assert "Traceback" not in sync.stderr
