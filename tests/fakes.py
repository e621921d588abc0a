"""Fakes shared by the test suites (imported as ``tests.fakes``; the unit suite's conftest.py also
offers them as fixtures)."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock the test moves by hand (``clock.now += 5`` or ``clock.advance(5)``), so
    time-based behaviour is exercised without sleeping and without timing asserts."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now


class FakeLogger:
    """Collects log lines (``info``, ``warning`` and ``error`` alike) as kopf's logger would get them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        """Record ``message``."""
        self.lines.append(message)

    warning = error = info
