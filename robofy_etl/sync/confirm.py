"""Evidence before deletion: a stored row a listing left out is asked for on its own.

A response that came back short must never delete stored data. A stored project, chatbot or
session the listing did not show is removed only when its own endpoint answers 404; if it still
answers, the listing was incomplete, which is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robofy_etl.api import RobofyClient, RobofyError, RobofyNotFoundError
from robofy_etl.sync.failures import fatal
from robofy_etl.sync.registry import CHATBOTS, PROJECTS, SESSIONS
from robofy_etl.sync.report import Tracker
from robofy_etl.sync.window import Window
from robofy_etl.warehouse.reads import Chatbot

_SNAPSHOT_TABLES = {"project": PROJECTS.name, "chatbot": CHATBOTS.name}


def confirm_vanished(
    api: RobofyClient,
    t: Tracker,
    endpoint: str,
    vanished: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[str]:
    """Asks each vanished entity's own endpoint; returns the keys that answer 404 (gone).

    ``vanished`` holds ``(key, path parameters)``. One that still answers was left out of an
    incomplete listing: it is kept and reported. Another error proves nothing: it is kept, and
    asked again by the next run.
    """

    def ask(item: tuple[str, Mapping[str, Any]]) -> str:
        try:
            api.get_one(endpoint, **item[1])
        except RobofyNotFoundError:
            return "gone"
        except RobofyError as exc:
            if fatal(exc):
                raise
            return "unknown"
        return "exists"

    gone: list[str] = []
    kept: list[str] = []
    for (key, _), answer in api.fan_out(list(vanished), ask):
        if answer == "gone":
            gone.append(key)
        elif answer == "exists":
            kept.append(key)
    if kept:
        t.problem(
            _SNAPSHOT_TABLES[endpoint],
            f"the {endpoint} listing left out {len(kept)} {endpoint}(s) that still exist "
            f"({', '.join(sorted(kept)[:5])}): the listing was incomplete, so they are kept as "
            "they were.",
        )
    return gone


def confirm_gone(
    api: RobofyClient, t: Tracker, window: Window, missing: Mapping[Chatbot, list[str]]
) -> set[tuple[str, str]]:
    """Asks for the transcript of each stored session the listing did not show.

    A 404 is evidence that the session is gone. A transcript that answers means the listing was
    incomplete: that chatbot's stored sessions are all kept (none is removed this run) and the
    problem is reported. Any other error proves nothing: the session is kept.
    """

    def probe(item: tuple[Chatbot, list[str]]) -> tuple[list[str], str | None]:
        chatbot, session_ids = item
        gone: list[str] = []
        for session_id in session_ids:
            try:
                next(
                    iter(
                        api.paginate(
                            "transcript", chatbot_id=chatbot.chatbot_id, session_id=session_id
                        )
                    )
                )
            except RobofyNotFoundError:
                gone.append(session_id)
                continue
            except (RobofyError, StopIteration) as exc:
                if isinstance(exc, RobofyError) and fatal(exc):
                    raise
                continue
            return [], session_id  # it exists: the listing left it out
        return gone, None

    confirmed: set[tuple[str, str]] = set()
    items = [(chatbot, ids) for chatbot, ids in missing.items() if ids]
    for (chatbot, ids), (gone, existing) in api.fan_out(items, probe):
        if existing is not None:
            t.problem(
                SESSIONS.name,
                f"sessions of chatbot {chatbot.chatbot_id} ({window}): the listing left out "
                f"{len(ids)} stored session(s), and at least one still exists (e.g. {existing}): "
                "the listing was incomplete (an empty page, a page without its next token, or an "
                "order outlier). Every stored session of this chatbot is kept; the next run "
                "scans it again.",
            )
        confirmed.update((chatbot.chatbot_id, session_id) for session_id in gone)
    t.report.details["sessions_confirmed_gone"] = len(confirmed)
    return confirmed
