"""Fixtures shared by the unit tests: a clock moved by hand and a logger that collects lines.

The classes live in :mod:`tests.fakes` (the integration suite uses them too); a test that needs its
own start time builds ``FakeClock(start)`` itself.
"""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock, FakeLogger


@pytest.fixture
def clock() -> FakeClock:
    """A monotonic clock at 1000.0 that the test moves by hand."""
    return FakeClock()


@pytest.fixture
def logger() -> FakeLogger:
    """A logger that collects every line."""
    return FakeLogger()
