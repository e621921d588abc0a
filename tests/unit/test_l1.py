"""cache_runtime.l1: entry and byte budgets, LRU order, lazy expiry, amortised sweep, epochs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache_runtime.keys import redis_glob_to_regex
from cache_runtime.l1 import MISSING, DeferredValue, L1Cache
from tests.fakes import FakeClock


def make(clock: FakeClock, entries: int = 100, max_bytes: int = 10_000, sweep: int = 0) -> L1Cache:
    return L1Cache(entries, max_bytes, sweep, clock=clock)


def test_get_set_delete_and_none_is_a_value(clock: FakeClock) -> None:
    l1 = make(clock)
    assert l1.get("k") is MISSING and not MISSING
    assert l1.set("k", None, 10, 60)
    assert l1.get("k") is None and "k" in l1
    assert l1.get("absent", "default") == "default"
    assert l1.delete("k") and not l1.delete("k")
    assert l1.get("k") is MISSING and l1.bytes == 0


def test_entry_budget_evicts_least_recently_used(clock: FakeClock) -> None:
    l1 = make(clock, entries=3)
    for key in "abc":
        l1.set(key, key, 1, 60)
    l1.get("a")  # a becomes most recent; b is now the oldest
    l1.set("d", "d", 1, 60)
    assert list(l1.keys()) == ["c", "a", "d"]
    assert l1.evictions == 1


def test_byte_budget_counts_encoded_sizes(clock: FakeClock) -> None:
    l1 = make(clock, entries=100, max_bytes=100)
    l1.set("a", "A", 40, 60)
    l1.set("b", "B", 40, 60)
    l1.set("c", "C", 40, 60)  # 120 > 100: a goes
    assert list(l1.keys()) == ["b", "c"] and l1.bytes == 80
    l1.set("b", "B2", 10, 60)  # replacing adjusts the byte count
    assert l1.bytes == 50 and l1.get("b") == "B2"


def test_an_entry_larger_than_the_budget_is_rejected_and_replaces_nothing(clock: FakeClock) -> None:
    l1 = make(clock, max_bytes=100)
    l1.set("a", "old", 10, 60)
    assert not l1.set("a", "huge", 101, 60)
    assert l1.get("a") is MISSING  # a stale older value must not survive a rejected write
    assert l1.rejected == 1 and l1.bytes == 0


def test_zero_budgets_turn_l1_off(clock: FakeClock) -> None:
    for entries, max_bytes in ((0, 1000), (10, 0)):
        l1 = make(clock, entries=entries, max_bytes=max_bytes)
        assert not l1.set("a", 1, 1, 60)
        assert len(l1) == 0


def test_lazy_expiry_on_read(clock: FakeClock) -> None:
    l1 = make(clock)
    l1.set("a", 1, 5, 10)
    clock.now += 9.999
    assert l1.get("a") == 1
    assert l1.get_entry("a") is not None
    clock.now += 0.001
    assert l1.get("a") is MISSING and "a" not in l1
    assert l1.expirations == 1 and l1.bytes == 0 and len(l1) == 0


def test_full_ttl_is_kept_for_entries_that_live_shorter_here(clock: FakeClock) -> None:
    l1 = make(clock)
    l1.set("a", 1, 5, 10, full_ttl=100)
    entry = l1.get_entry("a")
    assert entry is not None and entry.ttl == 100 and entry.remaining(clock.now) == 10


def test_get_entry_reports_remaining_ttl(clock: FakeClock) -> None:
    l1 = make(clock)
    l1.set("a", 1, 5, 10)
    clock.now += 4
    entry = l1.get_entry("a")
    assert entry is not None and entry.remaining(clock.now) == pytest.approx(6) and entry.ttl == 10
    clock.now += 6
    assert l1.get_entry("a") is None


def test_amortised_sweep_drops_expired_oldest_entries_on_write(clock: FakeClock) -> None:
    l1 = make(clock, sweep=4)
    for i in range(10):
        l1.set(f"short{i}", i, 1, 5)
    l1.set("long", 0, 1, 1000)
    clock.now += 6
    l1.set("w1", 0, 1, 1000)  # checks the 4 oldest: all expired
    assert l1.expirations == 4 and len(l1) == 8
    l1.set("w2", 0, 1, 1000)
    l1.set("w3", 0, 1, 1000)
    assert l1.expirations == 10
    assert set(l1.keys()) == {"long", "w1", "w2", "w3"}


def test_no_sweep_when_batch_is_zero(clock: FakeClock) -> None:
    l1 = make(clock, sweep=0)
    l1.set("a", 1, 1, 1)
    clock.now += 2
    l1.set("b", 1, 1, 10)
    assert len(l1) == 2 and l1.expirations == 0
    assert l1.purge_expired() == 1 and list(l1.keys()) == ["b"]


def test_nonpositive_ttl_is_not_stored(clock: FakeClock) -> None:
    l1 = make(clock)
    assert not l1.set("a", 1, 1, 0) and not l1.set("a", 1, 1, -1)
    assert len(l1) == 0


def test_resize_keeps_the_most_recent_entries(clock: FakeClock) -> None:
    l1 = make(clock, entries=10, max_bytes=1000)
    for i in range(10):
        l1.set(str(i), i, 10, 60)
    l1.get("0")
    assert l1.resize(3, 1000) == 7
    assert list(l1.keys()) == ["8", "9", "0"]
    assert l1.resize(10, 15) == 2 and list(l1.keys()) == ["0"]
    l1.resize(10, 1000)
    assert l1.set("x", 1, 500, 60) and len(l1) == 2


def test_invalidate_prefix_and_pattern(clock: FakeClock) -> None:
    l1 = make(clock)
    for key in ("cw:a:v0:k1:ai:qa:s:h1", "cw:a:v0:k1:ai:summarize:s:h2", "cw:b:v0:k1:ai:qa:s:h3", "other"):
        l1.set(key, 1, 1, 60)
    assert l1.invalidate_prefix("cw:a:") == 2
    assert l1.invalidate_matching(redis_glob_to_regex("cw:*:ai:qa:*")) == 1
    assert list(l1.keys()) == ["other"]
    assert l1.invalidate_matching(re.compile("nothing")) == 0


def test_clear_and_epoch_guard_late_writes(clock: FakeClock) -> None:
    l1 = make(clock)
    l1.set("a", 1, 1, 60)
    seen = l1.epoch
    assert l1.bump_epoch() == seen + 1 and len(l1) == 0
    assert not l1.set("late", "stale", 1, 60, epoch=seen)  # prepared before the bump
    assert l1.set("fresh", 1, 1, 60, epoch=l1.epoch)
    assert l1.clear() == 1 and l1.bytes == 0


def test_stats_shape(clock: FakeClock) -> None:
    l1 = make(clock, entries=1)
    l1.set("a", 1, 7, 60)
    l1.set("b", 1, 7, 60)
    assert l1.stats() == {"entries": 1, "bytes": 7, "max_entries": 1, "max_bytes": 10_000, "evictions": 1,
                          "expirations": 0, "inserts": 2, "rejected": 0, "epoch": 0}


operations = st.lists(st.tuples(st.sampled_from(["set", "get", "delete", "tick", "resize"]),
                                st.integers(0, 15), st.integers(1, 60)), max_size=200)


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_budgets_and_byte_count_hold_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    clock = FakeClock()
    l1 = L1Cache(8, 200, 3, clock=clock)
    model: dict[str, tuple[int, float]] = {}  # key -> (size, deadline) for live entries we stored
    for op, n, m in ops:
        key = f"k{n}"
        if op == "set":
            stored = l1.set(key, n, m, m / 10)
            if stored:
                model[key] = (m, clock.now + m / 10)
        elif op == "get":
            value = l1.get(key)
            if value is not MISSING:
                assert value == n and key in model and model[key][1] > clock.now
        elif op == "delete":
            l1.delete(key)
        elif op == "tick":
            clock.now += m / 20
        else:
            l1.resize(n % 9, m * 4)
        assert len(l1) <= l1.max_entries and l1.bytes <= l1.max_bytes
        assert l1.bytes == sum(e.size for e in l1._data.values())


def test_a_deferred_value_is_parsed_once_on_first_read(clock: FakeClock) -> None:
    calls: list[bytes] = []

    def load(payload: bytes) -> list[str]:
        calls.append(payload)
        return [payload.decode()]

    cache = make(clock)
    assert cache.set("k", DeferredValue(load, b"abc"), 3, 10)
    assert calls == []  # nothing parsed at write time
    first = cache.get("k")
    assert first == ["abc"] and cache.get("k") is first and calls == [b"abc"]
    entry = cache.get_entry("k")
    assert entry is not None and entry.value is first and entry.size == 3


def test_a_deferred_value_is_never_parsed_when_l1_is_off(clock: FakeClock) -> None:
    def load(payload: bytes) -> None:
        raise AssertionError("parsed")

    cache = make(clock, entries=0)
    assert not cache.set("k", DeferredValue(load, b"abc"), 3, 10)
    assert cache.get("k") is MISSING
