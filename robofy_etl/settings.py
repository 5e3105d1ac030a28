"""Typed settings read from the environment, validated at start-up.

Every setting is declared once here, with its variable name, default and meaning. A bad value
fails at start-up with a message that names the variable. The API key is not a setting of this
object: it reaches the Dagster resource only through ``dg.EnvVar("ROBOFY_API_KEY")``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_BASE_URL = "https://agents.robofy.ai"
API_KEY_ENV = "ROBOFY_API_KEY"


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def _int_at_least(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _optional_rate(name: str, raw: str) -> float | None:
    if raw.strip().lower() in ("", "0", "none", "off", "unlimited"):
        return None
    return _positive_float(name, raw)


def _iso_date(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a date like 2026-01-31, got {raw!r}") from None


def _base_url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must start with http:// or https://, got {raw!r}")
    return url


def _auth_header(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("bearer", "api-key"):
        raise SettingsError(f"{name} must be 'bearer' or 'api-key', got {raw!r}")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return value


def _memory(name: str, raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise SettingsError(f"{name} must be a size such as 160MB or 2GB, got {raw!r}")
    return value


def _timezone(name: str, raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name} must be an IANA time zone such as UTC, got {raw!r}") from None
    return raw


def _stats_params(name: str, raw: str) -> tuple[str, str, str, str]:
    parts = tuple(p.strip() for p in raw.split(","))
    if len(parts) != 4 or not all(parts):
        raise SettingsError(
            f"{name} must be four comma-separated query parameter names "
            f"(project, chatbot, start date, end date), got {raw!r}"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _path(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} must not be empty")
    return raw


def _setting(env: str, default: str, parse: Callable[[str, str], Any], doc: str) -> Any:
    return field(
        default=None, metadata={"env": env, "default": default, "parse": parse, "doc": doc}
    )


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline reads from the environment, except the API key."""

    base_url: str = _setting("ROBOFY_BASE_URL", DEFAULT_BASE_URL, _base_url, "Robofy API base URL.")
    duckdb_path: str = _setting(
        "ROBOFY_DUCKDB_PATH", "data/robofy.duckdb", _path, "The DuckDB warehouse file."
    )
    publish_path: str = _setting(
        "ROBOFY_PUBLISH_PATH",
        "",
        lambda _n, raw: raw,
        "Read-only copy for dashboards; default <ROBOFY_DUCKDB_PATH stem>.read.duckdb.",
    )
    start_date: date = _setting(
        "ROBOFY_START_DATE", "2026-01-01", _iso_date, "First daily partition (UTC day)."
    )
    auth_header: Literal["bearer", "api-key"] = _setting(
        "ROBOFY_AUTH_HEADER", "bearer", _auth_header, "'bearer' or 'api-key' header style."
    )
    max_in_flight: int = _setting(
        "ROBOFY_MAX_IN_FLIGHT", "16", _positive_int, "Most API requests in flight at once."
    )
    max_rps: float | None = _setting(
        "ROBOFY_MAX_RPS", "", _optional_rate, "Most API requests per second (empty: no cap)."
    )
    http_transport: Literal["stdlib", "httpx"] = _setting(
        "ROBOFY_HTTP_TRANSPORT",
        "stdlib",
        lambda name, raw: _choice(name, raw, ("stdlib", "httpx")),
        "'stdlib' (keep-alive http.client under httpx; least CPU) or 'httpx' (honours proxies).",
    )
    timeout_s: float = _setting(
        "ROBOFY_TIMEOUT_S", "30", _positive_float, "Read timeout of one API request, seconds."
    )
    max_attempts: int = _setting(
        "ROBOFY_MAX_ATTEMPTS", "5", _positive_int, "Attempts per request before giving up."
    )
    retry_delay_s: float = _setting(
        "ROBOFY_RETRY_DELAY_S",
        "0.5",
        _positive_float,
        "First retry delay, doubled per attempt (Retry-After wins when the API sends it).",
    )
    lock_timeout_s: float = _setting(
        "ROBOFY_LOCK_TIMEOUT_S",
        "300",
        _positive_float,
        "How long a writer waits for another process to release the DuckDB file.",
    )
    duckdb_memory_limit: str = _setting(
        "ROBOFY_DUCKDB_MEMORY_LIMIT",
        "160MB",
        _memory,
        "DuckDB buffer memory for loads and model builds; beyond it DuckDB spills to disk.",
    )
    lookback_days: int = _setting(
        "ROBOFY_LOOKBACK_DAYS",
        "3",
        _non_negative_int,
        "Recent days the schedules re-sync (conversations continue, stats are restated).",
    )
    naive_timezone: str = _setting(
        "ROBOFY_NAIVE_TIMEZONE", "UTC", _timezone, "Time zone of timestamps sent without one."
    )
    stats_params: tuple[str, str, str, str] = _setting(
        "ROBOFY_STATS_PARAMS",
        "projectId,chatbotId,startDate,endDate",
        _stats_params,
        "Query parameter names of the message stats endpoint (assumed by the contract).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads and validates every setting; raises SettingsError naming the bad variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            raw = env.get(meta["env"], meta["default"])
            values[f.name] = meta["parse"](meta["env"], raw)
        return cls(**values)

    @property
    def resolved_publish_path(self) -> str:
        if self.publish_path:
            return self.publish_path
        db = Path(self.duckdb_path)
        return str(db.with_name(f"{db.stem}.read.duckdb"))


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for docs and `.env.example`."""
    rows = [(API_KEY_ENV, "", "Robofy API key (secret; required).")]
    for f in fields(Settings):
        rows.append((f.metadata["env"], f.metadata["default"], f.metadata["doc"]))
    return rows
