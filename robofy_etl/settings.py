"""Typed settings read from the environment, validated at start-up.

Every setting is declared once here, with its variable name, default and meaning. A bad value
fails at start-up with a message that names the variable and the allowed values. Numbers have a
sane range (the ``MAX_*`` constants below), so ``inf``, ``nan``, ``0``, negatives and typos such
as ``1e9`` fail at once instead of as a sync that hangs or never retries.

The client (``ClientConfig.from_settings``) and the warehouse (``Warehouse.from_settings``) are
built from a ``Settings``, and their defaults are ``DEFAULTS`` below: nothing else declares a
default or checks a range. Callers that override a setting (the ``robofy-etl`` options) pass
``Settings.from_env(overrides=...)``; nothing writes to ``os.environ``.

The API key is not a field of ``Settings``, so it never shows in its repr, its ``as_env()`` or
the Dagster config built from it: ``check_api_key`` validates it wherever it is read (the
client, the CLI), and the Dagster resource reads it through ``dg.EnvVar("ROBOFY_API_KEY")``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from robofy_etl.warehouse.url import WarehouseURL

DEFAULT_BASE_URL = "https://agents.robofy.ai"
API_KEY_ENV = "ROBOFY_API_KEY"

# The allowed ranges: wide enough for any real deployment, narrow enough that a typo (an extra
# digit, a unit mix-up, inf) fails at start-up rather than as a sync that never ends.
MAX_TIMEOUT_S = 600.0  # ROBOFY_TIMEOUT_S: 0 < t <= 10 minutes per read
MAX_IN_FLIGHT = 256  # ROBOFY_MAX_IN_FLIGHT: 1..256 requests (threads) at once
MAX_RPS = 10_000.0  # ROBOFY_MAX_RPS: 0 < r <= 10k requests per second, or empty
MAX_ATTEMPTS = 20  # ROBOFY_MAX_ATTEMPTS: 1..20
MAX_RETRY_DELAY_S = 60.0  # ROBOFY_RETRY_DELAY_S: 0 < d <= 1 minute (doubled per attempt)
MAX_LOCK_TIMEOUT_S = 86_400.0  # ROBOFY_LOCK_TIMEOUT_S: 0 < t <= 1 day
MAX_LOOKBACK_DAYS = 366  # ROBOFY_LOOKBACK_DAYS: 0..366 days
MIN_MEMORY_BYTES = 16 * 10**6  # ROBOFY_DUCKDB_MEMORY_LIMIT: 16MB..4TB
MAX_MEMORY_BYTES = 4 * 10**12


class SettingsError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the variable."""


def check_api_key(key: str) -> str:
    """``key`` if it can be sent in a header; else a SettingsError that never echoes it."""
    if not key or not key.strip():
        raise SettingsError(
            f"{API_KEY_ENV} is empty: set it to the key from your Robofy dashboard."
        )
    if not key.isascii() or not key.isprintable() or " " in key:
        raise SettingsError(
            f"{API_KEY_ENV} contains spaces, line breaks or non-ASCII characters; "
            "copy it again from the Robofy dashboard."
        )
    return key


def _int_in(low: int, high: int, unit: str = "") -> Callable[[str, str], int]:
    allowed = f"a whole number from {low} to {high}{unit}"

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be {allowed}, got {raw!r}")
        return value

    return parse


def _number_up_to(high: float, unit: str) -> Callable[[str, str], float]:
    """A number with 0 < value <= high; rejects inf and nan as well."""
    allowed = f"a number of {unit} with 0 < value <= {high:g}"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None
        if not 0 < value <= high:  # False for nan too
            raise SettingsError(f"{name} must be {allowed}, got {raw!r}")
        return value

    return parse


def _optional_rate(name: str, raw: str) -> float | None:
    if raw.strip().lower() in ("", "0", "none", "off", "unlimited"):
        return None
    try:
        return _number_up_to(MAX_RPS, "requests per second")(name, raw)
    except SettingsError as exc:
        raise SettingsError(f"{exc} (or empty for no cap)") from None


_FIRST_DATE, _LAST_DATE = date(2000, 1, 1), date(2099, 12, 31)


def _iso_date(name: str, raw: str) -> date:
    allowed = f"a date like 2026-01-31 from {_FIRST_DATE} to {_LAST_DATE}"
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None
    if not _FIRST_DATE <= value <= _LAST_DATE:
        raise SettingsError(f"{name} must be {allowed}, got {raw!r}")
    return value


def _base_url(name: str, raw: str) -> str:
    text = raw.strip()
    url = text.rstrip("/")
    what = (
        f"{name} must be an http:// or https:// URL with a host and, if any, a port from 1 to "
        f"65535 (such as {DEFAULT_BASE_URL})"
    )
    if not text.startswith(("http://", "https://")):
        raise SettingsError(f"{what}, got {raw!r}")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = 0
    if not parts.hostname:
        raise SettingsError(f"{what}, got {raw!r}: it has no host")
    if not port and _has_port(parts.netloc):
        raise SettingsError(f"{what}, got {raw!r}: bad port")
    if parts.username is not None or parts.password is not None:
        raise SettingsError(
            f"{what}, got a URL with a user name or password: put the key in {API_KEY_ENV}"
        )
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise SettingsError(f"{what}, and no query, fragment or spaces, got {raw!r}")
    return url


def _has_port(netloc: str) -> bool:
    """Whether `host:port` (or `[v6]:port`) carries a port part, however malformed."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return "]:" in host
    return ":" in host


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


# The one grammar of sizes: what ROBOFY_DUCKDB_MEMORY_LIMIT accepts, and what DuckDB reports
# (``current_setting('memory_limit')`` reads like ``152.5 MiB``).
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>(?:[KMGT]i?)?B)", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_in_bytes(text: str) -> int | None:
    """Read a size such as ``160MB``, ``1.5 GiB`` or ``152.5 MiB``; None if it is not one."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return int(float(match["number"]) * _UNITS[match["unit"].upper()])


def _memory(name: str, raw: str) -> str:
    size = size_in_bytes(raw)
    if size is None or not MIN_MEMORY_BYTES <= size <= MAX_MEMORY_BYTES:
        raise SettingsError(
            f"{name} must be a size from 16MB to 4TB, such as 160MB or 2GB, got {raw!r}"
        )
    return raw.strip()


_STORAGE_VERSION = re.compile(r"v\d+\.\d+\.\d+")


def _storage_version(name: str, raw: str) -> str:
    value = raw.strip()
    if value.lower() == "latest":
        return "latest"
    if not _STORAGE_VERSION.fullmatch(value):
        raise SettingsError(
            f"{name} must be a DuckDB version such as v1.4.0 (the oldest DuckDB that must read "
            f"the published copy) or 'latest', got {raw!r}"
        )
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


def _setting(
    env: str, default: str, parse: Callable[[str, str], Any], doc: str, *, secret: bool = False
) -> Any:
    """A setting; a ``secret`` one (it may hold a password) is left out of the repr."""
    return field(
        default=None,
        repr=not secret,
        metadata={"env": env, "default": default, "parse": parse, "doc": doc, "secret": secret},
    )


def _warehouse_url(name: str, raw: str) -> str:
    """The URL as given (connecting needs its password), once ``warehouse.url`` accepts it."""
    if not raw.strip():
        return ""
    # Imported here: the warehouse package imports this module.
    from robofy_etl.warehouse.url import WarehouseURLError, parse_warehouse_url

    try:
        parse_warehouse_url(raw, variable=name)
    except WarehouseURLError as exc:
        raise SettingsError(str(exc)) from None
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline reads from the environment, except the API key."""

    base_url: str = _setting(
        "ROBOFY_BASE_URL",
        DEFAULT_BASE_URL,
        _base_url,
        "API base URL (http or https, a host, port 1-65535; no credentials or query).",
    )
    duckdb_path: str = _setting(
        "ROBOFY_DUCKDB_PATH", "data/robofy.duckdb", _path, "The warehouse file."
    )
    warehouse_url: str = _setting(
        "ROBOFY_WAREHOUSE_URL",
        "",
        _warehouse_url,
        "The warehouse, a SQLAlchemy URL: `duckdb:///path.duckdb` (empty: the DuckDB file "
        "`ROBOFY_DUCKDB_PATH`; `--warehouse URL` on the commands). "
        "`postgresql+psycopg://user:password@host:5432/db` (PostgreSQL 13+, the `postgres` "
        "extra; its password is never logged or stored): the sync loads the raw and meta "
        "tables into it, builds the SQL models there (incrementally, as on DuckDB) and runs "
        "the data-quality checks there: see the README's PostgreSQL section.",
        secret=True,
    )
    publish_path: str = _setting(
        "ROBOFY_PUBLISH_PATH",
        "",
        lambda _n, raw: raw,
        "Read-only copy for dashboards (empty: `<stem>.read.duckdb` beside the warehouse file).",
    )
    publish_storage_version: str = _setting(
        "ROBOFY_PUBLISH_STORAGE_VERSION",
        "v1.4.0",
        _storage_version,
        "DuckDB storage format of the published copy: `vX.Y.Z` (DuckDB of that version and "
        "newer open it) or `latest` (this DuckDB's own format, which older readers cannot "
        "open).",
    )
    start_date: date = _setting(
        "ROBOFY_START_DATE", "2026-01-01", _iso_date, "First daily partition (UTC day)."
    )
    auth_header: Literal["bearer", "api-key"] = _setting(
        "ROBOFY_AUTH_HEADER", "bearer", _auth_header, "`bearer` or `api-key` header style."
    )
    max_in_flight: int = _setting(
        "ROBOFY_MAX_IN_FLIGHT",
        "16",
        _int_in(1, MAX_IN_FLIGHT),
        "Most requests in flight (1-256).",
    )
    max_rps: float | None = _setting(
        "ROBOFY_MAX_RPS",
        "",
        _optional_rate,
        "Most requests per second (up to 10,000; empty, 0 or `off`: no cap).",
    )
    http_transport: Literal["urllib3", "httpx"] = _setting(
        "ROBOFY_HTTP_TRANSPORT",
        "urllib3",
        # 'stdlib' named the hand-written transport that urllib3 replaced (issue 10): an old
        # .env that still says so gets the new default rather than a start-up error.
        lambda name, raw: _choice(
            name, "urllib3" if raw.strip().lower() == "stdlib" else raw, ("urllib3", "httpx")
        ),
        "'urllib3' (kept-alive http.client connections, urllib3 through a proxy; least CPU) or "
        "'httpx' (httpx's own pool); "
        "both honour HTTP(S)_PROXY and NO_PROXY. 'stdlib' (removed) is read as 'urllib3'.",
    )
    timeout_s: float = _setting(
        "ROBOFY_TIMEOUT_S",
        "30",
        _number_up_to(MAX_TIMEOUT_S, "seconds"),
        "Read timeout per request, 0-600 s; one attempt ends within twice this, however slowly "
        "a server answers.",
    )
    max_attempts: int = _setting(
        "ROBOFY_MAX_ATTEMPTS",
        "5",
        _int_in(1, MAX_ATTEMPTS),
        "Attempts per request (1-20).",
    )
    retry_delay_s: float = _setting(
        "ROBOFY_RETRY_DELAY_S",
        "0.5",
        _number_up_to(MAX_RETRY_DELAY_S, "seconds"),
        "First retry delay, doubled per attempt (up to 60 s; `Retry-After` wins when the API "
        "sends it).",
    )
    lock_timeout_s: float = _setting(
        "ROBOFY_LOCK_TIMEOUT_S",
        "300",
        _number_up_to(MAX_LOCK_TIMEOUT_S, "seconds"),
        "How long a writer waits for another process to release the DuckDB file (up to a day).",
    )
    duckdb_memory_limit: str = _setting(
        "ROBOFY_DUCKDB_MEMORY_LIMIT",
        "160MB",
        _memory,
        "DuckDB buffer memory for loads and builds (spills beyond; 16MB-4TB); an out-of-memory "
        "error names it.",
    )
    lookback_days: int = _setting(
        "ROBOFY_LOOKBACK_DAYS",
        "3",
        _int_in(0, MAX_LOOKBACK_DAYS, " days"),
        "Recent days the schedules re-sync, as conversations continue and stats are restated "
        "(0-366).",
    )
    naive_timezone: str = _setting(
        "ROBOFY_NAIVE_TIMEZONE", "UTC", _timezone, "IANA time zone of timestamps sent without one."
    )
    stats_params: tuple[str, str, str, str] = _setting(
        "ROBOFY_STATS_PARAMS",
        "projectId,chatbotId,startDate,endDate",
        _stats_params,
        "Query parameter names of the message stats endpoint (assumed by the contract).",
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, str] | None = None
    ) -> Settings:
        """Reads and validates every setting; raises SettingsError naming the bad variable.

        Args:
            environ: Where to read the variables (default: ``os.environ``); one missing takes
                its default.
            overrides: Values that win over ``environ``, by variable name, as a user would
                write them (``{"ROBOFY_BASE_URL": "http://127.0.0.1:8080"}``): the
                ``robofy-etl`` options pass theirs here.
        """
        env = {**(os.environ if environ is None else environ), **(overrides or {})}
        unknown = set(overrides or ()) - {f.metadata["env"] for f in fields(cls)}
        if unknown:
            raise SettingsError(f"not a setting: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            meta = f.metadata
            raw = env.get(meta["env"], meta["default"])
            values[f.name] = meta["parse"](meta["env"], raw)
        return cls(**values)

    def as_env(self, *, secrets: bool = True) -> dict[str, str]:
        """Every setting as the variable a user would set: ``from_env(s.as_env()) == s``.

        Args:
            secrets: include the settings that may hold a password (``ROBOFY_WAREHOUSE_URL``);
                without them the dict is safe to store (Dagster keeps resource config with
                every run).
        """
        return {
            f.metadata["env"]: _unparse(getattr(self, f.name))
            for f in fields(self)
            if secrets or not f.metadata["secret"]
        }

    @property
    def warehouse(self) -> WarehouseURL:
        """The checked warehouse URL (``ROBOFY_WAREHOUSE_URL``, else ``ROBOFY_DUCKDB_PATH``)."""
        from robofy_etl.warehouse.url import parse_warehouse_url

        return parse_warehouse_url(self.warehouse_url, duckdb_path=self.duckdb_path)

    @property
    def resolved_publish_path(self) -> str:
        if self.publish_path:
            return self.publish_path
        db = Path(self.duckdb_path)
        return str(db.with_name(f"{db.stem}.read.duckdb"))


def _unparse(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)  # a date prints as 2026-01-31, a float as its shortest exact form


DEFAULTS = Settings.from_env({})
"""Every setting at its default: the defaults of ``ClientConfig`` and ``Warehouse``."""


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for the README and `.env.example`."""
    rows = [(API_KEY_ENV, "", "Robofy API key (required; secret: never logged or stored).")]
    for f in fields(Settings):
        rows.append((f.metadata["env"], f.metadata["default"], f.metadata["doc"]))
    return rows


def settings_table() -> str:
    """The README's table of settings (``scripts/gen_settings_doc.py`` writes it)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, doc in describe_settings():
        shown = f"`{default}`" if default else "(required)" if env == API_KEY_ENV else "(empty)"
        lines.append(f"| `{env}` | {shown} | {doc} |")
    return "\n".join(lines) + "\n"


def env_example() -> str:
    """``.env.example``: every variable at its default, with its meaning."""
    return "\n".join(f"# {doc}\n{env}={default}\n" for env, default, doc in describe_settings())
