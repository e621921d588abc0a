"""One behaviour suite of the Redis tier, run against every deployment it supports: standalone Redis,
Redis Cluster (three primaries) and Sentinel (a master behind a sentinel), through one parametrised
``l2`` fixture (the idea of cashews' and dogpile.cache's backend suites). What only one deployment
does (failover, slot routing, server-side counts) stays in test_l2_basic.py and
test_l2_deployments.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from cache_runtime.l2 import BreakerState, RedisL2, RedisSettings

pytestmark = pytest.mark.integration

DEPLOYMENTS = ("standalone", "cluster", "sentinel")
HANG_GUARD_S = 60


@pytest.fixture(scope="module")
def cluster_url(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Seed nodes of a 3-primary Redis Cluster, for this module (forming it takes about two seconds)."""
    from tests.integration.conftest import RedisFactory

    factory = RedisFactory(tmp_path_factory.mktemp("conformance-cluster"))
    try:
        nodes = factory.start_cluster(3)
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])
    finally:
        factory.close()


@pytest.fixture(scope="module")
def sentinel_url(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master watched by one sentinel, for this module."""
    from tests.integration.conftest import RedisFactory

    factory = RedisFactory(tmp_path_factory.mktemp("conformance-sentinel"))
    try:
        master = factory.start()
        sentinel = factory.start_sentinel(master, "mymaster")
        yield f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    finally:
        factory.close()


@pytest.fixture(params=DEPLOYMENTS)
async def l2(request: pytest.FixtureRequest) -> AsyncIterator[RedisL2]:
    """A started RedisL2 against each deployment in turn."""
    url = request.getfixturevalue({"standalone": "redis_url", "cluster": "cluster_url",
                                   "sentinel": "sentinel_url"}[request.param])
    backend = RedisL2(RedisSettings(url=url, max_connections=8))
    async with asyncio.timeout(HANG_GUARD_S):
        await backend.start()
    try:
        assert backend.stats()["deployment"] == request.param
        yield backend
    finally:
        await backend.close()


async def test_set_get_round_trip_of_arbitrary_bytes(l2: RedisL2) -> None:
    payload = bytes(range(256)) * 4
    assert await l2.set("cw:t:a", payload, ttl_ms=60_000) is True
    assert await l2.get("cw:t:a") == payload
    assert await l2.get("cw:t:missing") is None
    assert l2.breaker_state is BreakerState.CLOSED
    assert l2.stats()["errors_total"] == 0


async def test_mget_keeps_order_and_reports_missing_as_none(l2: RedisL2) -> None:
    await l2.set("cw:t:1", b"one", ttl_ms=60_000)
    await l2.set("cw:t:3", b"three", ttl_ms=60_000)
    assert await l2.mget(["cw:t:1", "cw:t:2", "cw:t:3", "cw:t:1"]) == [b"one", None, b"three", b"one"]
    assert await l2.mget([]) == []


async def test_invalid_ttl_is_a_programming_error(l2: RedisL2) -> None:
    for bad in (0, -5, 1.5, True, None):
        with pytest.raises(ValueError, match=r"ttl_ms: invalid value"):
            await l2.set("cw:t:x", b"x", ttl_ms=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ttl_ms: invalid value 0"):
        await l2.set_many([("cw:t:x", b"x", 0)])


async def test_a_cancelled_get_does_not_disturb_the_others_in_its_batch(l2: RedisL2) -> None:
    await l2.set("cw:c:k", b"v", ttl_ms=60_000)
    tasks = [asyncio.create_task(l2.get("cw:c:k")) for _ in range(20)]
    await asyncio.sleep(0)  # every task has started and joined the batch
    tasks[5].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[5], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 5] == [b"v"] * 19


async def test_publish_reaches_a_subscriber(l2: RedisL2) -> None:
    received: list[bytes] = []
    listener = l2.subscribe("cw:inval", received.append, lambda: None)
    assert await listener.wait_subscribed(5)
    assert await l2.publish("cw:inval", b"hello") is True
    for _ in range(200):
        if received:
            break
        await asyncio.sleep(0.01)
    assert received == [b"hello"]
