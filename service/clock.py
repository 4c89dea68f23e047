"""Clocks. Everything that reads time takes a clock, so tests and the scheduling simulator can
run the real code under simulated time. All times are naive UTC datetimes (what SQL stores)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc).replace(tzinfo=None)


class ManualClock:
    """A clock that moves only when told to (simulator, tests of time rules)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
