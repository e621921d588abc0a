"""cache_runtime.singleflight: one loader call per key for concurrent callers; errors reach everyone."""

from __future__ import annotations

import asyncio

import pytest

from cache_runtime.singleflight import SingleFlight


async def test_concurrent_callers_share_one_call() -> None:
    flight = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def load() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    waiters = [asyncio.create_task(flight.run("k", load)) for _ in range(100)]
    await asyncio.sleep(0)
    assert flight.in_flight("k") and len(flight) == 1
    release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 100
    assert calls == 1 and flight.calls == 1 and flight.merged == 99
    assert not flight.in_flight("k")


async def test_different_keys_do_not_share() -> None:
    flight = SingleFlight()
    seen: list[str] = []

    async def load(key: str) -> str:
        seen.append(key)
        await asyncio.sleep(0)
        return key

    results = await asyncio.gather(*(flight.run(k, lambda k=k: load(k)) for k in ("a", "b", "a")))
    assert results == ["a", "b", "a"] and sorted(seen) == ["a", "b"] and flight.merged == 1


async def test_errors_reach_every_waiter_and_are_not_remembered() -> None:
    flight = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def fail() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("loader broke")

    waiters = [asyncio.create_task(flight.run("k", fail)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "loader broke" for r in results)
    assert calls == 1

    async def succeed() -> str:
        return "ok"

    assert await flight.run("k", succeed) == "ok"  # the failure was not cached


async def test_cancelling_the_first_caller_does_not_cancel_the_others() -> None:
    flight = SingleFlight()
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "value"

    first = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run("k", load))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == "value"


async def test_cancel_all_stops_running_work() -> None:
    flight = SingleFlight()

    async def forever() -> None:
        await asyncio.Event().wait()

    waiter = asyncio.create_task(flight.run("k", forever))
    await asyncio.sleep(0)
    await flight.cancel_all()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(flight) == 0


async def test_failure_with_no_waiter_left_is_not_logged_as_unretrieved(caplog: pytest.LogCaptureFixture
                                                                        ) -> None:
    flight = SingleFlight()
    release = asyncio.Event()

    async def fail() -> None:
        await release.wait()
        raise ValueError("nobody listens")

    waiter = asyncio.create_task(flight.run("k", fail))
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await asyncio.sleep(0.01)
    import gc
    gc.collect()
    assert "never retrieved" not in caplog.text
