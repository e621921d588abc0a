"""The L1-hit path of ``TieredCache.get`` counts every hit (bench B1 keeps one increment per hit).

While the engine runs on the real clock, ``get`` counts L1 hits in one cell and moves them into
``hits_l1`` and, with monitoring on, into the get latency histogram when the counters are read:
these tests check the figures a reader sees, across a monitoring switch and a direct read of
``engine_stats``.
"""

from __future__ import annotations

from typing import Any

import pytest

from cache_runtime.cache import TieredCache
from cache_runtime.config import CacheConfig, resolve_config

pytestmark = pytest.mark.integration


def config(redis_url: str, **overrides: Any) -> CacheConfig:
    """The bench's preset with overrides."""
    return resolve_config("ai-production", overrides, redis_url=redis_url)


async def test_every_l1_hit_is_counted_and_lands_in_the_latency_histogram(redis_url: str) -> None:
    async with TieredCache(config(redis_url, monitoring=True)) as engine:
        await engine.set("k", {"v": 1})
        before = engine.stats()
        for _ in range(25):
            assert await engine.get("k") == {"v": 1}
        after = engine.stats()
        assert after["requests"]["hits_l1"] - before["requests"]["hits_l1"] == 25
        assert after["latency"]["get"]["count"] - before["latency"]["get"]["count"] == 25
        assert await engine.get("absent") is None
        assert engine.stats()["requests"]["misses"] == after["requests"]["misses"] + 1


async def test_hits_counted_before_a_monitoring_switch_keep_their_own_setting(redis_url: str) -> None:
    async with TieredCache(config(redis_url, monitoring=False)) as engine:
        await engine.set("k", "v")
        for _ in range(10):
            assert await engine.get("k") == "v"
        # Switching monitoring on flushes the 10 hits counted without it: they stay out of the histogram.
        await engine.apply_config(config(redis_url, monitoring=True))
        for _ in range(4):
            assert await engine.get("k") == "v"
        snapshot = engine.stats()
        assert snapshot["requests"]["hits_l1"] == 14
        assert snapshot["latency"]["get"]["count"] == 4


async def test_engine_stats_reads_the_hits_without_a_snapshot(redis_url: str) -> None:
    async with TieredCache(config(redis_url)) as engine:
        await engine.set("k", 1)
        for _ in range(7):
            await engine.get("k")
        assert engine.engine_stats.hits_l1 == 7
