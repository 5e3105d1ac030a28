"""Token pagination: envelope resolution, the next-page token, stop rules and loop guards.

Tokens are opaque: the client only echoes back what the server sent, as the query parameter
`nextPageToken` (configurable) on the same URL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from robofy_etl.api.endpoints import Endpoint
from robofy_etl.api.errors import PaginationLoopError, RobofyContractError
from robofy_etl.api.records import normalize_record

__all__ = [
    "Page",
    "describe_keys",
    "extract_items",
    "extract_object",
    "extract_token",
    "iter_pages",
]

_log = logging.getLogger(__name__)

_TOKEN_KEYS = ("next_page_token", "nextPageToken")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list endpoint.

    Attributes:
        items: Normalized records (snake_case keys, aliases resolved, secrets removed).
        number: 1-based page number within this list.
        token: The next-page token read from this page; None on the last page.
        envelope: Which envelope variant matched (`data.sessions`, `data[]`, `sessions`, `[]`,
            `data.report.rows`, `report.rows`, `data` for a single object, `body` for a bare
            object).
        token_location: Where the token key sat (`data.next_page_token`,
            `data.report.next_page_token`, `next_page_token`, ...) or None if absent.
        endpoint: The endpoint name.
    """

    items: list[dict[str, Any]]
    number: int
    token: str | None
    envelope: str
    token_location: str | None
    endpoint: str = ""


def _dig(node: Any, parts: tuple[str, ...]) -> tuple[bool, Any]:
    for part in parts:
        if type(node) is not dict or part not in node:
            return False, None
        node = node[part]
    return True, node


def extract_items(body: Any, items_key: str) -> tuple[list[Any], str] | None:
    """Find a list endpoint's items in any accepted envelope.

    Tried in order: `data.<items_key>`, `<items_key>`, `data` (a list), the body (a list).
    A collection key present with a null value counts as an empty page.

    Args:
        body: The parsed JSON body.
        items_key: The collection path, e.g. `sessions` or `report.rows`.

    Returns:
        `(items, envelope label)`, or None when no variant matches.
    """
    parts = tuple(items_key.split("."))
    if type(body) is dict:
        data = body.get("data")
        if type(data) is dict:
            found, items = _dig(data, parts)
            if found and (items is None or type(items) is list):
                return (items or []), f"data.{items_key}"
        found, items = _dig(body, parts)
        if found and (items is None or type(items) is list):
            return (items or []), items_key
        if type(data) is list:
            return data, "data[]"
        return None
    if type(body) is list:
        return body, "[]"
    return None


def extract_token(body: Any) -> tuple[str | None, str | None]:
    """Read the next-page token beside the items.

    Looked for in `data`, then `data.report`, then the top level; in each, under
    `next_page_token` then `nextPageToken`. The first location holding either key wins, even
    when its value is null.

    Returns:
        `(token or None, location or None)`. An empty string is returned as None.
    """
    if type(body) is not dict:
        return None, None
    data = body.get("data")
    scopes: list[tuple[str, Any]] = []
    if type(data) is dict:
        scopes.append(("data.", data))
        report = data.get("report")
        if type(report) is dict:
            scopes.append(("data.report.", report))
    report = body.get("report")
    if type(report) is dict:
        scopes.append(("report.", report))
    scopes.append(("", body))
    for prefix, scope in scopes:
        for key in _TOKEN_KEYS:
            if key in scope:
                token = scope[key]
                if token is None or token == "":
                    return None, prefix + key
                return (token if type(token) is str else str(token)), prefix + key
    return None, None


def extract_object(body: Any) -> tuple[dict[str, Any], str] | None:
    """Find a single-object endpoint's object: `data` if it is an object, else a bare body.

    Returns:
        `(object, "data" | "body")`, or None when neither matches.
    """
    if type(body) is not dict:
        return None
    if "data" in body:
        data = body["data"]
        return (data, "data") if type(data) is dict else None
    return body, "body"


def describe_keys(body: Any) -> str:
    """Describe a body's top level for an error message (keys or type, never values)."""
    if type(body) is dict:
        return "top-level keys " + (", ".join(sorted(map(str, body))[:20]) or "(none)")
    return f"a top-level {type(body).__name__}"


def iter_pages(
    endpoint: Endpoint,
    path: str,
    fetch: Callable[[Mapping[str, str]], Any],
    *,
    params: Mapping[str, str] | None = None,
    token_param: str = "nextPageToken",  # noqa: S107 - a parameter name, not a secret
    max_pages: int = 10_000,
) -> Iterator[Page]:
    """Follow a list endpoint page by page.

    Args:
        endpoint: A list endpoint (`items_key` set).
        path: The filled-in request path.
        fetch: Performs one GET with the given query parameters, returns the parsed body.
        params: Query parameters sent on every page.
        token_param: Query parameter that carries the token back.
        max_pages: Page cap per list.

    Yields:
        Pages in order; stops after the page whose token is null, empty or absent.

    Raises:
        PaginationLoopError: A token repeats, an empty page carries a token, or the page count
            would exceed `max_pages`.
        RobofyContractError: No envelope variant matches a body.
    """
    items_key = endpoint.items_key
    if items_key is None:
        raise TypeError(f"endpoint {endpoint.name!r} returns one object; use get_one()")
    base = dict(params or {})
    sent: set[str] = set()
    token: str | None = None
    number = 0
    debug = _log.isEnabledFor(logging.DEBUG)
    while True:
        number += 1
        if number > max_pages:
            raise PaginationLoopError(
                f"Stopped paginating {endpoint.name} ({path}) at page {number}: more than "
                f"max_pages={max_pages} pages. Raise max_pages if the list is really that long.",
                endpoint=endpoint.name,
                path=path,
                page=number,
            )
        query = base if token is None else {**base, token_param: token}
        body = fetch(query)
        found = extract_items(body, items_key)
        if found is None:
            raise RobofyContractError(
                f"Cannot find {endpoint.name} items ({items_key}) in page {number} of {path}: "
                f"the body has {describe_keys(body)}. Run the probe and report the shape.",
                endpoint=endpoint.name,
                path=path,
                page=number,
            )
        raw_items, envelope = found
        next_token, location = extract_token(body)
        if debug:
            _log.debug(
                "%s page %d: %d items, envelope %s, token at %s",
                endpoint.name,
                number,
                len(raw_items),
                envelope,
                location,
            )
        items = []
        for raw in raw_items:
            if type(raw) is not dict:
                raise RobofyContractError(
                    f"Page {number} of {endpoint.name} ({path}) has a {type(raw).__name__} "
                    "item where an object was expected.",
                    endpoint=endpoint.name,
                    path=path,
                    page=number,
                )
            items.append(normalize_record(endpoint, raw))
        if next_token is not None:
            if not items:
                raise PaginationLoopError(
                    f"Page {number} of {endpoint.name} ({path}) is empty but carries a "
                    "next-page token; stopping instead of looping.",
                    endpoint=endpoint.name,
                    path=path,
                    page=number,
                )
            if next_token in sent:
                raise PaginationLoopError(
                    f"Page {number} of {endpoint.name} ({path}) returned a next-page token "
                    "that was already sent for this list; stopping instead of looping.",
                    endpoint=endpoint.name,
                    path=path,
                    page=number,
                )
            sent.add(next_token)
        yield Page(items, number, next_token, envelope, location, endpoint.name)
        if next_token is None:
            return
        token = next_token
