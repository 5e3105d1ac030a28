"""Glitches: responses that look healthy but are incomplete or wrong, for adversarial tests.

Faults (``faults.py``) are loud: a 5xx, a reset, a truncated body. A glitch is quiet: a 200 with
an empty list, a page without its next-page token, a record without its id, an outlier in the
order, a 404 or 403 for one resource. The pipeline must notice such responses, or at least never
lose stored data because of one.

A glitch is a function of one request and its rendered response: it returns a replacement
``(status, body)`` or None to serve the response unchanged. It runs after rendering and caching,
so it never corrupts the cache, and ``Simulator.set_glitch(None)`` restores the clean API at once.
The builders below cover the default response shapes (``Variants()``): a list's items at
``data.<collection>`` (leads: ``data.report.rows``), the token beside them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Glitch",
    "GlitchRequest",
    "edit_items",
    "error_status",
    "no_next_token",
    "only",
]

_ITEMS_AT: Mapping[str, tuple[str, ...]] = {
    "projects": ("data", "projects"),
    "chatbots": ("data", "chatbots"),
    "sessions": ("data", "sessions"),
    "transcript": ("data", "messages"),
    "leads": ("data", "report", "rows"),
    "message_stats": ("data", "data_points"),
}
_TOKEN_IN: Mapping[str, tuple[str, ...]] = {
    "leads": ("data", "report"),
}


@dataclass(frozen=True)
class GlitchRequest:
    """One request as a glitch sees it.

    Attributes:
        endpoint: the simulator's endpoint name (``sessions``, ``transcript``, ...).
        path: the URL path, percent-decoded segments joined by ``/``.
        query: the query parameters.
        status: the status the clean API answers.
    """

    endpoint: str
    path: str
    query: Mapping[str, str]
    status: int

    @property
    def first_page(self) -> bool:
        return "nextPageToken" not in self.query


Glitch = Callable[[GlitchRequest, Any], "tuple[int, Any] | None"]


def _node(body: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def _copy(body: Any) -> Any:
    return json.loads(json.dumps(body))


def edit_items(
    endpoint: str,
    edit: Callable[[GlitchRequest, list[Any]], list[Any] | None],
    *,
    when: Callable[[GlitchRequest], bool] = lambda _: True,
) -> Glitch:
    """Serves ``edit(request, items)`` as the items of ``endpoint``'s list responses.

    ``edit`` gets a copy of the page's items and returns the items to serve instead (which may
    be ``None``: the list comes back as JSON ``null``).
    """

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint != endpoint or request.status != 200 or not when(request):
            return None
        body = _copy(body)
        *parents, last = _ITEMS_AT[endpoint]
        holder = _node(body, tuple(parents))
        if not isinstance(holder, dict):
            return None
        holder[last] = edit(request, list(holder.get(last) or []))
        return 200, body

    return glitch


def no_next_token(
    endpoint: str, *, when: Callable[[GlitchRequest], bool] = lambda _: True
) -> Glitch:
    """Drops the next-page token from ``endpoint``'s pages: the list looks complete."""

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint != endpoint or request.status != 200 or not when(request):
            return None
        body = _copy(body)
        holder = _node(body, _TOKEN_IN.get(endpoint, ("data",)))
        if isinstance(holder, dict):
            holder.pop("next_page_token", None)
        return 200, body

    return glitch


def error_status(
    endpoint: str, status: int, *, when: Callable[[GlitchRequest], bool] = lambda _: True
) -> Glitch:
    """Answers ``endpoint``'s matching requests with ``status`` and the API's error body."""
    names = {403: ("Forbidden", "FORBIDDEN"), 404: ("Not Found", "NOT_FOUND")}
    message, code = names.get(status, ("Internal Server Error", "INTERNAL_SERVER_ERROR"))

    def glitch(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        if request.endpoint != endpoint or not when(request):
            return None
        return status, {"message": message, "error": {"code": code, "detail": "Glitch."}}

    return glitch


def only(times: int, glitch: Glitch) -> Glitch:
    """``glitch`` for the first ``times`` requests it changes; the clean API afterwards."""
    lock = threading.Lock()
    left = [times]

    def limited(request: GlitchRequest, body: Any) -> tuple[int, Any] | None:
        with lock:
            if left[0] <= 0:
                return None
            out = glitch(request, body)
            if out is not None:
                left[0] -= 1
            return out

    return limited
