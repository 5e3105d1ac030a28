"""One transcript fetch: the request, and whether what arrived is complete."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from robofy_etl.api import RobofyClient, RobofyError, RobofyNotFoundError
from robofy_etl.sync.failures import fatal, reason
from robofy_etl.sync.report import Tracker
from robofy_etl.sync.rows import message_rows

log = logging.getLogger(__name__)

# A transcript that ends before its listing's last message time is fetched again on every run;
# after this many fetches that all end there, it is taken as complete (the API's two clocks may
# simply disagree).
SHORT_TRANSCRIPT_ATTEMPTS = 3


class Task(NamedTuple):
    """One transcript to fetch, and the partition (its session's start day) it lands in."""

    chatbot_id: str
    session_id: str
    project_id: int
    day: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.chatbot_id, self.session_id)


Fetched = list[dict[str, Any]] | RobofyError


@dataclass
class Transcript:
    """One fetched transcript as rows, and whether it arrived complete.

    Attributes:
        rows: the messages that arrived (empty when the request failed).
        problem: why it is not complete (None: complete). An incomplete transcript never
            replaces what is stored: its messages are added by message key, and it stays in
            ``meta.outstanding`` until a later run fetches it complete.
        failed: no transcript arrived at all (404, or an error on every attempt).
    """

    rows: list[dict[str, Any]]
    problem: str | None = None
    failed: bool = False


def classify(
    t: Tracker,
    task: Task,
    result: Fetched,
    expected_last: datetime | None,
    attempts: int,
) -> Transcript:
    """Classifies one transcript fetch: complete, incomplete (with why) or failed."""
    chatbot_id, session_id, project_id, day = task
    if isinstance(result, RobofyNotFoundError):
        return Transcript([], "its transcript answered 404 (Not Found)", failed=True)
    if isinstance(result, RobofyError):
        return Transcript([], reason(result), failed=True)
    rows, rejected = message_rows(t, chatbot_id, session_id, project_id, day, result)
    if rejected:
        return Transcript(rows, f"{rejected} malformed message(s) (see meta.quarantine)")
    if expected_last is not None:
        times = [row["sent_at"] for row in rows if row["sent_at"] is not None]
        last = max(times) if times else None
        short = not rows or (last is not None and last + timedelta(seconds=1) < expected_last)
        if short and attempts + 1 < SHORT_TRANSCRIPT_ATTEMPTS:
            return Transcript(
                rows,
                f"it ends at {last or 'no message'}, but its listing's last message is at "
                f"{expected_last} (a page was cut short?)",
            )
        if short:
            log.warning(
                "transcript of %s/%s still ends at %s (listing: %s) after %d fetches: taken as "
                "complete",
                chatbot_id,
                session_id,
                last,
                expected_last,
                attempts + 1,
            )
    return Transcript(rows)


def fetcher(api: RobofyClient) -> Callable[[Task], Fetched]:
    """Fetches one transcript; an error other than a wrong key is returned, not raised."""

    def fetch(task: Task) -> Fetched:
        try:
            return list(
                api.iter_items("transcript", chatbot_id=task.chatbot_id, session_id=task.session_id)
            )
        except RobofyError as exc:
            if fatal(exc):
                raise
            return exc

    return fetch
