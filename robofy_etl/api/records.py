"""The tolerant reader: snake_case keys, aliases, secret stripping, timestamp parsing, drift.

Values are kept exactly as received, except for the secrets redacted inside them (below); only
keys change. Staging SQL types the values.

Secrets are removed three ways, at any depth:

1. **By name** (`is_secret_key`): a key is dropped when its snake_case name is named like a key,
   token, secret or password (`SECRET_KEY_PATTERN`): its final word-part is `secret(s)`,
   `password(s)`, `passwd`, `pwd`, `bearer`, `token`, `credential(s)`, `authorization` or
   `apikey`, or `key(s)` after another word-part (`llm_api_key`, `openai_key`, `license_key`,
   `api_keys`); or it contains `api_key`, `private_key`, `secret_key` or `client_secret`
   anywhere (`private_key_pem`). Names are compared case- and separator-insensitively too
   (`SECRET_COMPACT_PATTERN`), so `LLMAPIKEY`, `Llm.Api.Key` and `AUTHTOKEN` are dropped; a
   bare `key` glued to another word (`OPENAIKEY`) cannot be told from `monkey` and is kept.
   Kept: pagination and ordinary identifiers (`next_page_token`, `page_token`, `primary_key`,
   `sort_key`, ...), a bare `key`, and names that merely mention the words without ending in
   them (`tokens_used`, `token_count`, `password_set_at`, `secretary`, `keywords`, `monkey`).
2. **Inside string values** (`redact_text`): a string that is itself a JSON object or array has
   its secret keys dropped by the same rule and is re-serialized (only when something was
   dropped); the value of a secret query parameter in a URL (`?key=`, `token=`, `api_key=`,
   `access_token=`, `secret=`, `password=`, `sig=`, `signature=`, ...) becomes `REDACTED`.
3. **By shape**: `Bearer <token>` (the token part) and `sk-...` / `sk_live_...` style keys become
   `REDACTED` wherever they appear in a string. Both shapes demand a run of at least 16 (20)
   token characters holding a digit, so prose ("the bearer of bad news", "sk-learn") is left
   alone. A JSON Web Token is caught by these (`Bearer eyJ...`), by its parameter name in a URL
   or by its field name (`id_token`, `access_token`), not by its own shape.

Values of id fields (`id`, `*_id`) and of paging tokens are never rewritten.

Hot path: `normalize_record` runs on every record of a sync (about 60k). A string value is only
examined when a few substring tests (`=`, `"`, and in strings longer than 22 characters `earer`
or `sk`) say it might hold a secret; everything else is copied as before. (Both shapes are longer
than 22 characters; an all-capital `BEARER` is not looked for.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo

from robofy_etl.api.endpoints import Endpoint

__all__ = [
    "REDACTED",
    "SECRET_COMPACT_PATTERN",
    "SECRET_KEY_PATTERN",
    "find_drift",
    "is_secret_key",
    "iter_path",
    "normalize_record",
    "parse_timestamp",
    "redact_text",
    "snake_case",
    "timestamp_format",
]

REDACTED = "REDACTED"
"""What a secret inside a string value is replaced with (URL-safe, so URLs stay URLs)."""

SECRET_KEY_PATTERN = re.compile(
    r"(?:^|_)(?:secrets?|passwords?|passwd|pwd|bearer|token|credentials?|authorization|apikey)$"
    r"|_keys?$"
    r"|(?:^|_)(?:api_key|private_key|secret_key|client_secret)(?:_|$)"
)
# The same rule on the name with every separator removed (`LLMAPIKEY` -> `llmapikey`). Only the
# words that cannot end an ordinary word are matched here: a bare `key` suffix would catch
# `monkey` and `hockey`, and `tokens` would catch `prompttokens`.
SECRET_COMPACT_PATTERN = re.compile(
    r"(?:secrets?|passwords?|passwd|pwd|bearer|token|credentials?|authorization|apikeys?)$"
    r"|apikey|privatekey|secretkey|clientsecret"
)
# Names that end like a secret but are not one, compared without separators.
_NOT_SECRET = frozenset(
    {
        "nextpagetoken",
        "pagetoken",
        "nexttoken",
        "continuationtoken",
        "primarykey",
        "foreignkey",
        "sortkey",
        "partitionkey",
    }
)
# Query parameters that hold a credential although the key rule keeps them as field names.
_SECRET_PARAMS = frozenset({"key", "sig", "signature", "auth", "jwt", "xamzsignature"})
_SEPARATORS = re.compile(r"[^a-z0-9]+")

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
    """Tell whether a snake_case key names a secret (see the module docstring for the rule).

    The test ignores case and separators: `LLMAPIKEY`, `llm.api.key` and `llm_api_key` agree.
    """
    words = _SEPARATORS.sub("_", snake_key.lower()).strip("_")
    compact = words.replace("_", "")
    if compact in _NOT_SECRET:
        return False
    return (
        SECRET_KEY_PATTERN.search(words) is not None
        or SECRET_COMPACT_PATTERN.search(compact) is not None
    )


def _key_info(key: str) -> str | None:
    snake = snake_case(key)
    result = None if is_secret_key(snake) else snake
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[key] = result
    return result


# -- secrets inside string values ---------------------------------------------------------------

# `?name=value` / `&name=value` / `#name=value` (OAuth fragments) / `;name=` (`&amp;name=`).
_QUERY_PARAM = re.compile(r"([?&#;])([^=&#;?\s\"'<>]{1,64})=([^&#;\s\"'<>)\]]*)")
_B64_CHARS = r"[A-Za-z0-9\-._~+/]"  # RFC 6750 token68: base64 plus URL-safe marks
_CREDENTIAL = re.compile(
    # RFC 6750 bearer credentials: the scheme word is kept, the token redacted.
    rf"(?P<scheme>\b(?i:bearer)\s+)(?={_B64_CHARS}*\d){_B64_CHARS}{{16,}}=*"
    # OpenAI / Anthropic `sk-...`, `sk-proj-...`, `sk-ant-...`; Stripe `sk_live_...`.
    r"|\bsk[-_](?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}"
)


@lru_cache(maxsize=1024)
def _is_secret_param(name: str) -> bool:
    name = unquote_plus(name)
    compact = _SEPARATORS.sub("", name.lower())
    return compact in _SECRET_PARAMS or is_secret_key(snake_case(name))


def _redact_param(match: re.Match[str]) -> str:
    value = match.group(3)
    if not value or value == REDACTED or not _is_secret_param(match.group(2)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}={REDACTED}"


def _redact_credential(match: re.Match[str]) -> str:
    return (match.group("scheme") or "") + REDACTED


def _scrub(value: Any) -> Any:
    """Drop secret keys and redact strings in a parsed JSON value; the same object if clean."""
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is dict:
        out: dict[Any, Any] = {}
        changed = False
        for key, item in value.items():
            if _is_secret_name(key):
                changed = True
                continue
            new = _scrub(item)
            changed = changed or new is not item
            out[key] = new
        return out if changed else value
    if kind is list:
        items = [_scrub(item) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
    return value


def _is_secret_name(key: object) -> bool:
    if type(key) is not str:
        return False
    if key in _KEY_CACHE:
        return _KEY_CACHE[key] is None
    return _key_info(key) is None


def redact_text(text: str) -> str:
    """Redact the secrets inside one string value (rules 2 and 3 of the module docstring).

    Args:
        text: Any string value from a payload.

    Returns:
        `text` itself when nothing was redacted, else the redacted copy. A JSON string that
        loses a key is re-serialized (`json.dumps`, non-ASCII kept).
    """
    if '":' in text and text.lstrip()[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if type(parsed) is dict or type(parsed) is list:
            scrubbed = _scrub(parsed)
            return text if scrubbed is parsed else json.dumps(scrubbed, ensure_ascii=False)
    result = text
    if "=" in result:
        result = _QUERY_PARAM.sub(_redact_param, result)
    if len(result) > 22:
        result = _CREDENTIAL.sub(_redact_credential, result)
    # re.sub returns a new, equal string when it replaced nothing; hand back the original.
    return text if result == text else result


def _keeps_value(name: str) -> bool:
    """Ids and paging tokens are never rewritten, even when they happen to look like a key."""
    return name == "id" or name.endswith("_id") or name.replace("_", "") in _NOT_SECRET


def _normalize_dict(value: dict[Any, Any]) -> dict[str, Any]:
    # Hot path (every record of every page): scalars are copied without a function call, and a
    # string is only handed to redact_text when cheap substring tests say it might hold a
    # secret (the shapes are all longer than 22 characters).
    out: dict[str, Any] = {}
    cache = _KEY_CACHE
    for key, item in value.items():
        try:  # a subscript is cheaper than .get() and misses are rare (a zero-cost try)
            name = cache[key]
        except KeyError:
            name = _key_info(key) if type(key) is str else str(key)
        if name is None:
            continue
        kind = type(item)
        if kind is str:
            if (
                "=" in item or '"' in item or (len(item) > 22 and ("earer" in item or "sk" in item))
            ) and not _keeps_value(name):
                item = redact_text(item)
        elif kind is dict:
            item = _normalize_dict(item)
        elif kind is list:
            item = _normalize_list(item)
        out[name] = item
    return out


def _normalize_list(value: list[Any]) -> list[Any]:
    out = []
    for item in value:
        kind = type(item)
        if kind is str:
            if "=" in item or '"' in item or (len(item) > 22 and ("earer" in item or "sk" in item)):
                item = redact_text(item)
        elif kind is dict:
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
        A new dict; `raw` is not modified. Values are unchanged except for the secrets redacted
        inside strings (see the module docstring).
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
