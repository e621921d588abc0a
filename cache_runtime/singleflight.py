"""Per-key single-flight: concurrent callers for one key share one call of the loader.

Pure asyncio, no I/O. The first caller for a key starts the work as its own task; everyone who
arrives while it runs awaits the same task (``merged`` counts them). The work is a task rather than
the first caller's coroutine so that cancelling the first caller does not cancel the others' result.
An exception reaches every waiter, and nothing is remembered afterwards: the next call starts fresh.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight:
    """Deduplicates concurrent work per key."""

    __slots__ = ("_inflight", "calls", "merged")

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self.calls = 0
        self.merged = 0

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """Return ``await work()``, sharing one call among all concurrent callers of ``key``."""
        task = self._inflight.get(key)
        if task is None:
            self.calls += 1
            task = asyncio.ensure_future(work())
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
        else:
            self.merged += 1
        # shield: a waiter that is cancelled stops waiting; the shared work goes on for the others.
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Mark the exception as retrieved: if every waiter was cancelled nobody else will, and
        # asyncio would log "exception was never retrieved".
        if not task.cancelled():
            task.exception()

    def in_flight(self, key: str) -> bool:
        """Whether work for ``key`` is running."""
        return key in self._inflight

    def __len__(self) -> int:
        return len(self._inflight)

    async def cancel_all(self) -> None:
        """Cancel all running work (engine shutdown) and wait for it to finish."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
