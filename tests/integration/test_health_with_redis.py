"""The health diagnosis fed by a real RedisL2 against a real, broken redis-server.

Checks the contract between RedisL2.stats()/memory_info() and the snapshot the diagnosis reads:
each Redis fault is told apart by the evidence RedisL2 actually records. Every loop is bounded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from cache_runtime.health import SymptomName, evaluate
from cache_runtime.l2 import RedisL2, RedisSettings
from cache_runtime.stats import EngineStats, build_snapshot

if TYPE_CHECKING:
    from tests.integration.conftest import RedisFactory

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30  # only so a regression fails instead of hanging


def fast_settings(url: str, **overrides: Any) -> RedisSettings:
    """Short timeouts and breaker window so each fault shows within a few calls."""
    values: dict[str, Any] = {
        "url": url,
        "connect_timeout_s": 0.5,
        "socket_timeout_s": 0.3,
        "pool_timeout_s": 0.5,
        "breaker_failure_threshold": 3,
        "breaker_open_seconds": 30.0,  # stays open while the test looks at it
        "max_connections": 4,
    }
    values.update(overrides)
    return RedisSettings(**values)


async def report_for(l2: RedisL2, *, memory: bool = False) -> Any:
    """Evaluate the snapshot the facade would build around this RedisL2."""
    stats = EngineStats()
    stats.hits_l1, stats.misses = 900, 100  # an unremarkable cache otherwise
    redis_memory = await l2.memory_info() if memory else None
    snapshot = build_snapshot(
        stats,
        l1={"entries": 10, "bytes": 1000, "max_entries": 1000, "max_bytes": 1 << 20},
        l2=l2.stats(),
        redis_memory=redis_memory,
        config={"hash": "test"},
    )
    return evaluate(snapshot)


async def test_wrong_password_is_diagnosed_as_authentication_failure(redis_factory: RedisFactory) -> None:
    server = redis_factory.start(password="the-right-one")
    settings = fast_settings(server.url, password="the-wrong-one")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        for index in range(5):
            await l2.get(f"cw:k{index}")
        report = await report_for(l2)
    assert report.symptom(SymptomName.REDIS_AUTH_FAILURE) is not None
    causes = report.causes_for(SymptomName.REDIS_AUTH_FAILURE)
    assert causes[0].name == "RedisAuthenticationFailure"
    assert "RedisUnreachable" not in [cause.name for cause in report.causes]
    assert "the-wrong-one" not in str(report.to_dict())


async def test_killed_redis_is_diagnosed_as_unreachable(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        assert await l2.set("cw:a", b"1", ttl_ms=60_000)
        server.stop()
        for index in range(10):  # bounded: the breaker opens after 3 failures
            await l2.get(f"cw:k{index}")
        report = await report_for(l2)
    symptom = report.symptom(SymptomName.REDIS_UNAVAILABLE)
    assert symptom is not None
    unreachable = report.causes_for(SymptomName.REDIS_UNAVAILABLE)[0]
    assert unreachable.name == "RedisUnreachable"
    assert unreachable.evidence["connection_errors"] + unreachable.evidence["timeout_errors"] >= 1
    assert unreachable.recommendations[0].action == "reconnect-redis"
    assert report.summary["redis"] == "unavailable"


async def test_full_redis_under_noeviction_is_diagnosed_with_its_policy(redis_factory: RedisFactory) -> None:
    server = redis_factory.start("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        chunk = b"x" * 64 * 1024
        for index in range(200):  # bounded: 2 MB is full after a few dozen
            if not await l2.set(f"cw:big:{index}", chunk, ttl_ms=60_000):
                break
        else:
            pytest.fail("Redis with maxmemory 2mb accepted 12.8 MB")
        report = await report_for(l2, memory=True)
    cause = report.causes_for(SymptomName.REDIS_OUT_OF_MEMORY)[0]
    assert cause.name == "RedisOutOfMemory"
    assert cause.evidence["maxmemory_policy"] == "noeviction"
    assert cause.evidence["maxmemory"] == 2 * 1024 * 1024
    assert "noeviction" in cause.summary
    # INFO's dataset figure tells keys from Redis's own overhead (here the keys fill most of it).
    dataset, overhead = cause.evidence["used_memory_dataset"], cause.evidence["overhead"]
    assert isinstance(dataset, int) and dataset > 1024 * 1024
    assert overhead == cause.evidence["used_memory"] - dataset and overhead > 0


def test_error_kinds_agree_with_redis_l2() -> None:
    from cache_runtime.l2.errors import ERROR_KINDS as L2_KINDS
    from cache_runtime.stats import ERROR_KINDS

    assert ERROR_KINDS == L2_KINDS
