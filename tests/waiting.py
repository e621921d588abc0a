"""The one way the tests wait for a condition: poll it, bounded in time, never sleep-then-assert.

``eventually`` polls a check (sync or async) from asyncio code; ``wait_until`` is the same for
synchronous code. The devcluster harness's :func:`devcluster.testing.wait_for` is the e2e suite's.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["eventually", "wait_until"]


async def eventually(
    check: Callable[[], Any],
    what: str = "condition",
    timeout: float = 5.0,
    interval: float = 0.02,
    *,
    fail: bool = True,
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that.

    On timeout raise AssertionError naming ``what`` and the last value, or return False with
    ``fail=False`` (for a caller that retries something else in between).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            if not fail:
                return False
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def wait_until(check: Callable[[], Any], what: str = "condition", timeout: float = 5.0,
               interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; AssertionError naming
    ``what`` and the last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
