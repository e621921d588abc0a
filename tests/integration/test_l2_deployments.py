"""RedisL2 against Sentinel and Redis Cluster deployments started by the test (real processes)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis

from cache_runtime.l2 import BreakerState, RedisL2, RedisSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.conftest import RedisFactory, RedisProcess

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60


def settings_for(url: str, **overrides: object) -> RedisSettings:
    values: dict[str, object] = {
        "url": url,
        "connect_timeout_s": 0.5,
        "socket_timeout_s": 0.5,
        "breaker_open_seconds": 0.2,
        "coherence_reconnect_min_s": 0.02,
        "coherence_reconnect_max_s": 0.2,
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cluster_nodes(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RedisProcess]]:
    """One 3-primary cluster for this module: forming it (gossip) takes about two seconds."""
    from tests.integration.conftest import RedisFactory

    factory = RedisFactory(tmp_path_factory.mktemp("cluster"))
    try:
        yield factory.start_cluster(3)
    finally:
        factory.close()


async def test_cluster_operations_span_slots_and_nodes(cluster_nodes: list[RedisProcess]) -> None:
    nodes = cluster_nodes
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url)) as l2:
        keys = [f"cw:c:{i}" for i in range(300)]
        assert await l2.set_many([(key, key.encode(), 60_000) for key in keys])
        per_node = [node.command("DBSIZE") for node in nodes]
        assert sum(per_node) == 300 and all(count > 0 for count in per_node)
        assert await l2.mget(keys) == [key.encode() for key in keys]
        assert await l2.get("cw:c:7") == b"cw:c:7"
        values = await asyncio.gather(*(l2.get(key) for key in keys))
        assert values == [key.encode() for key in keys]
        assert l2.stats()["coalesced_batches"] >= 1
        assert await l2.delete(keys[:100]) == 100
        assert await l2.scan_unlink("cw:c:*") == 200
        assert sum(node.command("DBSIZE") for node in nodes) == 0
        assert await l2.bump_version("cw:ver") == 1
        assert await l2.get_version("cw:ver") == 1
        token = await l2.acquire_lease("cw:lease", 5_000)
        assert token is not None
        assert await l2.release_lease("cw:lease", token)
        info = await l2.memory_info()
        assert info is not None and info["nodes"] == 3
        assert await l2.ping() is not None
        stats = l2.stats()
        assert stats["deployment"] == "cluster"
        assert stats["errors_total"] == 0, stats["last_errors"]


async def test_cluster_pubsub_reaches_a_listener_on_any_node(cluster_nodes: list[RedisProcess]) -> None:
    nodes = cluster_nodes
    url = f"redis://127.0.0.1:{nodes[0].port}"
    received: list[bytes] = []
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url, cluster=True)) as l2:
        listener = l2.subscribe("cw:inval", received.append, lambda: None)
        assert await listener.wait_subscribed(5)
        nodes[2].command("PUBLISH", "cw:inval", "from-node-3")  # cluster PUBLISH is broadcast
        assert await l2.publish("cw:inval", b"from-l2")
        for _ in range(200):
            if len(received) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted(received) == [b"from-l2", b"from-node-3"]


async def test_sentinel_discovers_the_master_and_follows_a_failover(redis_factory: RedisFactory) -> None:
    # No 5 s diskless-sync delay (the Redis 7 default) before the replica's first sync.
    master = redis_factory.start("--repl-diskless-sync-delay", "0")
    replica = redis_factory.start(
        "--replicaof", master.host, str(master.port), "--repl-diskless-sync-delay", "0"
    )
    sentinel = redis_factory.start_sentinel(master, "mymaster")
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    async with asyncio.timeout(HANG_GUARD_S), RedisL2(settings_for(url)) as l2:
        assert await l2.set("cw:k", b"v1", ttl_ms=60_000)
        assert master.command("GET", "cw:k") == b"v1"
        assert l2.stats()["deployment"] == "sentinel"
        # Wait (bounded) until Sentinel has discovered the replica, then fail over to it.
        for _ in range(200):
            replicas = sentinel.command("SENTINEL", "REPLICAS", "mymaster")
            if replicas:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("sentinel never saw the replica")
        for _ in range(200):
            if replica.command("INFO", "replication").get("master_link_status") == "up":
                break
            await asyncio.sleep(0.05)
        # Sentinel refuses (NOGOODSLAVE) until its own INFO of the replica shows a healthy link.
        for _ in range(300):
            try:
                if sentinel.command("SENTINEL", "FAILOVER", "mymaster"):
                    break
            except redis.ResponseError as refused:
                assert "NOGOODSLAVE" in str(refused)
            await asyncio.sleep(0.05)
        else:
            pytest.fail("sentinel never accepted the failover")
        for _ in range(400):
            address = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            if int(address[1]) == replica.port:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("failover did not happen")
        # Writes reach the new master by themselves. While the old master is being demoted, a write
        # may still land on it and be lost in its resync (Sentinel's usual window), or fail READONLY.
        for _ in range(400):
            if await l2.set("cw:k", b"v2", ttl_ms=60_000) and replica.command("GET", "cw:k") == b"v2":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"writes never reached the new master: {l2.stats()['last_errors']}")
        assert await l2.get("cw:k") == b"v2"
        assert l2.stats()["sentinel_failovers_seen"] == 1
        assert l2.breaker_state is BreakerState.CLOSED
