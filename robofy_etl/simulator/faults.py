"""Fault injection: which request gets a 429, a 5xx, a reset, a stall or a truncated body.

Decisions are deterministic per (fault seed, URL, attempt number of that URL), not drawn from one
shared stream, so which requests fail does not depend on how concurrent requests interleave.
The same URL never faults more than ``max_consecutive`` times in a row, so a client that
retries always gets the data, and the data it gets is exactly the fault-free data.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["FAULT_KINDS", "FaultInjector", "Faults"]

FAULT_KINDS = ("429", "500", "502", "503", "504", "reset", "slow", "malformed")
_5XX = ("500", "502", "503", "504")


@dataclass(frozen=True)
class Faults:
    """Per-request fault probabilities (all off by default) and schema drift.

    Attributes:
        rate_429: share of requests answered 429 with ``Retry-After: <retry_after_s>``.
        retry_after_s: the ``Retry-After`` value (seconds, may be fractional) on 429 and 503.
        rate_5xx: share answered 500/502/503/504 (rotating; 503 carries ``Retry-After``).
        rate_reset: share whose connection is reset without a response.
        rate_slow: share that sleep ``slow_s`` seconds (past the client's timeout), then answer.
        slow_s: the stall of a slow response.
        rate_malformed: share answered 200 with a truncated JSON body.
        drift_added: endpoint name -> extra field added to every item of that endpoint.
        drift_renamed: endpoint name -> (old, new): field renamed in every item.
        max_consecutive: the same URL never faults more than this many times in a row.
        seed: seed of the fault decisions.
    """

    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_5xx: float = 0.0
    rate_reset: float = 0.0
    rate_slow: float = 0.0
    slow_s: float = 3.0
    rate_malformed: float = 0.0
    drift_added: Mapping[str, str] = field(default_factory=dict)
    drift_renamed: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    max_consecutive: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "rate_reset", "rate_slow", "rate_malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{name} must be in [0, 1], got {value!r}")
        if self.total_rate > 1.0:
            raise ValueError("the fault rates must add up to at most 1")
        if self.max_consecutive < 0:
            raise ValueError("Faults.max_consecutive must be >= 0")

    @property
    def total_rate(self) -> float:
        return (
            self.rate_429 + self.rate_5xx + self.rate_reset + self.rate_slow + self.rate_malformed
        )

    @property
    def retry_after_header(self) -> str:
        """``retry_after_s`` as a header value: ``"1"``, ``"0.05"``."""
        return f"{self.retry_after_s:g}"


class FaultInjector:
    """Decides, request by request, whether to serve a fault (thread-safe)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._streak: dict[str, int] = {}

    def decide(self, url: str) -> str | None:
        """The fault to serve for this attempt at ``url`` (one of ``FAULT_KINDS``), or None."""
        f = self.faults
        if f.total_rate <= 0.0:
            return None
        with self._lock:
            attempt = self._attempts.get(url, 0)
            self._attempts[url] = attempt + 1
            streak = self._streak.get(url, 0)
            kind = None if streak >= f.max_consecutive else self._draw(url, attempt)
            self._streak[url] = streak + 1 if kind else 0
        return kind

    def _draw(self, url: str, attempt: int) -> str | None:
        f = self.faults
        digest = hashlib.blake2b(f"{f.seed}|{url}|{attempt}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        for kind, rate in (
            ("429", f.rate_429),
            ("5xx", f.rate_5xx),
            ("reset", f.rate_reset),
            ("slow", f.rate_slow),
            ("malformed", f.rate_malformed),
        ):
            if u < rate:
                return _5XX[attempt % 4] if kind == "5xx" else kind
            u -= rate
        return None
