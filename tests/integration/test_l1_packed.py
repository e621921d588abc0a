"""L1 keeps what the codec compressed as the lz4 block and opens it per hit, so compression lowers the
memory L1 holds and ``l1.bytes`` (``memory_mb``, HighMemory, the diagnosis) shows it; values from the
offload threshold up, and values compression did not shrink, are kept decoded.

Real redis-server; the values are what the e2e memory scenarios store (64 KiB of prose, random
base64).
"""

from __future__ import annotations

import base64
import random
import tracemalloc
from typing import Any

import pytest

from cache_runtime.cache import TieredCache
from cache_runtime.config import CacheConfig, resolve_config
from cache_runtime.l1 import is_packed

pytestmark = pytest.mark.integration

PROSE = " ".join(f"the cache answered question {i} about tiered storage" for i in range(1300))  # ~64 KiB


def config(redis_url: str, threshold: int, **overrides: Any) -> CacheConfig:
    """ai-production with the given compression threshold and a roomy L1."""
    return resolve_config(
        "ai-production",
        {"compression.threshold_bytes": threshold, "l1.max_entries": 1000, "l1.max_bytes": 256 << 20,
         **overrides},
        redis_url=redis_url,
    )


async def fill(engine: TieredCache, values: dict[str, Any]) -> None:
    await engine.set_many(values, ttl=600)


async def test_compression_lowers_what_l1_counts_and_holds(redis_url: str) -> None:
    values = {f"doc-{i}": f"{i}: {PROSE}" for i in range(100)}
    async with TieredCache(config(redis_url, 100 << 20, **{"keys.namespace": "plain"})) as plain:
        await fill(plain, values)
        plain_bytes = plain.l1.bytes
        assert not any(is_packed(entry) for entry in plain.l1.entries.values())
    async with TieredCache(config(redis_url, 4096, **{"keys.namespace": "packed"})) as packed:
        await fill(packed, {"warm-up": PROSE})  # connections and first allocations, not L1's
        await packed.delete("warm-up")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await fill(packed, values)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert all(is_packed(entry) for entry in packed.l1.entries.values())
        assert packed.l1.bytes * 4 < plain_bytes  # prose compresses well; L1 holds the blocks
        assert held <= packed.l1.bytes * 1.2  # the figure is what the process holds
        for key, value in values.items():  # every hit opens the block: the same value, a fresh object
            first = await packed.get(key)
            assert first == value
        assert packed.stats()["requests"]["hits_l1"] >= len(values)


async def test_an_l2_hit_fills_l1_with_the_block_redis_holds(redis_url: str) -> None:
    values = {f"doc-{i}": {"text": PROSE, "n": i} for i in range(5)}
    settings = config(redis_url, 4096, **{"keys.namespace": "fill"})
    async with TieredCache(settings) as writer:
        await fill(writer, values)
    async with TieredCache(settings) as reader:
        for key, value in values.items():
            assert await reader.get(key) == value  # L2 hit, fills L1
        assert len(reader.l1) == len(values)
        assert all(is_packed(entry) for entry in reader.l1.entries.values())
        for key, value in values.items():
            got = await reader.get(key)
            assert got == value
            got["n"] = -1  # a caller's change to its copy does not reach the cache
            assert (await reader.get(key))["n"] == value["n"]
        assert reader.stats()["requests"]["hits_l1"] >= len(values) * 2


async def test_incompressible_and_small_values_stay_decoded(redis_url: str) -> None:
    rnd = random.Random(3)
    values = {f"blob-{i}": base64.b64encode(rnd.randbytes(48 * 1024)).decode() for i in range(3)}
    values["small"] = {"ok": True}
    async with TieredCache(config(redis_url, 1024, **{"keys.namespace": "incompressible"})) as engine:
        await fill(engine, values)
        kinds = {key: is_packed(engine.l1.get_entry(key)) for key in values}  # type: ignore[arg-type]
        # lz4 saves too little on base64 for the codec to keep the block, so Redis and L1 hold the
        # value as it is; the small value is below the threshold, never compressed.
        assert not any(kinds.values())
        for key, value in values.items():
            assert await engine.get(key) == value


async def test_values_from_the_offload_threshold_up_are_kept_decoded(redis_url: str) -> None:
    big = {"text": PROSE * 6}  # ~390 KiB, above the 256 KiB offload threshold
    async with TieredCache(config(redis_url, 4096, **{"keys.namespace": "big"})) as engine:
        await engine.set("big", big, ttl=600)
        assert not is_packed(engine.l1.get_entry("big"))  # type: ignore[arg-type]
        assert await engine.get("big") == big


async def test_the_budget_bounds_packed_entries_by_their_blocks(redis_url: str) -> None:
    values = {f"doc-{i}": f"{i}: {PROSE}" for i in range(40)}
    async with TieredCache(config(redis_url, 4096, **{"keys.namespace": "budget"})) as probe:
        await fill(probe, dict(list(values.items())[:1]))
        one = probe.l1.bytes
    budget = one * 10
    capped = config(redis_url, 4096, **{"keys.namespace": "budget2", "l1.max_bytes": budget})
    async with TieredCache(capped) as engine:
        await fill(engine, values)
        assert engine.l1.bytes <= budget
        assert 8 <= len(engine.l1) <= 10  # packed blocks, so ten fit where one decoded value would not
