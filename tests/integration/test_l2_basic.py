"""RedisL2 against a real standalone redis-server: what the server itself shows (counts of commands,
TTLs, keys), limits and pools. The behaviour every deployment shares is test_l2_conformance.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from cache_runtime.l2 import RedisL2, RedisSettings

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import RedisFactory, RedisProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def l2(redis_url: str) -> AsyncIterator[RedisL2]:
    backend = RedisL2(RedisSettings(url=redis_url, max_connections=8))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def test_set_applies_the_ttl_in_milliseconds(l2: RedisL2, redis_server: RedisProcess) -> None:
    await l2.set("cw:t:ttl", b"x", ttl_ms=5_000)
    pttl = redis_server.command("PTTL", "cw:t:ttl")
    assert 0 < pttl <= 5_000


async def test_set_many_uses_pipelines_and_stores_everything(l2: RedisL2, redis_server: RedisProcess) -> None:
    items = [(f"cw:t:many:{i}", f"v{i}".encode(), 60_000) for i in range(2_500)]
    before = redis_server.command_calls("set")
    assert await l2.set_many(items) is True
    assert redis_server.command_calls("set") - before == 2_500
    values = await l2.mget([key for key, _, _ in items])
    assert values == [value for _, value, _ in items]
    assert await l2.set_many([]) is True


async def test_delete_counts_only_existing_keys(l2: RedisL2, redis_server: RedisProcess) -> None:
    await l2.set_many([(f"cw:t:d:{i}", b"x", 60_000) for i in range(1_200)])
    keys = [f"cw:t:d:{i}" for i in range(1_500)]  # 300 never existed
    assert await l2.delete(keys) == 1_200
    assert redis_server.command("DBSIZE") == 0
    assert redis_server.command_calls("unlink") >= 3  # unlink_batch=500: batches, not one giant command
    assert await l2.delete([]) == 0


async def test_scan_unlink_removes_exactly_the_matching_keys(l2: RedisL2, redis_server: RedisProcess) -> None:
    await l2.set_many([(f"cw:ns1:v1:{i}", b"x", 60_000) for i in range(5_000)])
    await l2.set_many([(f"cw:ns2:v1:{i}", b"y", 60_000) for i in range(700)])
    assert await l2.scan_unlink("cw:ns1:*") == 5_000
    assert redis_server.command("DBSIZE") == 700
    assert redis_server.command_calls("keys") == 0
    scans = redis_server.command_calls("scan")
    assert 1 <= scans <= 20  # COUNT 1000 over ~5.7k keys: a handful of round trips
    assert await l2.scan_unlink("cw:ns1:*") == 0


async def test_scan_unlink_refuses_patterns_outside_the_key_prefix(redis_url: str) -> None:
    async with RedisL2(RedisSettings(url=redis_url, key_prefix="cw")) as backend:
        with pytest.raises(ValueError, match=r"match: invalid value '\*'.*'cw:'"):
            await backend.scan_unlink("*")
        with pytest.raises(ValueError, match="non-empty glob"):
            await backend.scan_unlink("")
        assert await backend.scan_unlink("cw:nothing:*") == 0


async def test_namespace_versions_start_at_zero_and_increment(
    l2: RedisL2, redis_server: RedisProcess
) -> None:
    assert await l2.get_version("cw:nsver:summaries") == 0
    assert await l2.bump_version("cw:nsver:summaries") == 1
    assert await l2.bump_version("cw:nsver:summaries") == 2
    assert await l2.get_version("cw:nsver:summaries") == 2
    redis_server.command("SET", "cw:nsver:broken", "not-a-number")
    assert await l2.get_version("cw:nsver:broken") is None
    stats = l2.stats()
    assert stats["errors"]["data"] == 1
    assert "cw:nsver:broken" in stats["last_errors"]["data"]["message"]


async def test_lease_is_exclusive_and_released_only_by_its_holder(
    l2: RedisL2, redis_server: RedisProcess
) -> None:
    token = await l2.acquire_lease("cw:lease:k", ttl_ms=10_000)
    assert token is not None
    assert await l2.acquire_lease("cw:lease:k", ttl_ms=10_000) is None
    assert await l2.release_lease("cw:lease:k", "someone-else") is False
    assert redis_server.command("EXISTS", "cw:lease:k") == 1
    assert await l2.release_lease("cw:lease:k", token) is True
    assert redis_server.command("EXISTS", "cw:lease:k") == 0
    assert await l2.release_lease("cw:lease:k", token) is False
    # The script runs through EVALSHA (loaded once), not a fresh EVAL each time.
    assert redis_server.command_calls("evalsha") >= 2


async def test_ping_and_memory_info(l2: RedisL2) -> None:
    rtt = await l2.ping()
    assert rtt is not None and rtt > 0
    info = await l2.memory_info()
    assert info is not None
    assert info["used_memory"] > 0
    assert info["maxmemory_policy"] == "noeviction"
    assert info["maxmemory"] == 0
    assert info["evicted_keys"] == 0
    assert l2.stats()["rtt_seconds"]["last"] == rtt


async def test_concurrent_gets_in_one_tick_are_coalesced(l2: RedisL2, redis_server: RedisProcess) -> None:
    await l2.set_many([(f"cw:co:{i}", str(i).encode(), 60_000) for i in range(100)])
    gets_before = redis_server.command_calls("get")
    mgets_before = redis_server.command_calls("mget")
    keys = [f"cw:co:{i % 100}" for i in range(300)] + ["cw:co:missing"]
    values = await asyncio.gather(*(l2.get(key) for key in keys))
    assert values[:300] == [str(i % 100).encode() for i in range(300)]
    assert values[300] is None
    round_trips = (redis_server.command_calls("get") - gets_before) + (
        redis_server.command_calls("mget") - mgets_before
    )
    # 301 gets: the first goes straight out, the rest join one MGET of the distinct keys.
    assert round_trips <= 3
    stats = l2.stats()
    assert stats["coalesced_batches"] >= 1
    assert stats["coalesced_keys"] <= 101  # duplicates share one slot of the MGET


async def test_coalesced_batch_larger_than_the_limit_is_split(
    redis_url: str, redis_server: RedisProcess
) -> None:
    async with RedisL2(RedisSettings(url=redis_url, coalesce_max_keys=50)) as backend:
        await backend.set_many([(f"cw:big:{i}", b"v", 60_000) for i in range(400)])
        before = redis_server.command_calls("mget")
        values = await asyncio.gather(*(backend.get(f"cw:big:{i}") for i in range(400)))
        assert values == [b"v"] * 400
        assert redis_server.command_calls("mget") - before == 8  # 399 keys in MGETs of <= 50


async def test_stats_snapshot_shape(l2: RedisL2) -> None:
    await l2.get("cw:s:x")
    stats = l2.stats()
    assert stats["available"] is True
    assert stats["deployment"] == "standalone"
    assert stats["breaker"]["state"] == "closed"
    assert stats["ops"]["get"] == 1
    assert stats["pool"]["max_connections"] == 8
    assert set(stats["errors"]) >= {"timeout", "connection", "auth", "oom", "other"}


async def test_the_pool_never_opens_more_than_max_connections(
    redis_url: str, redis_server: RedisProcess
) -> None:
    async with RedisL2(
        RedisSettings(url=redis_url, max_connections=3, client_name="cw-pool-test")
    ) as backend:
        results = await asyncio.gather(*(backend.set(f"cw:p:{i}", b"v", ttl_ms=60_000) for i in range(300)))
        assert results == [True] * 300
        clients = redis_server.command("CLIENT", "LIST").decode()
        assert clients.count("name=cw-pool-test") == 3
        pool = backend.stats()["pool"]
        assert pool["in_use"] + pool["idle"] == 3
        assert pool["waits"] >= 1  # 300 concurrent callers queued for 3 connections...
        assert pool["timeouts"] == 0  # ...and none waited longer than pool_timeout_s


async def test_unix_socket(redis_factory: RedisFactory, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    redis_factory.start("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    async with RedisL2(RedisSettings(url=f"unix://{socket_path}?db=2")) as backend:
        assert await backend.set("cw:u", b"v", ttl_ms=60_000)
        assert await backend.get("cw:u") == b"v"
        assert backend.stats()["deployment"] == "unix"


@pytest.mark.parametrize("count", [1, 3, 300], ids=["one-script", "few-script", "many-pipelined"])
async def test_set_many_publishes_once_after_the_values_are_stored(
    l2: RedisL2, redis_server: RedisProcess, count: int
) -> None:
    seen_by_subscriber: list[tuple[bytes, list[bytes | None]]] = []
    reader = redis_server.client()

    def on_message(payload: bytes) -> None:
        # Read Redis the moment the message arrives: every value must already be there.
        seen_by_subscriber.append((payload, reader.mget([f"cw:p{i}" for i in range(count)])))

    listener = l2.subscribe("cw#coherence", on_message, lambda: None)
    assert await listener.wait_subscribed(5)
    items = [(f"cw:p{i}", f"v{i}".encode(), 60_000) for i in range(count)]
    assert await l2.set_many(items, publish=("cw#coherence", b"wrote"))
    for _ in range(200):
        if seen_by_subscriber:
            break
        await asyncio.sleep(0.01)
    assert [payload for payload, _ in seen_by_subscriber] == [b"wrote"]
    assert seen_by_subscriber[0][1] == [f"v{i}".encode() for i in range(count)]
    assert redis_server.command("PTTL", "cw:p0") > 59_000
    assert l2.stats()["errors_total"] == 0
    reader.close()
