"""Idempotency-Key memory: first result replayed, bounded by size and age, conflicts refused."""

from __future__ import annotations

import asyncio

import pytest

from cache_runtime.service.idempotency import (
    IdempotencyConflict,
    IdempotencyKeyError,
    IdempotencyStore,
    request_fingerprint,
    validate_key,
)
from tests.fakes import FakeClock


class CountingAction:
    """An action that counts how often it really ran."""

    def __init__(self, status: int = 200) -> None:
        self.calls = 0
        self.status = status

    async def __call__(self) -> tuple[int, dict[str, int]]:
        self.calls += 1
        await asyncio.sleep(0)
        return self.status, {"run": self.calls}


async def test_repeat_returns_first_result_without_acting_again() -> None:
    store = IdempotencyStore()
    action = CountingAction()
    first = await store.run("uid-1:clear", "POST /clear", "f1", action)
    second = await store.run("uid-1:clear", "POST /clear", "f1", action)
    assert action.calls == 1
    assert (first.body, first.replayed) == ({"run": 1}, False)
    assert (second.body, second.replayed) == ({"run": 1}, True)
    assert store.replays == 1


async def test_concurrent_duplicates_run_once() -> None:
    store = IdempotencyStore()
    action = CountingAction()
    outcomes = await asyncio.gather(*(store.run("k", "s", "f", action) for _ in range(20)))
    assert action.calls == 1
    assert sum(not outcome.replayed for outcome in outcomes) == 1
    assert store._locks == {}


async def test_without_key_every_call_acts() -> None:
    store = IdempotencyStore()
    action = CountingAction()
    await store.run(None, "s", "f", action)
    await store.run(None, "s", "f", action)
    assert action.calls == 2
    assert len(store) == 0


async def test_failures_are_not_remembered() -> None:
    store = IdempotencyStore()
    failing = CountingAction(status=503)
    await store.run("k", "s", "f", failing)
    await store.run("k", "s", "f", failing)
    assert failing.calls == 2


async def test_exception_releases_the_key() -> None:
    store = IdempotencyStore()

    async def boom() -> tuple[int, object]:
        raise RuntimeError("engine down")

    with pytest.raises(RuntimeError):
        await store.run("k", "s", "f", boom)
    action = CountingAction()
    outcome = await store.run("k", "s", "f", action)
    assert action.calls == 1 and not outcome.replayed


async def test_key_reused_for_another_request_is_a_conflict() -> None:
    store = IdempotencyStore()
    await store.run("k", "POST /clear", "f1", CountingAction())
    with pytest.raises(IdempotencyConflict):
        await store.run("k", "POST /clear", "f2", CountingAction())
    with pytest.raises(IdempotencyConflict):
        await store.run("k", "POST /gc", "f1", CountingAction())
    assert store.conflicts == 2


async def test_entries_expire_after_ttl() -> None:
    clock = FakeClock(0.0)
    store = IdempotencyStore(ttl_s=60, clock=clock)
    action = CountingAction()
    await store.run("k", "s", "f", action)
    clock.now = 59
    assert (await store.run("k", "s", "f", action)).replayed
    clock.now = 61
    assert not (await store.run("k", "s", "f", action)).replayed
    assert action.calls == 2


def test_bounded_by_entries_least_recently_used_first() -> None:
    store = IdempotencyStore(max_entries=3)
    for index in range(3):
        store.remember(f"k{index}", "s", "f", 200, index)
    assert store.lookup("k0", "s", "f") is not None  # k0 becomes most recent
    store.remember("k3", "s", "f", 200, 3)
    assert len(store) == 3
    assert store.lookup("k1", "s", "f") is None
    assert store.lookup("k0", "s", "f") is not None


@pytest.mark.parametrize("bad", ["", "a b", "x" * 256, "caf\u00e9", "tab\there", "nl\n"])
def test_bad_keys_are_rejected_naming_the_header(bad: str) -> None:
    with pytest.raises(IdempotencyKeyError) as caught:
        validate_key(bad)
    assert caught.value.field == "Idempotency-Key"
    assert "visible ASCII" in caught.value.accepted


def test_good_key() -> None:
    assert validate_key("4f9a-uid:step-2") == "4f9a-uid:step-2"


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    assert request_fingerprint("post", "/x", {"a": 1, "b": 2}, None) == request_fingerprint(
        "POST", "/x", {"b": 2, "a": 1}, None
    )
    first = request_fingerprint("POST", "/x", {"a": 1}, None)
    assert first != request_fingerprint("POST", "/x", {"a": 2}, None)


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 1.0), (1, 0.0)])
def test_bad_bounds(max_entries: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        IdempotencyStore(max_entries=max_entries, ttl_s=ttl)


def test_fingerprint_of_huge_integers() -> None:
    big = request_fingerprint("POST", "/x", {"overrides": {"ttl.default_s": 2**70}}, None)
    assert big != request_fingerprint("POST", "/x", {"overrides": {"ttl.default_s": 2**70 + 1}}, None)
