"""Test-side helpers: a reader for every served envelope and a plain-httpx page walker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from robofy_etl.simulator import Simulator, SimulatorConfig

END = datetime(2026, 10, 15, 0, 0)


def items_and_token(body: Any, collection: str) -> tuple[list[Any], Any]:
    """Find the items and the next token in any of the served envelopes (test-side reader)."""
    if isinstance(body, list):
        return body, None
    token: Any = None
    for key in ("next_page_token", "nextPageToken"):
        if key in body:
            token = body[key]
    data = body.get("data", body)
    if isinstance(data, list):
        return data, token
    container = data.get(collection, data) if collection != "rows" else data["report"]
    if collection == "rows":
        items = container["rows"]
    else:
        items = container if isinstance(container, list) else container[collection]
    for where in (data, container if isinstance(container, dict) else {}):
        for key in ("next_page_token", "nextPageToken"):
            if key in where:
                token = where[key]
    return items, token


def walk(
    client: httpx.Client, path: str, collection: str, params: dict[str, str] | None = None
) -> tuple[list[Any], int]:
    """Follow nextPageToken to the end; returns (all items, pages)."""
    out: list[Any] = []
    token = None
    pages = 0
    while True:
        query = dict(params or {})
        if token:
            query["nextPageToken"] = token
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        items, token = items_and_token(r.json(), collection)
        out.extend(items)
        pages += 1
        assert pages < 1000
        if not token:
            return out, pages


def new_sim(**kwargs: Any) -> Simulator:
    kwargs.setdefault("scale", "tiny")
    kwargs.setdefault("end", END)
    return Simulator(SimulatorConfig(**kwargs))
