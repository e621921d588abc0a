"""cache_runtime.sizing: L1's byte budget counts what its entries hold in memory.

The figure is checked against tracemalloc (what Python allocated for the values, keys and L1's
entries) for small, large, compressible, incompressible and number-heavy values: within +-20%,
the bound the engine promises for ``l1.max_bytes`` and ``memory_mb``.
"""

from __future__ import annotations

import base64
import gc
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from cache_runtime.l1 import DeferredValue, L1Cache
from cache_runtime.sizing import ENTRY_OVERHEAD, entry_size, retained_size
from tests.fakes import FakeClock

_PROSE = ("A cache keeps what was expensive to compute close to where it is needed again. " * 40)


def _value_mixes() -> dict[str, tuple[int, Callable[[int], Any]]]:
    rnd = random.Random(7)
    return {
        "small dicts": (1000, lambda i: {"id": i * 1000, "ok": True, "name": f"user-{i}"}),
        "ai response, 300 chars": (
            1000,
            lambda i: {"choices": [{"message": {"content": _PROSE[i % 50 :][:300]}}], "usage": {"total": i}},
        ),
        "large compressible text": (60, lambda i: {"content": (_PROSE * 20)[i:], "n": i}),
        "incompressible base64": (300, lambda i: {"blob": base64.b64encode(rnd.randbytes(8192)).decode()}),
        "numbers": (300, lambda i: {"v": [rnd.random() for _ in range(500)], "k": list(range(i, i + 300))}),
    }


@pytest.mark.parametrize("mix", list(_value_mixes()))
def test_the_budget_figure_is_within_20_percent_of_what_tracemalloc_sees(mix: str) -> None:
    count, make = _value_mixes()[mix]
    payloads = [orjson.dumps(make(i)) for i in range(count)]  # values enter L1 as the codec parses them
    l1 = L1Cache(count, 1 << 40, 0, clock=FakeClock(0.0))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, payload in enumerate(payloads):
            key = f"cw:ns:v0:key-{i:06d}"
            value = orjson.loads(payload)
            assert l1.set(key, value, entry_size(key, value), 3600.0)
            del key, value
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.8 <= l1.bytes / held <= 1.2, f"{mix}: counted {l1.bytes} B, tracemalloc {held} B"


def test_shared_objects_are_counted_once_and_singletons_not_at_all() -> None:
    text = "x" * 1000
    shared = [text, text, text]
    assert retained_size(shared) < retained_size([text, "y" * 1000, "z" * 1000])
    assert retained_size([None, True, False, 1, 2]) == retained_size([0, 0, 0, 0, 0])  # the list only
    assert retained_size(None) == 0 and retained_size(True) == 0 and retained_size(7) == 0
    assert retained_size("abc") > 0 and retained_size(10**30) > 0
    assert entry_size("k", None) > ENTRY_OVERHEAD


def test_a_deferred_entry_is_remeasured_when_it_is_parsed() -> None:
    def measure(key: str, value: Any) -> int:
        return entry_size(key, value)

    l1 = L1Cache(10, 1 << 30, 0, clock=FakeClock(0.0), measure=measure)
    payload = orjson.dumps({"v": list(range(1000, 3000))})  # ints take far more memory than text
    assert l1.set("k", DeferredValue(orjson.loads, payload), len(payload), 60)
    assert l1.bytes == len(payload)
    assert l1.get("k")["v"][0] == 1000
    parsed = entry_size("k", orjson.loads(payload))
    assert l1.bytes == parsed > 2 * len(payload)
    assert l1.get("k")["v"][-1] == 2999 and l1.bytes == parsed  # measured once


def test_a_parsed_deferred_entry_that_outgrows_the_budget_evicts_older_entries() -> None:
    l1 = L1Cache(10, 40_000, 0, clock=FakeClock(0.0), measure=entry_size)
    payload = orjson.dumps({"v": list(range(1000, 2000))})  # ~5 KB of JSON, ~36 KB parsed
    l1.set("old", "o" * 8000, entry_size("old", "o" * 8000), 60)
    l1.set("big", DeferredValue(orjson.loads, payload), len(payload), 60)
    assert "old" in l1 and l1.bytes < 40_000
    assert len(l1.get("big")["v"]) == 1000
    assert "old" not in l1 and "big" in l1 and l1.bytes <= 40_000
