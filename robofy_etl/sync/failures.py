"""How a sync treats a request that failed on every attempt: fatal, reported, or a breaker."""

from __future__ import annotations

from collections.abc import Sequence

from robofy_etl.api import RobofyAuthError, RobofyError, RobofyNotFoundError

# Requests failing in a row before the run stops asking (the API is down, not one record).
MAX_FAILURES_IN_A_ROW = 25


def fatal(exc: RobofyError) -> bool:
    """Errors that stop the whole run: a wrong key (401) fails every request alike."""
    return isinstance(exc, RobofyAuthError) and getattr(exc, "status", None) == 401


def reason(exc: RobofyError) -> str:
    """A one-line reason for a request that failed on every attempt."""
    if isinstance(exc, RobofyAuthError):
        return (
            "permission denied (403): the API key may not read this resource; grant it access "
            "to this chatbot in Robofy (other chatbots still load)"
        )
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


class FailureBreaker:
    """Stops a fan-out once many requests in a row failed: the API is down, not one record."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_FAILURES_IN_A_ROW if limit is None else limit
        self.in_a_row = 0

    def see(self, result: object) -> None:
        if isinstance(result, RobofyError) and not isinstance(result, RobofyNotFoundError):
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                raise RobofyError(
                    f"{self.in_a_row} transcript requests in a row failed (last: "
                    f"{reason(result)}); the API seems unavailable, so this run stops. "
                    "Everything written so far is kept; the next run resumes."
                ) from result
        else:
            self.in_a_row = 0


def outstanding_note(kind: str, items: Sequence[tuple[str, str, str]]) -> str:
    """One problem line for many items: ``(chatbot_id, item, reason)``, a few named."""
    shown = "; ".join(f"{c}/{i}: {r}" for c, i, r in items[:3])
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return (
        f"{len(items)} {kind} did not arrive complete: {shown}{more}. What was stored is kept; "
        "every run retries them (robofy-etl status lists them)."
    )
