"""RedisL2 under faults: Redis killed and restarted, a blackhole, a hung server, a full Redis, pool
exhaustion. Callers never see an exception; the breaker bounds how many calls reach a broken server;
recovery needs nobody's help. No timing asserts: counters tell what reached the network, and every
wait is a bounded loop (the asyncio.timeout guards only stop a hang from stalling the suite).
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import pytest

from cache_runtime.l2 import BreakerState, RedisL2
from tests.integration.l2_settings import fast_settings
from tests.waiting import eventually

if TYPE_CHECKING:
    from tests.integration.conftest import Blackhole, RedisFactory

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30  # far above any bound under test; only there so a regression fails instead of hanging




wait_until = functools.partial(eventually, timeout=10.0, interval=0.05)


async def test_redis_killed_then_restarted_recovers_by_itself(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        assert await l2.set("cw:k", b"before", ttl_ms=60_000)
        assert await l2.get("cw:k") == b"before"

        server.stop()  # SIGKILL: connections reset, then refused
        results = [await l2.get("cw:k") for _ in range(50)]
        assert results == [None] * 50
        stats = l2.stats()
        assert l2.breaker_state is BreakerState.OPEN
        assert not l2.available
        failures = stats["errors"]["connection"] + stats["errors"]["timeout"]
        # Only the calls that opened the breaker reached the dead server; the rest were short-circuited.
        assert failures == 3
        assert stats["short_circuited"] >= 47
        assert await l2.set("cw:k", b"x", ttl_ms=1000) is False
        assert await l2.mget(["a", "b"]) == [None, None]
        assert await l2.delete(["a"]) == 0
        assert await l2.scan_unlink("cw:*") == 0
        assert await l2.ping() is None
        assert await l2.memory_info() is None
        assert await l2.get_version("v") is None
        assert await l2.bump_version("v") is None
        assert await l2.acquire_lease("lease", 1000) is None
        assert await l2.release_lease("lease", "t") is False
        assert await l2.publish("ch", b"m") is False

        server.start()  # same port, empty dataset
        server.command("SET", "cw:k", "after")

        async def recovered() -> bool:
            return await l2.get("cw:k") == b"after"

        assert await wait_until(recovered), l2.stats()
        assert l2.breaker_state is BreakerState.CLOSED
        assert l2.available
        assert l2.stats()["breaker"]["probes_started"] >= 1


async def test_blackhole_opens_the_breaker_and_later_calls_do_not_touch_the_network(
    blackhole: Blackhole,
) -> None:
    settings = fast_settings(blackhole.url, breaker_open_seconds=30)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        for _ in range(3):
            # Each one ends at the 0.2 s read timeout; the 5 s guard only turns a hang into a failure.
            async with asyncio.timeout(5):
                assert await l2.get("cw:k") is None
        stats = l2.stats()
        assert stats["errors"]["timeout"] == 3
        assert l2.breaker_state is BreakerState.OPEN
        await asyncio.sleep(0.2)  # let the accept thread catch up with the kernel's backlog
        connections = len(blackhole.accepted)
        assert 1 <= connections <= 3

        results = await asyncio.gather(*(l2.get(f"cw:k{i}") for i in range(1_000)))
        assert results == [None] * 1_000
        assert await l2.set("cw:k", b"v", ttl_ms=1000) is False
        stats = l2.stats()
        assert stats["errors"]["timeout"] == 3  # nothing else waited on the blackhole
        assert stats["short_circuited"] >= 1_001
        assert len(blackhole.accepted) == connections  # no new connection attempt either
        assert "Timeout" in stats["last_errors"]["timeout"]["message"]


async def test_blackhole_half_open_probe_never_blocks_a_caller(blackhole: Blackhole) -> None:
    settings = fast_settings(blackhole.url, breaker_open_seconds=0.05)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        for _ in range(3):
            await l2.get("cw:k")
        assert l2.breaker_state is BreakerState.OPEN
        # Keep calling across several open windows: probes go out as background PINGs and time out,
        # while every caller is answered from the short-circuit.
        for _ in range(40):
            assert await l2.get("cw:k") is None
            await asyncio.sleep(0.02)
        stats = l2.stats()
        assert stats["breaker"]["probes_started"] >= 1
        assert stats["ops"]["probe"] >= 1
        assert stats["errors_by_op"]["probe"] >= 1  # probes did wait for the blackhole...
        assert stats["errors_by_op"]["get"] == 3  # ...callers only in the three calls that opened it
        assert stats["short_circuited"] >= 40


async def test_hung_server_sigstop_is_bounded_by_the_read_timeout(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(fast_settings(server.url, breaker_open_seconds=0.2)) as l2,
    ):
        assert await l2.set("cw:k", b"v", ttl_ms=60_000)
        server.pause()
        try:
            values = [await l2.get("cw:k") for _ in range(20)]
            assert values == [None] * 20
            assert l2.stats()["errors"]["timeout"] == 3
            assert l2.breaker_state is BreakerState.OPEN
        finally:
            server.resume()

        async def recovered() -> bool:
            return await l2.get("cw:k") == b"v"

        assert await wait_until(recovered)


async def test_redis_down_at_start_is_not_an_error(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    server.stop()
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        assert await l2.get("cw:k") is None
        assert l2.stats()["errors"]["connection"] == 1
        server.start()
        server.command("SET", "cw:k", "v")

        async def works() -> bool:
            return await l2.get("cw:k") == b"v"

        assert await wait_until(works)


async def test_oom_under_noeviction_fails_writes_but_keeps_reads(redis_factory: RedisFactory) -> None:
    # An empty redis-server already uses ~0.9 MB: 2 MB leaves room for a few values before it is full.
    server = redis_factory.start("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        assert await l2.set("cw:small", b"ok", ttl_ms=60_000)
        chunk = b"x" * 64 * 1024
        stored = 0
        for i in range(200):  # bounded: 1 MB is full after ~16 of them
            if not await l2.set(f"cw:big:{i}", chunk, ttl_ms=60_000):
                break
            stored += 1
        else:
            pytest.fail("Redis with maxmemory 2mb accepted 12.8 MB")
        assert await l2.set("cw:one-more", chunk, ttl_ms=60_000) is False
        assert await l2.set_many([(f"cw:m:{i}", chunk, 60_000) for i in range(5)]) is False
        stats = l2.stats()
        assert stats["errors"]["oom"] == 3  # per failed call, not per pipelined item
        assert "OOM" in stats["last_errors"]["oom"]["message"]
        # A full Redis still answers: the breaker stays closed and reads work.
        assert l2.breaker_state is BreakerState.CLOSED
        assert await l2.get("cw:small") == b"ok"
        info = await l2.memory_info()
        assert info is not None
        assert info["maxmemory"] == 2 * 1024 * 1024
        assert info["maxmemory_policy"] == "noeviction"
        assert info["used_memory_ratio"] is not None and info["used_memory_ratio"] > 0.5
        assert stored >= 1


async def test_pool_exhaustion_is_counted_and_does_not_open_the_breaker(redis_factory: RedisFactory) -> None:
    server = redis_factory.start()
    settings = fast_settings(server.url, max_connections=1, pool_timeout_s=0.05, socket_timeout_s=5)
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings) as l2:
        # Hold the only pooled connection with a blocking pop (through the same pool).
        blocker = asyncio.create_task(l2.client.blpop(["cw:never"], timeout=1))
        await asyncio.sleep(0.1)
        results = [await l2.set(f"cw:{i}", b"v", ttl_ms=1000) for i in range(5)]
        assert results == [False] * 5
        stats = l2.stats()
        assert stats["errors"]["pool"] == 5
        assert stats["pool"]["timeouts"] == 5
        assert stats["pool"]["waits"] >= 5
        assert l2.breaker_state is BreakerState.CLOSED
        await blocker
        assert await l2.set("cw:after", b"v", ttl_ms=1000) is True


async def test_reconnect_builds_new_connections_and_resets_the_breaker(redis_factory: RedisFactory) -> None:
    first = redis_factory.start()
    second = redis_factory.start()
    async with (
        asyncio.timeout(HANG_GUARD_S),
        RedisL2(fast_settings(first.url, breaker_open_seconds=60)) as l2,
    ):
        assert await l2.set("cw:k", b"one", ttl_ms=60_000)
        first.stop()
        for _ in range(3):
            await l2.get("cw:k")
        assert l2.breaker_state is BreakerState.OPEN
        first.start()
        await l2.reconnect()
        assert l2.breaker_state is BreakerState.CLOSED
        assert await l2.set("cw:k", b"again", ttl_ms=60_000)
        # reconnect() may also switch to new settings (a new Redis URL pushed by the operator).
        second.command("SET", "cw:k", "two")
        await l2.reconnect(fast_settings(second.url))
        assert await l2.get("cw:k") == b"two"
        assert l2.stats()["url"] == second.url


async def test_many_concurrent_callers_during_an_outage_get_nothing_without_exceptions(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory.start()
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(fast_settings(server.url)) as l2:
        await l2.set("cw:k", b"v", ttl_ms=60_000)
        server.stop()
        outcomes = await asyncio.gather(
            *(l2.get("cw:k") for _ in range(500)),
            *(l2.set(f"cw:s{i}", b"v", ttl_ms=1000) for i in range(100)),
            return_exceptions=True,
        )
        assert not [o for o in outcomes if isinstance(o, BaseException)]
        assert outcomes[:500] == [None] * 500
        assert outcomes[500:] == [False] * 100
        assert l2.breaker_state is BreakerState.OPEN
