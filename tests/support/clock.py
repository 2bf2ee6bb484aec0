"""A monotonic clock that tests move forward, to cross timeouts and retry pauses without sleeping."""

from __future__ import annotations


class Clock:
    """Stands in for time.monotonic; `advance` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
