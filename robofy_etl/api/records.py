"""The tolerant reader: snake_case keys, aliases, secret stripping, timestamp parsing, drift.

Values are kept exactly as received; only keys change. Staging SQL types the values.

Secret rule: a key is dropped, at any depth, when its snake_case name is named like a key,
token, secret or password (`SECRET_KEY_PATTERN`): its final word-part is `secret(s)`,
`password(s)`, `passwd`, `token`, `credential(s)`, `authorization` or `apikey`, or `key(s)` after
another word-part (`llm_api_key`, `openai_key`, `license_key`, `api_keys`); or it contains
`api_key`, `private_key`, `secret_key` or `client_secret` anywhere (`private_key_pem`).
Kept: pagination and ordinary identifiers (`next_page_token`, `page_token`, `primary_key`,
`sort_key`, ...), a bare `key`, and names that merely mention the words without ending in them
(`tokens_used`, `token_count`, `password_set_at`, `secretary`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from robofy_etl.api.endpoints import Endpoint

__all__ = [
    "SECRET_KEY_PATTERN",
    "find_drift",
    "is_secret_key",
    "iter_path",
    "normalize_record",
    "parse_timestamp",
    "snake_case",
    "timestamp_format",
]

SECRET_KEY_PATTERN = re.compile(
    r"(?:^|_)(?:secrets?|passwords?|passwd|token|credentials?|authorization|apikey)$"
    r"|_keys?$"
    r"|(?:^|_)(?:api_key|private_key|secret_key|client_secret)(?:_|$)"
)
_NOT_SECRET = frozenset(
    {
        "next_page_token",
        "page_token",
        "continuation_token",
        "primary_key",
        "foreign_key",
        "sort_key",
        "partition_key",
    }
)

_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")

# key -> snake_case name, or None when the key is a secret. Bounded so that payloads keyed by
# data (not by schema) cannot grow it without limit.
_KEY_CACHE: dict[str, str | None] = {}
_KEY_CACHE_MAX = 50_000


def snake_case(key: str) -> str:
    """Convert a camelCase / PascalCase / kebab-case key to snake_case.

    Examples: `sessionId` -> `session_id`, `LLMApiKey` -> `llm_api_key`,
    `website-url` -> `website_url`; snake_case keys are returned unchanged.
    """
    if key.islower() and "-" not in key and " " not in key:
        return key
    text = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", key))
    return text.replace("-", "_").replace(" ", "_").lower()


def is_secret_key(snake_key: str) -> bool:
    """Tell whether a snake_case key names a secret (see the module docstring for the rule)."""
    return snake_key not in _NOT_SECRET and SECRET_KEY_PATTERN.search(snake_key) is not None


def _key_info(key: str) -> str | None:
    snake = snake_case(key)
    result = None if is_secret_key(snake) else snake
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[key] = result
    return result


_MISSING = object()


def _normalize_dict(value: dict[Any, Any]) -> dict[str, Any]:
    # Hot path (every record of every page): scalars are copied without a function call.
    out: dict[str, Any] = {}
    cache = _KEY_CACHE
    for key, item in value.items():
        name = cache.get(key, _MISSING)
        if name is _MISSING:
            name = _key_info(key) if type(key) is str else str(key)
        if name is None:
            continue
        kind = type(item)
        if kind is dict:
            item = _normalize_dict(item)
        elif kind is list:
            item = _normalize_list(item)
        out[name] = item  # type: ignore[index]
    return out


def _normalize_list(value: list[Any]) -> list[Any]:
    out = []
    for item in value:
        kind = type(item)
        if kind is dict:
            item = _normalize_dict(item)
        elif kind is list:
            item = _normalize_list(item)
        out.append(item)
    return out


def normalize_record(endpoint: Endpoint, raw: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with snake_case keys, aliases resolved and secrets removed.

    Args:
        endpoint: The endpoint the record came from (for its aliases).
        raw: One record as received.

    Returns:
        A new dict; `raw` is not modified. Values are unchanged.
    """
    record = _normalize_dict(raw)
    for alias, canonical in endpoint.aliases:
        if canonical not in record and alias in record:
            record[canonical] = record.pop(alias)
    return record


@lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    return UTC if name.upper() in ("UTC", "Z", "ETC/UTC") else ZoneInfo(name)


def parse_timestamp(value: object, naive_tz: str = "UTC") -> datetime | None:
    """Parse an API timestamp into a naive UTC datetime.

    Accepts `YYYY-MM-DD HH:MM:SS` and ISO 8601 with or without fraction and offset
    (`2026-04-23T10:30:00`, `2026-08-12T01:02:03.000Z`, `...+02:00`). Naive values are read
    in `naive_tz`.

    Args:
        value: The raw value (normally a string).
        naive_tz: IANA zone name for values without an offset (default UTC). An unknown zone
            name raises `zoneinfo.ZoneInfoNotFoundError`: that is a configuration error.

    Returns:
        A naive datetime in UTC, or None for None, "", non-strings and unparseable text.
    """
    if type(value) is not str or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        zone = _zone(naive_tz)
        if zone is UTC:
            return parsed
        parsed = parsed.replace(tzinfo=zone)
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        return None


_FORMATS = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?P<sep>[T ])\d{2}:\d{2}(?::\d{2})?(?P<frac>[.,]\d+)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?$"
)


def timestamp_format(value: object) -> str:
    """Label the format of a timestamp value, for the probe report.

    Returns:
        One of `null`, `empty`, `not-a-string`, `naive-space`, `iso`, each optionally suffixed
        by `-fraction` and then `-z` or `-offset` (e.g. `iso-fraction-z`), `date`,
        `other-parseable`, or `unparseable`.
    """
    if value is None:
        return "null"
    if not isinstance(value, str):
        return "not-a-string"
    if not value:
        return "empty"
    match = _FORMATS.match(value)
    if match:
        label = "naive-space" if match["sep"] == " " else "iso"
        if match["frac"]:
            label += "-fraction"
        if match["tz"]:
            label += "-z" if match["tz"] == "Z" else "-offset"
        return label
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "date"
    return "other-parseable" if parse_timestamp(value) is not None else "unparseable"


def iter_path(record: Any, path: str) -> Iterator[Any]:
    """Yield the values at a dotted path; a `[]` suffix walks a list (`parts[].data.time`).

    Missing keys yield nothing.
    """
    head, _, rest = path.partition(".")
    walk = head.endswith("[]")
    key = head[:-2] if walk else head
    if not isinstance(record, dict) or key not in record:
        return
    value = record[key]
    values = (value if isinstance(value, list) else []) if walk else [value]
    for item in values:
        if rest:
            yield from iter_path(item, rest)
        else:
            yield item


def find_drift(endpoint: Endpoint, record: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Compare a normalized record's top-level keys with the contract.

    Args:
        endpoint: The endpoint (its `fields` are the contract).
        record: A normalized record.

    Returns:
        `(added, missing)`: keys the contract does not list, and contract fields absent from
        the record.
    """
    known = set(endpoint.fields)
    keys = set(record)
    return keys - known, known - keys
