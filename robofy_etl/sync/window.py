"""The window type: a half-open range of UTC days, the partitions one run covers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True)
class Window:
    """A half-open range of UTC days ``[start, end)``: the partitions one run covers."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start} .. {self.end}")

    @property
    def start_dt(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day)

    @property
    def end_dt(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day)

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)

    def days(self) -> Iterator[date]:
        d = self.start
        while d < self.end:
            yield d
            d += timedelta(days=1)

    def contains(self, moment: datetime) -> bool:
        return self.start_dt <= moment < self.end_dt

    def split(self, days: int) -> list[Window]:
        """Consecutive windows of at most ``days`` days covering this one, oldest first."""
        if days < 1:
            raise ValueError(f"cannot split a window into parts of {days} days")
        parts, start = [], self.start
        while start < self.end:
            end = min(start + timedelta(days=days), self.end)
            parts.append(Window(start, end))
            start = end
        return parts

    @classmethod
    def from_label(cls, label: str) -> Window:
        """The window a label ``first..last`` (as ``str(window)`` writes it) names.

        Raises:
            ValueError: if ``label`` is not two ISO dates joined by ``..``, first <= last.
        """
        first, sep, last = label.partition("..")
        if not sep:
            raise ValueError(f"not a window label (first..last): {label!r}")
        return cls(date.fromisoformat(first), date.fromisoformat(last) + timedelta(days=1))

    def covers(self, label: str | None) -> bool:
        """Whether a window label ``first..last`` (as ``str(window)`` writes it) lies inside."""
        try:
            other = Window.from_label(label or "")
        except ValueError:
            return False
        return self.start <= other.start and other.end <= self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.last.isoformat()}"
